"""Bring your own teacher (issue 13): a torchvision or timm classifier saved with ``torch.save(model.state_dict())``
becomes a teacher folder (``teacher --arch torchvision:NAME --weights FILE --epochs 0``), a 16x16 student is distilled
from it on a 64x64 RGB ImageFolder, evaluated, run over a folder by ``predict``, exported to ONNX, and ONNX Runtime
gives predict's classes. Plus the pieces: heads replaced, weights files checked, the input adapter's arithmetic."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ONE_THREAD, run_cli
from PIL import Image

from cnn2gnn.checkpoint import load_model
from cnn2gnn.errors import CheckpointError, UserError
from cnn2gnn.models.cnn import create_teacher
from cnn2gnn.models.ecosystem import IMAGENET_MEAN, IMAGENET_STD, InputAdapter, read_state_dict


def _image_folder(root: Path, per_class: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for c in range(4):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 90, (64, 64, 3), dtype=np.uint8)
                pixels[..., c % 3] += np.uint8(40 + 40 * (c // 3))
                Image.fromarray(pixels).save(root / split / f"class{c}" / f"{i}.png")


@pytest.fixture(scope="module")
def pets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("byot") / "pets"
    _image_folder(root, {"train": 8, "test": 3})
    return root


def _state_dict_file(arch: str, path: Path) -> Path:
    torch.manual_seed(0)
    library, _, name = arch.partition(":")
    if library == "torchvision":
        import torchvision

        net = torchvision.models.get_model(name, weights=None, num_classes=4)
    else:
        timm = pytest.importorskip("timm")
        net = timm.create_model(name, pretrained=False, num_classes=4)
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["torchvision:resnet18", "timm:resnet18"])
def test_your_teacher_to_an_exported_student(pets, tmp_path, arch):
    ort = pytest.importorskip("onnxruntime")
    weights = _state_dict_file(arch, tmp_path / "weights.pth")
    data = ["--data", "imagefolder", "--data-root", pets, *ONE_THREAD, "--quiet"]
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    code, text, err = run_cli("teacher", *data, "--arch", arch, "--weights", weights, "--epochs", 0, "--out", teacher)
    assert code == 0, err
    meta = json.loads((teacher / "meta.json").read_text())
    assert meta["arch"] == arch and meta["input_size"] == 224 and meta["input_norm"] == "imagenet"
    summary = json.loads((teacher / "summary.json").read_text())
    assert summary["epochs"] == 0 and 0 <= summary["test_acc"] <= 1
    # the wrapped teacher computes what the user's network computes on its own input
    model, _ = load_model(teacher)
    net = model.net
    x = torch.rand(2, 3, 64, 64)
    normalised = (x - torch.tensor(meta["mean"]).view(1, 3, 1, 1)) / torch.tensor(meta["std"]).view(1, 3, 1, 1)
    own = torch.nn.functional.interpolate(x, size=224, mode="bilinear", antialias=True, align_corners=False)
    own = (own - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(normalised), net(own), atol=1e-4, rtol=1e-4)

    code, _, err = run_cli("distill", *data, "--teacher", teacher, "--image-size", 16, "--epochs", 2, "--hidden", 64,
                           "--set", "bank.size=24", "--out", student)  # fmt: skip
    assert code == 0, err
    assert json.loads((student / "meta.json").read_text())["image_size"] == [16, 16]
    code, text, err = run_cli("evaluate", "--model", student, "--json")  # the model's own data root and size
    assert code == 0, err
    assert json.loads(text)["n"] == 12
    preds = tmp_path / "preds.csv"
    code, _, err = run_cli("predict", "--model", student, pets / "test", "--output", preds, "--quiet")
    assert code == 0, err
    rows = list(csv.DictReader(preds.open()))
    assert len(rows) == 12
    onnx = tmp_path / "student.onnx"
    code, _, err = run_cli("export", "--model", student, "--format", "onnx", "--out", onnx)
    assert code == 0, err
    classes = json.loads(onnx.with_suffix(".json").read_text())["classes"]
    session = ort.InferenceSession(str(onnx))
    for row in rows:
        with Image.open(row["path"]) as img:
            pixels = np.asarray(img.convert("RGB").resize((16, 16), Image.BILINEAR), dtype=np.float32) / 255.0
        logits = session.run(None, {"images": pixels.transpose(2, 0, 1)[None]})[0]
        assert classes[int(logits.argmax())] == row["class"], row["path"]


def test_a_head_of_another_class_count_is_replaced_and_said(tmp_path):
    import torchvision

    path = tmp_path / "imagenet_like.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    model = create_teacher(
        "torchvision:resnet18", 4, 3, 32, weights=str(path), data_mean=(0.5,) * 3, data_std=(0.2,) * 3
    )
    assert model.head_loaded is False and model.net.fc.out_features == 4
    body = read_state_dict(path)["layer1.0.conv1.weight"]
    assert torch.equal(model.net.layer1[0].conv1.weight, body)  # the body is the file's
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.net.state_dict().items()}}, tmp_path / "ckpt.pt")
    again = create_teacher("torchvision:resnet18", 4, 3, 32, weights=str(tmp_path / "ckpt.pt"))
    assert again.head_loaded is True and torch.equal(again.net.fc.weight, model.net.fc.weight)


def test_weights_of_another_architecture_or_not_weights_are_one_line_errors(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet34(num_classes=4).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(CheckpointError, match="r34.pth: weights do not match"):
        create_teacher("torchvision:resnet18", 4, 3, 32, weights=str(tmp_path / "r34.pth"))
    torch.save({"net": lambda: None}.__class__, tmp_path / "code.pth")  # a pickled class: refused by weights_only
    with pytest.raises(CheckpointError, match="code.pth: not a readable weights file"):
        read_state_dict(tmp_path / "code.pth")
    with pytest.raises(UserError, match="unknown torchvision classification model 'resnet9000'"):
        create_teacher("torchvision:resnet9000", 4, 3, 32)
    with pytest.raises(UserError, match="are for torchvision:/timm: teachers"):
        create_teacher("resnet8", 4, 3, 32, input_size=64)


def test_the_input_adapter_undoes_the_data_normalisation_and_applies_the_networks():
    adapter = InputAdapter((0.5,), (0.25,), IMAGENET_MEAN, IMAGENET_STD, size=None)
    pixels = torch.rand(2, 1, 8, 8)
    out = adapter((pixels - 0.5) / 0.25)
    assert out.shape == (2, 3, 8, 8)  # grey repeated for an RGB network
    for c in range(3):
        torch.testing.assert_close(out[:, c], (pixels[:, 0] - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
    assert InputAdapter((0.5,), (0.25,), (0.5,), (0.25,), size=16)(pixels).shape == (2, 1, 16, 16)
