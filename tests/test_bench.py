"""Tests of the benchmark (docs/method.md s. 6-7): the presets (shipped YAML files, a user's file, errors naming the
key), the plan (every baseline, the same seeds, sweep points equal to the default trained once), the config hash,
the report and figures rendered from a stored results.json, and the whole ``cnn2gnn bench --preset tiny`` pipeline on
digits: the files it writes, a row per model with mean/std over the seeds, provenance, and reuse on a second call.
"""

import dataclasses
import json
import re
import shutil
import time
from pathlib import Path

import pytest
import torch

from cnn2gnn import cli
from cnn2gnn.bench import (
    METHOD,
    PRESETS,
    STUDENTS,
    Preset,
    Sweep,
    Teacher,
    config_hash,
    figures,
    load_preset,
    plan,
    preset_names,
    report,
)
from cnn2gnn.config import StudentConfig, build_config
from cnn2gnn.errors import ConfigError, UserError
from cnn2gnn.evaluate import images_per_second_together

FIXTURES = Path(__file__).parent / "fixtures" / "bench"

# ------------------------------------------------------------------------------------------- presets


def test_presets_are_the_shipped_yaml_files_frozen_and_hashable():
    assert preset_names() == ["full", "long", "quick", "regimes", "tiny"]
    assert list(PRESETS) == preset_names()
    for name, preset in PRESETS.items():
        assert preset == load_preset(name)
        assert isinstance(preset.seeds, tuple) and isinstance(preset.teachers[0].overrides, tuple), name
        assert all(isinstance(sw.values, tuple) for sw in preset.sweeps), name
        hash(preset)
    tiny = PRESETS["tiny"]
    assert tiny.teachers == (Teacher("resnet8", 2), Teacher("resnet20", 1))
    assert tiny.student_set == ("model.hidden=32", "bank.size=50") and tiny.speed_seconds == 0.02
    # `base:` chains: full is quick plus sweeps, long is full with longer schedules and 3 teacher seeds
    quick, full, long = PRESETS["quick"], PRESETS["full"], PRESETS["long"]
    assert (full.teachers, full.student_epochs, full.seeds) == (quick.teachers, quick.student_epochs, quick.seeds)
    assert long.sweeps == full.sweeps and long.test_k == full.test_k and long.teacher_seeds == (0, 1, 2)
    assert long.teachers == (Teacher("resnet8", 15), Teacher("resnet20", 30)) and long.student_epochs == 30
    # YAML numbers keep their type: k=3 names the row k-3, T=1.0 the row T-1.0
    k, temperature = (next(s for s in full.sweeps if s.name == n) for n in ("k", "T"))
    assert [type(v) for v in k.values] == [int] * 5 and [type(v) for v in temperature.values] == [float] * 4
    assert next(s for s in full.sweeps if s.name == "selfloop").base == ("model.aggregate=gcn",)


def test_user_preset_file_with_a_base(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: tiny\nseeds: [0]\nteachers:\n  - {arch: resnet8, epochs: 1}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("base: ../mine.yaml\nshuffles: 1\n")
    mine = load_preset(tmp_path / "mine.yaml")
    assert mine == dataclasses.replace(PRESETS["tiny"], seeds=(0,), teachers=(Teacher("resnet8", 1),))
    assert load_preset(str(tmp_path / "sub" / "child.yaml")) == dataclasses.replace(mine, shuffles=1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base: tiny\nepochs: 3\n", "unknown config key 'epochs'"),
        ("base: tiny\nteachers: [{arch: resnet8, epochs: two}]\n", "'teachers[0].epochs': expected int"),
        ("base: tiny\nsweeps: [{name: k, key: model.k, values: [[3]], title: k}]\n", "'sweeps[0].values[0]'"),
        ("student_epochs: 1\nseeds: [0]\n", "missing config key 'teachers'"),
        ("base: me.yaml\n", "'base' leads back to itself"),
        ("base: [tiny]\n", "'base' must be a preset name or file"),
    ],
)
def test_preset_file_errors_name_the_key_and_the_file(tmp_path, text, message):
    path = tmp_path / "me.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="preset .*me.yaml") as err:
        load_preset(path)
    assert message in str(err.value)


