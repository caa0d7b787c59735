"""``cnn2gnn predict`` at scale (cnn2gnn/predict.py): files and folders searched recursively, batched reading whose
predictions equal those of each file alone (anchors policy), top-k rows in CSV and JSON lines, unreadable files
skipped with a warning, and the user mistakes (unknown output format, no bank, nothing to predict) as one line.

Models are tiny (digits, a resnet8 teacher of width 4 trained one epoch, students of width 32 trained one epoch).
"""

import csv
import json
from pathlib import Path

import pytest
import torch
from helpers import ONE_THREAD, run_cli
from PIL import Image

from cnn2gnn.checkpoint import load_model
from cnn2gnn.data import load_dataset
from cnn2gnn.errors import UserError
from cnn2gnn.predict import IMAGE_EXTENSIONS, csv_header, find_images, iter_batches, predict

CLASSES = [str(c) for c in range(10)]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A teacher, a student distilled from it with 50 anchors, the same-width MLP and a student without a bank."""
    root = tmp_path_factory.mktemp("predict")
    code, _, err = run_cli(
        "teacher", "--data", "digits", "--arch", "resnet8", "--epochs", 1, "--set", "model.width=4", *ONE_THREAD,
        "--out", root / "teacher",
    )  # fmt: skip
    assert code == 0, err
    students = {"student": ["bank.size=50"], "mlp": ["model.arch=mlp"], "no_bank": ["bank.size=0"]}
    for name, sets in students.items():
        code, _, err = run_cli(
            "distill", "--data", "digits", "--teacher", root / "teacher", "--epochs", 1, "--set", "model.hidden=32",
            *(a for s in sets for a in ("--set", s)), *ONE_THREAD, "--out", root / name,
        )  # fmt: skip
        assert code == 0, err
    return {name: root / name for name in ("teacher", *students)}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict[str, list[Path]]:
    """A folder of 7 digit images (one upper-case .PNG, one JPEG-named copy, two levels of subfolders), a text file
    and an unreadable .png; ``images`` lists the readable ones in the order a folder search gives them."""
    root = tmp_path_factory.mktemp("tree") / "images"
    digits = load_dataset("digits", limit_test=20).test.images
    names = ["a.png", "b.PNG", "sub/c.png", "sub/d.bmp", "sub/deeper/e.png", "sub/deeper/f.tif", "z.webp"]
    images = [root / n for n in names]
    for i, path in enumerate(images):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits[i, 0].numpy(), "L").save(path, format="WEBP" if path.suffix == ".webp" else None)
    (root / "notes.txt").write_text("not an image\n")
    broken = root / "sub" / "broken.png"
    broken.write_text("not an image either\n")
    (root / "empty" / "inner").mkdir(parents=True)
    return {"root": [root], "images": images, "broken": [broken]}


def one_line_error(code: int, out: str, err: str) -> str:
    assert code == 2 and out == "", (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnn2gnn predict: error: "), err
    return lines[0]


# ---------------------------------------------------------------------------------------------- library


def test_find_images_searches_folders_recursively_in_sorted_order(tree):
    root = tree["root"][0]
    files, warnings = find_images([root, root / "empty", root / "a.png", root / "missing.png"])
    found = sorted([*tree["images"], *tree["broken"]])
    assert files == [str(p) for p in found] + [str(root / "missing.png")]  # a.png once; missing.png read later
    assert warnings == [f"{root / 'empty'}: no image files in this folder (looked for {' '.join(IMAGE_EXTENSIONS)})"]
    with pytest.raises(UserError, match=r"^no image files to predict in .*empty \(looked for \.bmp"):
        find_images([root / "empty"])


def test_iter_batches_reads_one_batch_at_a_time(models, tree):
    _, meta = load_model(models["student"])
    files = [*tree["images"][:2], *tree["broken"], *tree["images"][2:]]
    batches = list(iter_batches(files, meta, 3))
    assert [len(good) for _, good, _ in batches] == [2, 3, 2]
    assert [x.shape for x, _, _ in batches] == [(2, 1, 8, 8), (3, 1, 8, 8), (2, 1, 8, 8)]
    assert batches[0][2] == [(str(tree["broken"][0]), batches[0][2][0][1])] and not batches[1][2]
    only_broken = list(iter_batches(tree["broken"], meta, 3))
    assert only_broken[0][0].shape == (0, 1, 8, 8) and only_broken[0][1] == []


# ---------------------------------------------------------------------------------------------- command line


@pytest.mark.slow
def test_folder_in_batches_equals_each_file_alone(models, tree, tmp_path):
    out = tmp_path / "p.jsonl"
    code, stdout, err = run_cli(
        "predict", "--model", models["student"], *tree["root"], "--batch-size", 3, "--top-k", 3, "--output", out,
        "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    assert stdout == f"7 images predicted, 1 skipped -> {out}\n"
    warnings = err.splitlines()  # the empty folder inside is not an argument: no warning for it
    assert len(warnings) == 1 and warnings[0].startswith(f"cnn2gnn predict: warning: {tree['broken'][0]}: not a "), err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == [str(p) for p in tree["images"]]  # sorted, the broken file left out

    for path, row in zip(tree["images"], rows, strict=True):
        code, alone, err = run_cli("predict", "--model", models["student"], path, "--top-k", 3, "--json")
        assert code == 0 and err == "", err
        (single,) = json.loads(alone)
        assert [c["class"] for c in single["top_k"]] == [c["class"] for c in row["top_k"]]
        for a, b in zip(single["top_k"], row["top_k"], strict=True):
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-6)

    # the library gives the same records, and a student's records match its anchors forward pass
    model, meta = load_model(models["student"])
    records, skipped = predict(model, meta, [*tree["images"], *tree["broken"]], batch_size=2, top_k=3)
    assert [s[0] for s in skipped] == [str(tree["broken"][0])]
    assert [r["index"] for r in records] == [r["index"] for r in rows]
    x = torch.cat([x for x, _, _ in iter_batches(tree["images"], meta, 256)])
    with torch.no_grad():
        probs = torch.softmax(model(x, graph="anchors"), dim=1)
    top = probs.topk(3, dim=1)
    assert [r["index"] for r in records] == top.indices[:, 0].tolist()
    torch.testing.assert_close(torch.tensor([[c["probability"] for c in r["top_k"]] for r in records]), top.values)


@pytest.mark.slow
def test_csv_has_sorted_top_k_columns(models, tree, tmp_path):
    out = tmp_path / "p.CSV"  # the extension in any case
    code, _, err = run_cli("predict", "--model", models["student"], *tree["root"], "--top-k", 3, "--output", out)
    assert code == 0, err
    with out.open(newline="") as f:
        reader = csv.reader(f)
        header, *rows = list(reader)
    assert header == ["path", "class", "probability", "class_2", "probability_2", "class_3", "probability_3"]
    assert header == csv_header(3)
    assert [r[0] for r in rows] == [str(p) for p in tree["images"]]
    for row in rows:
        classes, probs = row[1::2], [float(p) for p in row[2::2]]
        assert all(c in CLASSES for c in classes) and len(set(classes)) == 3
        assert probs == sorted(probs, reverse=True) and all(0.0 <= p <= 1.0 for p in probs)
        assert sum(probs) <= 1.0 + 1e-6

    code, text, err = run_cli("predict", "--model", models["student"], *tree["root"], "--top-k", 3)
    assert code == 0, err
    for line, row in zip(text.splitlines(), rows, strict=True):  # stdout: the same columns, tab-separated
        fields = line.split("\t")
        assert [fields[0], *fields[1::2]] == [row[0], *row[1::2]]  # path and classes
        assert [float(p) for p in fields[2::2]] == pytest.approx([float(p) for p in row[2::2]], abs=1e-4)


@pytest.mark.slow
def test_top_k_beyond_the_classes_gives_them_all(models, tree, tmp_path):
    out = tmp_path / "p.csv"
    code, _, err = run_cli("predict", "--model", models["student"], tree["images"][0], "--top-k", 50, "--output", out)
    assert code == 0, err
    header, row = list(csv.reader(out.open(newline="")))
    assert header == csv_header(10) and sorted(row[1::2]) == CLASSES
    assert sum(float(p) for p in row[2::2]) == pytest.approx(1.0, abs=1e-5)
    line = one_line_error(*run_cli("predict", "--model", models["student"], tree["images"][0], "--top-k", 0))
    assert "top-k must be at least 1, got 0" in line


@pytest.mark.slow
@pytest.mark.parametrize("model", ["teacher", "mlp"])
def test_teacher_and_mlp_predict_a_folder(models, tree, model):
    code, out, err = run_cli("predict", "--model", models[model], *tree["root"], "--batch-size", 4, "--quiet")
    assert code == 0 and len(err.splitlines()) == 1, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert [r[0] for r in rows] == [str(p) for p in tree["images"]]
    assert all(len(r) == 3 and r[1] in CLASSES and 0.0 <= float(r[2]) <= 1.0 for r in rows)


@pytest.mark.slow
def test_nothing_to_predict_and_empty_folders(models, tree):
    root = tree["root"][0]
    line = one_line_error(*run_cli("predict", "--model", models["student"], root / "empty"))
    assert f"no image files to predict in {root / 'empty'} " in line
    code, out, err = run_cli("predict", "--model", models["student"], root / "empty", tree["images"][0])
    assert code == 0 and len(out.splitlines()) == 1, err
    assert err == f"cnn2gnn predict: warning: {root / 'empty'}: no image files in this folder (looked for " + (
        f"{' '.join(IMAGE_EXTENSIONS)})\n"
    )
    line = one_line_error(*run_cli("predict", "--model", models["student"], *tree["broken"]))
    assert str(tree["broken"][0]) in line and "not a readable image" in line


@pytest.mark.slow
@pytest.mark.parametrize(
    ("output", "message"),
    [("p.json", "unknown format '.json' (use FILE.csv or FILE.jsonl)"), ("no/such/p.csv", "does not exist")],
)
def test_output_that_cannot_be_written_fails_before_anything_runs(tree, tmp_path, output, message):
    out = tmp_path / output
    line = one_line_error(*run_cli("predict", "--model", tmp_path / "no-model", *tree["root"], "--output", out))
    assert line.startswith(f"cnn2gnn predict: error: --output {out}: ") and message in line  # not the model's error
    assert not out.exists()


@pytest.mark.slow
def test_student_without_a_bank_and_unknown_device_are_one_line(models, tree):
    line = one_line_error(*run_cli("predict", "--model", models["no_bank"], *tree["root"]))
    assert "no anchor bank" in line and "bank.size" in line
    line = one_line_error(*run_cli("predict", "--model", models["student"], *tree["root"], "--device", "cuda:99"))
    assert "cuda:99" in line