def test_unknown_preset_name_lists_the_known_ones():
    with pytest.raises(UserError, match=r"unknown preset 'huge' \(known: full, long, quick, regimes, tiny; or a path"):
        load_preset("huge")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_preset("no-such-file.yaml")


# ------------------------------------------------------------------------------------------- plan and hash


def test_plan_has_every_row_for_every_seed_and_teachers_first():
    preset = PRESETS["quick"]
    jobs = plan(preset)
    teachers = [j for j in jobs if j.kind == "teacher"]
    assert jobs[: len(teachers)] == teachers
    assert {j.name for j in teachers} == {"teacher-resnet8", "teacher-resnet20"}
    for name, (_, overrides, kd) in STUDENTS.items():
        seeds = sorted(j.seed for j in jobs if j.name == name)
        assert seeds == sorted(preset.seeds), name
        job = next(j for j in jobs if j.name == name)
        assert job.teacher == ("teacher-resnet8" if kd else None)
        assert all(o in job.overrides for o in overrides)
    pixels = next(j for j in jobs if j.name == "gnn-pixels-kd")
    assert {"model.graph_space=pixels", "model.detach_graph=true"} <= set(pixels.overrides)


def test_sweep_point_equal_to_the_default_is_the_method_row():
    preset = Preset(
        teachers=(Teacher("resnet8", 1),),
        student_epochs=1,
        seeds=(0,),
        sweeps=(Sweep("k", "model.k", (5, 10), "k"), Sweep("space", "model.graph_space", ("proj", "head"), "space")),
    )
    names = [j.name for j in plan(preset)]
    assert "k-5" in names and "space-proj" in names
    assert "k-10" not in names and "space-head" not in names  # k=10 and head are the defaults: the cnn2gnn row
    assert names.count(METHOD) == 1
    assert len(names) == len(set(names))


def test_full_preset_covers_the_issue_sweeps():
    for preset in PRESETS.values():
        names = [(j.name, j.seed) for j in plan(preset)]
        assert len(names) == len(set(names))
    keys = {s.key for s in PRESETS["full"].sweeps}
    assert keys >= {
        "model.k",
        "distill.temperature",
        "distill.alpha",
        "optim.batch_size",
        "model.graph_space",
        "model.detach_graph",
        "model.self_loop",
    }
    assert min(len(PRESETS[p].seeds) for p in ("quick", "full")) >= 3


def test_full_preset_reuses_every_quick_run():
    # same budgets, so a full bench in a quick bench's folder retrains none of quick's runs
    full = {(j.name, j.overrides, j.seed, j.teacher) for j in plan(PRESETS["full"])}
    assert {(j.name, j.overrides, j.seed, j.teacher) for j in plan(PRESETS["quick"])} <= full


def test_config_hash_ignores_progress_and_root_but_not_settings_or_data():
    a = build_config(StudentConfig, overrides=["run.progress=false", "data.root=/a"])
    b = build_config(StudentConfig, overrides=["run.progress=true", "data.root=/b", "run.threads=1"])
    c = build_config(StudentConfig, overrides=["model.k=5"])
    assert config_hash(a, "fp") == config_hash(b, "fp")
    assert config_hash(a, "fp") != config_hash(c, "fp")
    assert config_hash(a, "fp") != config_hash(a, "other-data")
    t1 = build_config(StudentConfig, overrides=["distill.teacher=/x/runs/teacher-resnet8-abc-s0"])
    t2 = build_config(StudentConfig, overrides=["distill.teacher=/y/runs/teacher-resnet8-abc-s0"])
    t3 = build_config(StudentConfig, overrides=["distill.teacher=/x/runs/teacher-resnet8-def-s0"])
    assert config_hash(t1, "fp") == config_hash(t2, "fp") != config_hash(t3, "fp")


# ------------------------------------------------------------------------------------------- report from results.json


@pytest.fixture
def stored_results():
    """results.json of a real `cnn2gnn bench --data digits --preset tiny` run (nothing is trained here)."""
    return json.loads((FIXTURES / "results.json").read_text())


def test_report_renders_from_stored_results(stored_results):
    text = report(stored_results)
    lines = text.splitlines()
    assert lines[0] == "# cnn2gnn bench: digits, preset `tiny`, every label, clean"
    assert "- command: `cnn2gnn bench --data digits --preset tiny --out /tmp/benchtiny --threads 1`" in lines
    assert "- every student distils the same teacher: teacher-resnet8 seed 0" in lines
    rows = stored_results["rows"]
    # one table row per (model, policy), mean +- std in %, parameters with the bank under the anchors policy
    acc = rows[METHOD]["policies"]["anchors"]["test_acc"]
    row = next(line for line in lines if line.startswith("| CNN2GNN: learned graph + KD | anchors | 2 |"))
    assert f"| {100 * acc['mean']:.2f} +- {100 * acc['std']:.2f} |" in row and "| 8,874 + bank 50 |" in row
    table = [line for line in lines if re.match(r"\| [^|]+ \| (none|batch|anchors) \| \d+ \|", line)]
    assert len(table) == 2 + 2 + 3 * 2  # 2 teachers, 2 MLPs (none), 3 graph students under batch and anchors
    teacher = rows["teacher-resnet8"]["policies"]["none"]["test_acc"]["mean"]
    assert f"| within 1.0 point of the teacher | {100 * (acc['mean'] - teacher):+.2f} points |" in text
    assert "| 3 | " in text and "| k-3 |" in text and "| cnn2gnn |" in text  # the k sweep's two points
    for heading in ("Budgets", "Against the targets", "Test batch size", "k at test time", "The learned graph"):
        assert f"## {heading}" in text
    assert "nan" not in text.lower()


def test_figures_render_from_stored_results(stored_results, tmp_path):
    names = figures(stored_results, tmp_path)
    # the neighbour picture needs the model; every other figure of the run is drawn from the results alone
    assert set(names) == set(stored_results["figures"]) - {"neighbours"}
    for name in names.values():
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


# ------------------------------------------------------------------------------------------- the whole pipeline

ARGS = ["bench", "--data", "digits", "--preset", "tiny", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def bench_runs(tmp_path_factory):
    """Two calls of `cnn2gnn bench --preset tiny` into the same folder: the second must reuse every run."""
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        assert cli.main([*ARGS, "--out", str(out)]) == 0
        first = time.perf_counter() - t0
        results1 = json.loads((out / "results.json").read_text())
        t0 = time.perf_counter()
        assert cli.main([*ARGS, "--out", str(out)]) == 0
        second = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    results2 = json.loads((out / "results.json").read_text())
    return out, results1, results2, first, second


@pytest.mark.slow
def test_bench_writes_report_results_and_plots(bench_runs):
    out, results, _, first, _ = bench_runs
    assert (out / "report.md").is_file()
    assert set(results["figures"]) >= {"curves", "cost", "test_batch_size", "test_k", "homophily", "neighbours"}
    for name in results["figures"].values():
        png = out / name
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert (out / "sweep_k.png").is_file()
    assert first < 120, f"tiny preset took {first:.0f}s"


@pytest.mark.slow
def test_results_have_every_row_with_mean_and_std_over_seeds(bench_runs):
    _, results, _, _, _ = bench_runs
    preset = PRESETS["tiny"]
    rows = results["rows"]
    assert {"teacher-resnet8", "teacher-resnet20", *STUDENTS} <= set(rows)
    for name in STUDENTS:
        r = rows[name]
        assert r["seeds"] == list(preset.seeds), name
        expected = {"none"} if name.startswith("mlp") else {"batch", "anchors"}
        assert set(r["policies"]) == expected, name
        for entry in r["policies"].values():
            acc = entry["test_acc"]
            assert acc["n"] == len(preset.seeds) and len(acc["values"]) == acc["n"]
            assert 0.0 <= acc["mean"] <= 1.0 and acc["std"] >= 0.0
            assert entry["flops_per_image"] > 0
            assert entry["images_per_s"]["1"] > 0 and entry["images_per_s"]["256"] > 0
        assert r["parameters"] > 0 and r["seconds_per_epoch"]["mean"] > 0
        assert len(r["curve_val"]) == preset.student_epochs
        assert r["saved_epoch"]["values"] == r["best_epoch"]["values"]  # run.keep=best: the best-val epoch is saved
    for name in ("teacher-resnet8", "teacher-resnet20"):
        assert set(rows[name]["policies"]) == {"none"}
    # the graph adds cost: the batch-policy GNN counts more FLOPs than the same-width MLP
    gnn = rows[METHOD]["policies"]["batch"]["flops_per_image"]
    assert gnn > rows["mlp-ce"]["policies"]["none"]["flops_per_image"]
    # every student row distils the same teacher run
    assert {rows[n]["teacher"] for n in ("mlp-kd", "gnn-pixels-kd", METHOD)} == {"teacher-resnet8"}
    assert set(results["test_batch_size"]) == {str(b) for b in preset.test_batch_sizes}
    assert set(results["test_k"]) == {str(k) for k in preset.test_k}
    hom = results["graph"]["homophily"][METHOD]
    assert len(hom["per_class"]) == 10 and 0.0 <= hom["mean"] <= 1.0
    assert [p["row"] for p in results["sweeps"]["k"]["points"]] == ["k-3", METHOD]


@pytest.mark.slow
def test_report_states_command_machine_and_versions(bench_runs):
    out, _, results, _, _ = bench_runs  # report.md is that of the second call
    text = (out / "report.md").read_text()
    assert f"cnn2gnn bench --data digits --preset tiny --out {out} --threads 1" in text
    assert results["command"].startswith("cnn2gnn bench --data digits --preset tiny")
    assert f"torch {torch.__version__}" in text and "matplotlib" in text and "numpy" in text
    assert "torch threads 1" in text
    assert "cores" in text and "load average" in text and results["date"] in text
    for name in STUDENTS:
        assert results["rows"][name]["label"] in text


@pytest.mark.slow
def test_report_measures_the_targets(bench_runs):
    out, _, results, _, _ = bench_runs
    text = (out / "report.md").read_text()
    assert "## Against the targets" in text
    rows = results["rows"]
    student = 100 * rows["cnn2gnn"]["policies"]["anchors"]["test_acc"]["mean"]
    teacher = 100 * rows["teacher-resnet8"]["policies"]["none"]["test_acc"]["mean"]
    assert f"| within 1.0 point of the teacher | {student - teacher:+.2f} points |" in text


@pytest.mark.slow
def test_second_call_reuses_every_run(bench_runs):
    _, results1, results2, first, second = bench_runs
    assert results1["trained"] == len(results1["jobs"]) and results1["reused"] == 0
    assert results2["trained"] == 0 and results2["reused"] == len(results2["jobs"])
    assert [j["folder"] for j in results1["jobs"]] == [j["folder"] for j in results2["jobs"]]
    assert results2["seconds"]["train"] < results1["seconds"]["train"]
    # the cost of the preset from scratch is stated even when every run was reused
    assert results2["runs_train_seconds"] == results1["runs_train_seconds"] > 0
    # the same runs give the same accuracies
    acc = lambda r: r["rows"][METHOD]["policies"]["anchors"]["test_acc"]["values"]  # noqa: E731
    assert acc(results1) == acc(results2)


@pytest.mark.slow
def test_interrupted_run_is_completed_and_the_rest_reused(bench_runs, tmp_path):
    out, results, _, _, _ = bench_runs
    copy = tmp_path / "bench"
    shutil.copytree(out, copy)
    job = next(j for j in results["jobs"] if j["name"] == METHOD and j["seed"] == 1)
    (copy / job["folder"] / "summary.json").unlink()  # as if killed after its last checkpoint
    threads = torch.get_num_threads()
    try:
        assert cli.main([*ARGS, "--out", str(copy)]) == 0
    finally:
        torch.set_num_threads(threads)
    again = json.loads((copy / "results.json").read_text())
    assert [(j["name"], j["seed"]) for j in again["jobs"] if not j["reused"]] == [(METHOD, 1)]
    assert (copy / job["folder"] / "summary.json").is_file()


def test_unknown_preset_is_a_user_error(capsys, tmp_path):
    # a one-line error naming the known presets before anything is loaded or written (was argparse's choices)
    out = tmp_path / "out"
    assert cli.main(["bench", "--data", "digits", "--preset", "huge", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown preset 'huge' (known: full, long, quick, regimes, tiny" in err
    assert not out.exists()


def test_bench_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for word in ("--preset", "--out", "--data", "reused", "tiny", "quick", "full", "long", "FILE.yaml", "base: quick"):
        assert word in text


def test_a_preset_may_train_only_some_baseline_rows(tmp_path):
    path = tmp_path / "lean.yaml"
    path.write_text("base: tiny\nstudents: [mlp-kd]\nsweeps: []\n")
    names = {job.name for job in plan(load_preset(path))}
    assert names == {"teacher-resnet8", "teacher-resnet20", "mlp-kd", METHOD}  # the method itself always
    path.write_text("base: tiny\nstudents: [mlp-xx]\n")
    with pytest.raises(UserError, match="unknown student row 'mlp-xx'"):
        plan(load_preset(path))


def test_speeds_are_timed_together_in_interleaved_rounds():
    calls = []

    def model(tag):
        def fn(x):
            calls.append((tag, len(x)))
            return x

        return fn

    example = torch.zeros(3, 1, 4, 4)
    speeds = images_per_second_together([model("a"), model("b")], [example, example], 5, min_seconds=0.0, repeats=3)
    assert len(speeds) == 2 and all(s > 0 for s in speeds)
    assert {n for _, n in calls} == {5}  # batches of the asked size, drawn from the example
    runs = [tag for i, (tag, _) in enumerate(calls) if i == 0 or calls[i - 1][0] != tag]
    assert runs == ["a", "b"] + ["a", "b"] * 3  # the warm-ups, then each round times every model in turn


def test_without_a_cap_every_model_is_timed_for_the_same_seconds(monkeypatch):
    import cnn2gnn.evaluate as evaluate

    clock, calls = [0.0], []

    def model(tag, cost):
        def fn(x):
            clock[0] += cost  # a fake clock: model "a" takes 1 s a call, "b" 10 s
            calls.append(tag)
            return x

        return fn

    monkeypatch.setattr(evaluate.time, "perf_counter", lambda: clock[0])
    fns, examples = [model("a", 1.0), model("b", 10.0)], [torch.zeros(2, 3)] * 2
    capped = evaluate.images_per_second_together(fns, examples, 2, min_seconds=90.0, repeats=3, max_iters=30)
    assert calls.count("a") == 1 + 3 * 10 and calls.count("b") == 1 + 3 * 3  # "a" stopped by the cap after 10 s
    calls.clear()
    equal = evaluate.images_per_second_together(fns, examples, 2, min_seconds=90.0, repeats=3, max_iters=None)
    assert calls.count("a") == 1 + 3 * 30 and calls.count("b") == 1 + 3 * 3  # 30 s a round for both
    assert capped == equal == [2.0, 0.2]  # images/s alike here: the fake calls cost the same every time


def test_a_speed_ratio_just_under_its_bar_is_not_printed_as_the_bar():
    from cnn2gnn.bench.report import _cost_targets

    speed = lambda ips, flops: {"images_per_s": {"256": ips}, "flops_per_image": flops}  # noqa: E731
    epoch = {"seconds_per_epoch": {"mean": 2.0}, "train_flops_per_image": 4.0}
    mlp = {"policies": {"none": speed(100_000.0, 0.8)}, "seconds_per_epoch": {"mean": 1.0}}
    mlp["train_flops_per_image"] = 1.6
    lines = _cost_targets(speed(59_940.0, 1.0), speed(2_000.0, 20.0), mlp, epoch, lambda ok: "yes" if ok else "**no**")
    assert "| 59.9% | **no** |" in lines[0] and "(its FLOP ratio MLP/student: 80%)" in lines[0]  # was "60% | no"
    assert "| 29.97x | **no** |" in lines[1]  # was "30.0x | **no**"
