"""The benchmark of METHOD.md sections 6-7 (``cnn2gnn bench``): the teachers and every baseline trained on one split
with the same seeds (finished runs are reused, keyed by a hash of their config), accuracy under both inference
policies, cost (parameters, FLOPs per image, training seconds per epoch, images/s with the graph's cost included),
sensitivity sweeps, and a picture of the learned graph, written as ``report.md``, ``results.json`` and PNG figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import __version__, plots
from .checkpoint import atomic_write_json, atomic_write_text, load_model, read_json
from .config import StudentConfig, TeacherConfig, build_config, to_dict
from .data import BatchIterator, DataBundle
from .errors import UserError
from .evaluate import check_data, evaluate_accuracy, images_per_second, model_fn
from .models.cnn import count_parameters
from .student import train_student
from .train import build_data, data_summary, resolve_device, train_teacher

__all__ = ["PRESETS", "Job", "Preset", "Sweep", "Teacher", "config_hash", "plan", "run_bench"]


@dataclass(frozen=True)
class Teacher:
    arch: str  # teacher architecture (see `cnn2gnn.models.cnn.TEACHERS`)
    epochs: int  # training epochs
    overrides: tuple[str, ...] = ()  # extra config overrides of this teacher (e.g. data.augment=true)


@dataclass(frozen=True)
class Sweep:
    name: str  # short name, used in run folder and figure names (e.g. "k")
    key: str  # the config key varied (e.g. "model.k")
    values: tuple  # the values tried; the one equal to the CNN2GNN row's config reuses that row's runs
    title: str  # axis label
    base: tuple[str, ...] = ()  # overrides of the swept model besides the key (e.g. model.aggregate=gcn)
    log_x: bool = False  # logarithmic x axis in the figure


@dataclass(frozen=True)
class Preset:
    teachers: tuple[Teacher, ...]  # the first one (seed `teacher_seeds[0]`) distils every student
    student_epochs: int  # epochs of every student
    seeds: tuple[int, ...]  # training seeds of every student row
    teacher_seeds: tuple[int, ...] = (0,)  # training seeds of the teachers
    teacher_set: tuple[str, ...] = ()  # overrides of every teacher (e.g. model.width=4)
    student_set: tuple[str, ...] = ()  # overrides of every student (e.g. model.hidden=32)
    sweeps: tuple[Sweep, ...] = ()  # trained sensitivity sweeps / ablations of the CNN2GNN row
    test_batch_sizes: tuple[int, ...] = (1, 16, 64, 256, 1024)  # batch-policy test batch sizes (evaluation only)
    test_k: tuple[int, ...] = (1, 5, 10, 20, 40)  # k at test time of the trained CNN2GNN (evaluation only)
    shuffles: int = 3  # seeded shuffles of the test set per student (a teacher is order-independent: one pass)
    eval_batch_size: int = 256  # test batch size of the accuracy table
    speed_seconds: float = 1.0  # minimum timing of each images/s measurement
    neighbours: int = 8  # test images in the nearest-anchors picture


FULL_SWEEPS = (
    Sweep("k", "model.k", (3, 5, 10, 20, 40), "k (neighbours, trained and tested)", log_x=True),
    Sweep("T", "distill.temperature", (1.0, 2.0, 4.0, 8.0), "KD temperature T", log_x=True),
    Sweep("alpha", "distill.alpha", (0.0, 0.5, 0.9, 1.0), "KD weight alpha (0 = CE only)"),
    Sweep(
        "bs", "optim.batch_size", (64, 128, 256, 512), "training batch size (= nodes of a training graph)", log_x=True
    ),
    Sweep("space", "model.graph_space", ("proj", "head", "pixels"), "distance space of the graph"),
    Sweep("detach", "model.detach_graph", (False, True), "graph detached (no gradient through it)"),
    Sweep(
        "selfloop",
        "model.self_loop",
        (True, False),
        "self-loop (GCN; the batch graph only)",
        base=("model.aggregate=gcn",),
    ),
)

PRESETS: dict[str, Preset] = {
    # the pipeline in seconds on digits: tests and smoke runs
    "tiny": Preset(
        teachers=(Teacher("resnet8", 2), Teacher("resnet20", 1)),
        student_epochs=2,
        seeds=(0, 1),
        teacher_set=("model.width=4",),
        student_set=("model.hidden=32", "model.anchors=50"),
        sweeps=(Sweep("k", "model.k", (3, 10), "k (neighbours, trained and tested)"),),
        test_batch_sizes=(1, 16, 64),
        test_k=(1, 3, 10),
        shuffles=2,
        speed_seconds=0.02,
        neighbours=4,
    ),
    # the accuracy and cost table in <= 20 minutes on 2 CPU cores (Fashion-MNIST), no trained sweeps
    "quick": Preset(
        teachers=(Teacher("resnet8", 5), Teacher("resnet20", 2)),
        student_epochs=8,
        seeds=(0, 1, 2),
        test_k=(1, 5, 10, 20),
    ),
    # quick's budgets (its runs are reused) + trained ablation and sensitivity sweeps, 3 seeds each (~1 h, 2 cores)
    "full": Preset(
        teachers=(Teacher("resnet8", 5), Teacher("resnet20", 2)),
        student_epochs=8,
        seeds=(0, 1, 2),
        sweeps=FULL_SWEEPS,
        test_batch_sizes=(1, 4, 16, 64, 256, 1024, 4096),
        test_k=(1, 3, 5, 10, 20, 40, 80),
    ),
    # full's sweeps with paper-like schedules and 3 teacher seeds (many hours on a CPU; meant for a GPU)
    "long": Preset(
        teachers=(Teacher("resnet8", 15), Teacher("resnet20", 30)),
        student_epochs=30,
        seeds=(0, 1, 2),
        teacher_seeds=(0, 1, 2),
        sweeps=FULL_SWEEPS,
        test_batch_sizes=(1, 4, 16, 64, 256, 1024, 4096),
        test_k=(1, 3, 5, 10, 20, 40, 80),
    ),
}

# name -> (label, overrides, distilled): the baselines of METHOD.md section 6 and the method itself
STUDENTS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "mlp-ce": ("MLP (same width), CE", ("model.aggregate=none",), False),
    "mlp-kd": ("MLP (same width), KD", ("model.aggregate=none",), True),
    "gnn-ce": ("GNN, learned graph, CE", (), False),
    "gnn-pixels-kd": ("GNN, fixed pixel kNN graph, KD", ("model.graph_space=pixels", "model.detach_graph=true"), True),
    "cnn2gnn": ("CNN2GNN: learned graph + KD", (), True),
}
METHOD = "cnn2gnn"
REFERENCE = "mlp-ce"
# keys left out of the config hash: they do not change what a run computes (the data enters as its fingerprint)
UNHASHED = (("run", "progress"), ("run", "device"), ("run", "threads"), ("data", "root"), ("data", "download"))


@dataclass(frozen=True)
class Job:
    name: str  # row name, e.g. "teacher-resnet8", "mlp-ce", "cnn2gnn", "k-5"
    kind: str  # teacher | student
    overrides: tuple[str, ...]  # config overrides on top of the command's data options
    seed: int  # run.seed
    teacher: str | None = None  # name of the teacher job that distils this student (None: cross-entropy only)


@dataclass
class Row:
    name: str
    label: str
    kind: str  # teacher | student
    group: str  # teacher | main | sweep
    overrides: tuple[str, ...]
    teacher: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)


def _value(value: Any) -> str:
    return json.dumps(value)


def _rows(preset: Preset) -> tuple[dict[str, Row], dict[str, list[tuple[Any, str]]]]:
    """Every row the preset trains, and for each sweep its (value, row name) points. A sweep point whose resolved
    config equals an earlier row's (e.g. k=10, the default) is that row, trained once."""
    distiller = f"teacher-{preset.teachers[0].arch}"
    rows: dict[str, Row] = {}
    for t in preset.teachers:
        overrides = (*preset.teacher_set, f"model.arch={t.arch}", f"optim.epochs={t.epochs}", *t.overrides)
        rows[f"teacher-{t.arch}"] = Row(f"teacher-{t.arch}", f"{t.arch} (teacher)", "teacher", "teacher", overrides)
    seen: dict[str, str] = {}

    def add(name: str, label: str, overrides: tuple[str, ...], kd: bool, group: str) -> str:
        overrides = (*preset.student_set, *overrides, f"optim.epochs={preset.student_epochs}")
        resolved = json.dumps([to_dict(build_config(StudentConfig, overrides=list(overrides))), kd], sort_keys=True)
        if resolved in seen:
            return seen[resolved]
        seen[resolved] = name
        rows[name] = Row(name, label, "student", group, overrides, distiller if kd else None)
        return name

    for name, (label, overrides, kd) in STUDENTS.items():
        add(name, label, overrides, kd, "main")
    sweeps: dict[str, list[tuple[Any, str]]] = {}
    base = STUDENTS[METHOD][1]
    for sw in preset.sweeps:
        points = []
        for value in sw.values:
            name = f"{sw.name}-{str(value).lower()}"
            label = f"CNN2GNN, {sw.key}={value}" + (f" ({', '.join(sw.base)})" if sw.base else "")
            points.append((value, add(name, label, (*base, *sw.base, f"{sw.key}={_value(value)}"), True, "sweep")))
        sweeps[sw.name] = points
    return rows, sweeps


def plan(preset: Preset) -> list[Job]:
    """The training jobs of a preset, teachers first (a student needs its teacher's folder)."""
    rows, _ = _rows(preset)
    jobs = []
    for row in rows.values():
        seeds = preset.teacher_seeds if row.kind == "teacher" else preset.seeds
        jobs += [Job(row.name, row.kind, row.overrides, s, row.teacher) for s in seeds]
    return jobs


def config_hash(cfg: TeacherConfig | StudentConfig, fingerprint: str) -> str:
    """A short hash of what a run computes: its resolved config (teacher as its folder name, which holds the
    teacher's own hash), less the keys that do not change the result, plus the data's fingerprint."""
    data = to_dict(cfg)
    for section, key in UNHASHED:
        data[section].pop(key, None)
    if data.get("distill", {}).get("teacher"):
        data["distill"]["teacher"] = Path(data["distill"]["teacher"]).name
    data["data_fingerprint"] = fingerprint
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


# --------------------------------------------------------------------------------------------------------------
# Training (or reusing) the runs.


def _run_job(job: Job, cfg, folder: Path, key: str) -> tuple[dict[str, Any], bool, float]:
    """Train the job into ``folder`` (continuing an interrupted run) unless it finished before with the same config
    hash; returns (summary, reused, wall seconds of training)."""
    stamp = folder / "bench.json"
    if (folder / "summary.json").is_file() and stamp.is_file():
        done = read_json(stamp, "bench stamp")
        if done.get("config_hash") == key:
            return read_json(folder / "summary.json", "run summary"), True, float(done.get("wall_seconds", 0.0))
    resume = (folder / "ckpt" / "latest.json").is_file()
    t0 = time.perf_counter()
    train = train_teacher if job.kind == "teacher" else train_student
    summary = train(cfg, folder, resume=resume)
    wall = time.perf_counter() - t0
    atomic_write_json(stamp, {"config_hash": key, "job": asdict(job), "wall_seconds": round(wall, 2)})
    return summary, False, wall


def _metrics(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------------------
# Evaluation of one trained model.


def flops_per_image(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    """FLOPs of one forward over the batch ``x`` divided by its size, counted by ``FlopCounterMode`` (matmuls and
    convolutions, 2 per multiply-add: the graph's distances and its dense propagation are included; top-k, the
    normalisation and elementwise ops are not). The anchors policy's bank is precomputed once beforehand, as a
    deployed model does."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad():
        fn(x)
        counter = FlopCounterMode(display=False)
        with counter:
            fn(x)
    return counter.get_total_flops() / len(x)


def _policies(meta: dict[str, Any]) -> list[str]:
    if meta["kind"] == "teacher" or meta["student"]["kwargs"]["aggregate"] == "none":
        return ["none"]
    return ["batch", "anchors"] if meta["student"]["anchors"] else ["batch"]


def _example(bundle: DataBundle, meta: dict[str, Any], n: int, device) -> torch.Tensor:
    it = BatchIterator(bundle.test, n, mean=meta["mean"], std=meta["std"], shuffle=True, seed=0, device=device)
    return next(iter(it)).x


def evaluate_run(
    folder: Path, bundle: DataBundle, preset: Preset, device: torch.device, *, cost: bool
) -> dict[str, Any]:
    """Accuracy of the model in ``folder`` under each policy it supports; with ``cost`` also FLOPs and images/s."""
    model, meta = load_model(folder, device)
    check_data(meta, bundle)
    out: dict[str, Any] = {"parameters": count_parameters(model), "policies": {}}
    if meta["kind"] == "student":
        out["anchors"] = int(meta["student"]["anchors"])
    example = _example(bundle, meta, 256, device) if cost else None
    for policy in _policies(meta):
        graph = None if policy == "none" else policy
        shuffles = 1 if meta["kind"] == "teacher" else preset.shuffles
        acc = evaluate_accuracy(
            model,
            meta,
            bundle.test,
            graph=graph,
            batch_size=preset.eval_batch_size,
            seeds=range(shuffles),
            device=device,
        )
        entry: dict[str, Any] = {"test_acc": acc["mean"], "shuffle_accs": acc["accs"]}
        if "class_sorted_acc" in acc:
            entry["class_sorted_acc"] = acc["class_sorted_acc"]
        if cost:
            fn, _ = model_fn(model, meta, graph)
            entry["flops_per_image"] = flops_per_image(fn, example)
            entry["images_per_s"] = {
                str(b): images_per_second(fn, example, b, min_seconds=preset.speed_seconds) for b in (1, 256)
            }
        out["policies"][policy] = entry
    return out


def _test_batch_sizes(model, meta, bundle: DataBundle, preset: Preset, device) -> dict[str, dict[str, float]]:
    """Batch-policy accuracy at each test batch size, on shuffled and on class-sorted batches (METHOD.md 5-6)."""
    out = {}
    for b in preset.test_batch_sizes:
        # a batch of one is its own graph whatever the order: one pass, and sorting changes nothing
        seeds = range(1 if b == 1 else preset.shuffles)
        r = evaluate_accuracy(
            model, meta, bundle.test, graph="batch", batch_size=b, seeds=seeds, device=device, sorted_check=b > 1
        )
        out[str(b)] = {"shuffled": r["mean"], "class_sorted": r.get("class_sorted_acc", r["mean"])}
    return out


def _test_k(model, meta, bundle: DataBundle, preset: Preset, device) -> dict[str, dict[str, float]]:
    """Accuracy of the trained model with k changed at test time only (both policies)."""
    trained_k = model.graph.k
    out = {}
    try:
        for k in preset.test_k:
            model.graph.k = k
            model.train(False)  # drops the cached anchor states, which depend on k
            out[str(k)] = {
                p: evaluate_accuracy(
                    model,
                    meta,
                    bundle.test,
                    graph=p,
                    batch_size=preset.eval_batch_size,
                    seeds=range(preset.shuffles if p == "batch" else 1),
                    device=device,
                    sorted_check=False,
                )["mean"]
                for p in _policies(meta)
            }
    finally:
        model.graph.k = trained_k
        model.train(False)
    return out


@torch.no_grad()
def anchor_neighbours(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge weights and anchor positions of the anchors graph of the images ``x``, largest weight first.

    The student's own :meth:`~cnn2gnn.models.gnn.GNNStudent.anchor_edges`, so the edges are exactly those of the
    ``anchors`` policy. Shapes: x (n, ...) -> weights (n, k), index (n, k).
    """
    return model.anchor_edges(x)


def homophily(model, meta, bundle: DataBundle, device) -> list[float]:
    """Per class: the mean over its test images of the share of their k anchors (non-zero edges) with their label."""
    it = BatchIterator(bundle.test, 1024, mean=meta["mean"], std=meta["std"], device=device)
    shares, labels = [], []
    for batch in it:
        w, idx = anchor_neighbours(model, batch.x)
        edge = w > 0
        same = (model.anchor_y[idx] == batch.y[:, None]) & edge
        shares.append((same.sum(1) / edge.sum(1).clamp_min(1)).cpu())
        labels.append(batch.y.cpu())
    share, label = torch.cat(shares), torch.cat(labels)
    return [float(share[label == c].mean()) if (label == c).any() else float("nan") for c in range(meta["num_classes"])]


def neighbour_picture(model, meta, bundle: DataBundle, n: int, path: Path, device) -> Path:
    """The first test image of each of ``n`` classes beside its k anchors (pixels un-normalised to [0, 1])."""
    labels = bundle.test.labels
    picks = [int(torch.nonzero(labels == c)[0]) for c in range(meta["num_classes"]) if (labels == c).any()][:n]
    pick = torch.tensor(picks, dtype=torch.long)
    split = bundle.test.subset(pick)
    x = _example_of(split, meta, device)
    w, idx = anchor_neighbours(model, x)
    c, (h, wd) = meta["in_channels"], meta["image_size"]
    mean = torch.tensor(meta["mean"], device=device).view(1, c, 1, 1)
    std = torch.tensor(meta["std"], device=device).view(1, c, 1, 1)
    bank = model.anchor_x.view(-1, c, h, wd) * std + mean
    return plots.plot_neighbours(
        (split.images.float() / 255).numpy(),
        [int(y) for y in split.labels],
        bank[idx].cpu().numpy(),
        model.anchor_y[idx].cpu().numpy(),
        w.cpu().numpy(),
        meta["classes"],
        path,
    )


def _example_of(split, meta, device) -> torch.Tensor:
    return next(iter(BatchIterator(split, len(split), mean=meta["mean"], std=meta["std"], device=device))).x


# --------------------------------------------------------------------------------------------------------------
# Aggregation over seeds.


def stats(values: Sequence[float]) -> dict[str, Any]:
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values) if values else float("nan"),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        "values": values,
    }


def _mean_curve(curves: list[list[float]]) -> list[float]:
    """Per epoch, the mean over seeds (all runs of a row have the same number of epochs)."""
    return [statistics.fmean(epoch) for epoch in zip(*curves, strict=True)]


def _aggregate(row: Row) -> dict[str, Any]:
    runs = row.runs
    out: dict[str, Any] = {
        "label": row.label,
        "kind": row.kind,
        "group": row.group,
        "overrides": list(row.overrides),
        "teacher": row.teacher,
        "seeds": [r["seed"] for r in runs],
        "folders": [r["folder"] for r in runs],
        "parameters": runs[0]["eval"]["parameters"],
        "epochs": len(runs[0]["metrics"]),
        "seconds_per_epoch": stats([statistics.fmean(m["train_seconds"] for m in r["metrics"]) for r in runs]),
        "train_seconds": stats([r["wall"] for r in runs]),
        "best_epoch": stats([r["best"]["epoch"] + 1 for r in runs]),
        "val_acc_best": stats([r["best"]["val_acc"] for r in runs]),
        "test_acc_best_epoch": stats([r["best"].get("test_acc", float("nan")) for r in runs]),
        "val_acc_last": stats([r["metrics"][-1].get("val_acc", float("nan")) for r in runs]),
        "logged_policy": runs[0]["logged_policy"],
        "curve_val": _mean_curve([[m.get("val_acc", float("nan")) for m in r["metrics"]] for r in runs]),
        "policies": {},
    }
    if "anchors" in runs[0]["eval"]:
        out["anchors"] = runs[0]["eval"]["anchors"]
    for policy, first in runs[0]["eval"]["policies"].items():
        entry = {"test_acc": stats([r["eval"]["policies"][policy]["test_acc"] for r in runs])}
        if "class_sorted_acc" in first:
            entry["class_sorted_acc"] = stats([r["eval"]["policies"][policy]["class_sorted_acc"] for r in runs])
        for key in ("flops_per_image", "images_per_s"):
            if key in first:
                entry[key] = first[key]
        out["policies"][policy] = entry
    return out


def _aggregate_nested(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """[{x: {series: acc}}] over seeds -> {x: {series: stats}}."""
    return {x: {s: stats([d[x][s] for d in per_seed]) for s in per_seed[0][x]} for x in per_seed[0]}


# --------------------------------------------------------------------------------------------------------------
# The command.


def machine() -> dict[str, Any]:
    """Where the numbers were measured: platform, cores, threads, load, package versions."""
    import matplotlib
    import numpy
    import torchvision

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": {
            "cnn2gnn": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": numpy.__version__,
            "matplotlib": matplotlib.__version__,
        },
    }


def run_bench(
    preset_name: str,
    out: str | Path,
    *,
    data: str,
    data_root: str | None = None,
    download: bool = False,
    limit_train: int | None = None,
    limit_test: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    command: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Train or reuse every run of the preset into ``out/runs``, evaluate, and write ``out/report.md``,
    ``out/results.json`` and ``out/*.png``; returns the results. ``threads`` sets torch's CPU threads for the
    whole benchmark (None: torch's default, one per core)."""
    if preset_name not in PRESETS:
        raise UserError(f"unknown preset '{preset_name}' (known: {', '.join(PRESETS)})")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _bench(
            preset_name,
            Path(out),
            data,
            data_root,
            download,
            limit_train,
            limit_test,
            device,
            threads,
            command,
            progress,
        )
    finally:
        torch.set_num_threads(before)


def _bench(
    preset_name: str,
    out: Path,
    data: str,
    data_root: str | None,
    download: bool,
    limit_train: int | None,
    limit_test: int | None,
    device: str,
    threads: int | None,
    command: str,
    progress: bool,
) -> dict[str, Any]:
    preset = PRESETS[preset_name]
    t_start = time.perf_counter()
    where = machine()
    runs_dir = out / "runs"
    common = [f"data.name={_value(data)}", "run.progress=false", f"run.device={_value(device)}"]
    for key, value in (("root", data_root), ("limit_train", limit_train), ("limit_test", limit_test)):
        if value is not None:
            common.append(f"data.{key}={_value(value)}")
    if download:
        common.append("data.download=true")
    if threads:
        common.append(f"run.threads={threads}")
    dev = resolve_device(device)
    bundle = build_data(build_config(TeacherConfig, overrides=common))

    rows, sweeps = _rows(preset)
    jobs = plan(preset)
    folders: dict[tuple[str, int], Path] = {}
    log: list[dict[str, Any]] = []
    bar = tqdm(jobs, desc="bench: training", unit="run", disable=None if progress else True, dynamic_ncols=True)
    for job in bar:
        bar.set_postfix_str(f"{job.name} s{job.seed}")
        cls = TeacherConfig if job.kind == "teacher" else StudentConfig
        overrides = [*common, *job.overrides, f"run.seed={job.seed}"]
        if job.teacher:
            teacher_dir = folders[(job.teacher, preset.teacher_seeds[0])]
            overrides.append(f"distill.teacher={_value(str(teacher_dir))}")
        cfg = build_config(cls, overrides=overrides)
        key = config_hash(cfg, bundle.fingerprint)
        folder = runs_dir / f"{job.name}-{key}-s{job.seed}"
        summary, reused, wall = _run_job(job, cfg, folder, key)
        folders[(job.name, job.seed)] = folder
        log.append(
            {
                "name": job.name,
                "seed": job.seed,
                "folder": str(folder.relative_to(out)),
                "reused": reused,
                "wall_seconds": round(wall, 2),
            }
        )
        if progress:
            tqdm.write(f"{'reused' if reused else 'trained'} {folder.name}" + ("" if reused else f" in {wall:.0f}s"))
        metrics = _metrics(folder)
        scored = [m for m in metrics if "val_acc" in m]
        best = max(scored, key=lambda m: m["val_acc"]) if scored else metrics[-1]
        rows[job.name].runs.append(
            {
                "seed": job.seed,
                "folder": str(folder.relative_to(out)),
                "metrics": metrics,
                "best": best,
                "wall": wall,
                "summary": summary,
                "logged_policy": "none" if job.kind == "teacher" else _logged_policy(cfg),
            }
        )
    t_train = time.perf_counter() - t_start

    # evaluation: every run; cost (FLOPs, images/s) once per row, on its first seed
    seconds: dict[str, float] = {"train": t_train}
    t0 = time.perf_counter()
    evals = [(row, run) for row in rows.values() for run in row.runs]
    bar = tqdm(evals, desc="bench: evaluating", unit="run", disable=None if progress else True, dynamic_ncols=True)
    for row, run in bar:
        bar.set_postfix_str(f"{row.name} s{run['seed']}")
        run["eval"] = evaluate_run(out / run["folder"], bundle, preset, dev, cost=run is row.runs[0])
    results_rows = {name: _aggregate(row) for name, row in rows.items()}
    seconds["evaluate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    test_batch, test_k = _sensitivity([out / r["folder"] for r in rows[METHOD].runs], bundle, preset, dev)
    seconds["test_batch_and_k"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    firsts = {name: out / row.runs[0]["folder"] for name, row in rows.items() if row.kind == "student"}
    graph, figures = _graph(firsts, results_rows, bundle, preset, out, dev)
    seconds["graph"] = time.perf_counter() - t0

    results = {
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**where, "load_average_end": machine()["load_average"]},
        "device": str(dev),
        "preset": preset_name,
        "preset_config": asdict(preset),
        "data": {**data_summary(bundle), "limit_train": limit_train, "limit_test": limit_test},
        "distiller": f"teacher-{preset.teachers[0].arch} seed {preset.teacher_seeds[0]}",
        "student_config": to_dict(build_config(StudentConfig, overrides=[*common, *rows[METHOD].overrides])),
        "rows": results_rows,
        "sweeps": {
            sw.name: {
                "key": sw.key,
                "title": sw.title,
                "base": list(sw.base),
                "points": [{"value": v, "row": n} for v, n in sweeps[sw.name]],
            }
            for sw in preset.sweeps
        },
        "test_batch_size": test_batch,
        "test_k": test_k,
        "graph": graph,
        "jobs": log,
        "trained": sum(not j["reused"] for j in log),
        "reused": sum(j["reused"] for j in log),
        # every run's own training wall time, reused runs as recorded when they were trained: the cost of the
        # preset from scratch, whatever an earlier call already did
        "runs_train_seconds": round(sum(j["wall_seconds"] for j in log), 1),
    }
    figures.update(_figures(results, preset, out))
    results["figures"] = figures
    seconds["total"] = time.perf_counter() - t_start
    results["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", report(results))
    return results


def _sensitivity(folders: list[Path], bundle: DataBundle, preset: Preset, device) -> tuple[dict, dict]:
    """Accuracy vs test batch size and vs test-time k of the CNN2GNN runs, aggregated over their seeds."""
    per_bs, per_k = [], []
    for folder in folders:
        model, meta = load_model(folder, device)
        per_bs.append(_test_batch_sizes(model, meta, bundle, preset, device))
        if "anchors" in _policies(meta):
            per_k.append(_test_k(model, meta, bundle, preset, device))
    return _aggregate_nested(per_bs), (_aggregate_nested(per_k) if per_k else {})


def _graph(
    firsts: dict[str, Path], rows: dict[str, dict], bundle: DataBundle, preset: Preset, out: Path, device
) -> tuple[dict[str, Any], dict[str, str]]:
    """Homophily of the anchors graph of the graph students (first seed) and the nearest-anchors picture."""
    graph: dict[str, Any] = {"classes": list(bundle.classes), "homophily": {}}
    figures: dict[str, str] = {}
    for name in (METHOD, "gnn-ce", "gnn-pixels-kd"):
        if "anchors" not in rows[name]["policies"]:
            continue
        model, meta = load_model(firsts[name], device)
        per_class = homophily(model, meta, bundle, device)
        graph["homophily"][name] = {"per_class": per_class, "mean": statistics.fmean(per_class), "k": model.graph.k}
        if name == METHOD:
            path = neighbour_picture(model, meta, bundle, preset.neighbours, out / "graph_neighbours.png", device)
            figures["neighbours"] = path.name
    return graph, figures


def _logged_policy(cfg: StudentConfig) -> str:
    """The policy of the per-epoch val/test accuracies that the training run logged."""
    return "none" if cfg.model.aggregate == "none" else cfg.model.train_graph


# --------------------------------------------------------------------------------------------------------------
# Figures and report.


def _points(results: dict, names: Sequence[tuple[Any, str]], policy: str) -> list[tuple[Any, float, float]]:
    pts = []
    for value, name in names:
        entry = results["rows"][name]["policies"].get(policy)
        if entry:
            x = value if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value).lower()
            pts.append((x, entry["test_acc"]["mean"], entry["test_acc"]["std"]))
    return pts


def _reference(results: dict) -> dict[str, float]:
    ref = results["rows"].get(REFERENCE)
    return {ref["label"]: ref["policies"]["none"]["test_acc"]["mean"]} if ref else {}


def _figures(results: dict, preset: Preset, out: Path) -> dict[str, str]:
    rows = results["rows"]
    figs: dict[str, Path] = {}
    shown = [n for n, r in rows.items() if r["group"] in ("teacher", "main")]
    figs["curves"] = plots.plot_curves({rows[n]["label"]: rows[n]["curve_val"] for n in shown}, out / "curves.png")
    tb = results["test_batch_size"]
    if tb:
        series = {
            "CNN2GNN, batch policy, shuffled batches": [
                (int(b), v["shuffled"]["mean"], v["shuffled"]["std"]) for b, v in tb.items()
            ],
            "CNN2GNN, batch policy, class-sorted batches (leaks labels)": [
                (int(b), v["class_sorted"]["mean"], v["class_sorted"]["std"]) for b, v in tb.items()
            ],
        }
        refs = dict(_reference(results))
        anchors = rows[METHOD]["policies"].get("anchors")
        if anchors:
            refs["CNN2GNN, anchors policy (any batch size)"] = anchors["test_acc"]["mean"]
        figs["test_batch_size"] = plots.plot_sweep(
            series,
            out / "acc_vs_test_batch_size.png",
            xlabel="test batch size",
            log_x=True,
            references=refs,
            title="accuracy vs test batch size",
        )
    if results["test_k"]:
        tk = results["test_k"]
        policies = list(next(iter(tk.values())))
        series = {f"{p} policy": [(int(k), v[p]["mean"], v[p]["std"]) for k, v in tk.items()] for p in policies}
        figs["test_k"] = plots.plot_sweep(
            series,
            out / "acc_vs_k_test_time.png",
            xlabel=f"k at test time (trained with k={results['student_config']['model']['k']})",
            log_x=True,
            references=_reference(results),
            title="accuracy vs k (test time only)",
        )
    for sw in preset.sweeps:
        names = [(p["value"], p["row"]) for p in results["sweeps"][sw.name]["points"]]
        series = {f"{p} policy": _points(results, names, p) for p in ("batch", "anchors")}
        figs[f"sweep_{sw.name}"] = plots.plot_sweep(
            series,
            out / f"sweep_{sw.name}.png",
            xlabel=sw.title,
            log_x=sw.log_x,
            references=_reference(results),
            title=f"sensitivity: {sw.key}" + (f" ({', '.join(sw.base)})" if sw.base else ""),
        )
    cost = []
    for n in shown:
        for policy, entry in rows[n]["policies"].items():
            if "images_per_s" in entry:
                cost.append(
                    {
                        "label": rows[n]["label"] + ("" if policy == "none" else f" [{policy}]"),
                        "acc": entry["test_acc"]["mean"],
                        "std": entry["test_acc"]["std"],
                        "ips_1": entry["images_per_s"]["1"],
                        "ips_256": entry["images_per_s"]["256"],
                        "teacher": rows[n]["kind"] == "teacher",
                    }
                )
    figs["cost"] = plots.plot_cost(cost, out / "acc_vs_inference_cost.png")
    hom = results["graph"]["homophily"]
    if hom:
        figs["homophily"] = plots.plot_homophily(
            results["graph"]["classes"],
            {rows[n]["label"]: h["per_class"] for n, h in hom.items()},
            out / "graph_homophily.png",
        )
    return {k: p.name for k, p in figs.items()}


def _pct(s: dict | None, digits: int = 2) -> str:
    if not s or s["n"] == 0 or s["mean"] != s["mean"]:
        return "-"
    return f"{100 * s['mean']:.{digits}f} +- {100 * s['std']:.{digits}f}"


def _load(load: Sequence[float] | None) -> str:
    return "/".join(f"{x:.1f}" for x in load) if load else "unknown"


def _seeds(seeds: Sequence[int]) -> str:
    return ", ".join(str(s) for s in seeds)


def _si(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def targets(results: dict) -> list[str]:
    """Issue 4's bar, measured: CNN2GNN (anchors) within 1 point of its teacher, >= 1 point ahead of the best
    same-width MLP, and >= 10x the teacher's images/s at batch 256. Empty when a row is missing."""
    rows = results["rows"]
    distiller = results["distiller"].split(" seed ")[0]
    mlps = [rows[k] for k in ("mlp-ce", "mlp-kd") if k in rows]
    if METHOD not in rows or "anchors" not in rows[METHOD]["policies"] or distiller not in rows or not mlps:
        return []
    student = rows[METHOD]["policies"]["anchors"]
    teacher = rows[distiller]["policies"]["none"]
    best_mlp = max(mlps, key=lambda r: r["policies"]["none"]["test_acc"]["mean"])
    acc = 100 * student["test_acc"]["mean"]
    vs_teacher = acc - 100 * teacher["test_acc"]["mean"]
    vs_mlp = acc - 100 * best_mlp["policies"]["none"]["test_acc"]["mean"]
    speed = student.get("images_per_s", {}).get("256", float("nan")) / teacher.get("images_per_s", {}).get(
        "256", float("nan")
    )

    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    return [
        "## Against the targets",
        "",
        f"CNN2GNN under the anchors policy ({acc:.2f}%) compared with the teacher it distils ({distiller}) and the "
        f"best same-width MLP ({best_mlp['label']}), mean test accuracy over the seeds:",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| within 1.0 point of the teacher | {vs_teacher:+.2f} points | {met(vs_teacher >= -1.0)} |",
        f"| ahead of the best same-width MLP by >= 1.0 point | {vs_mlp:+.2f} points | {met(vs_mlp >= 1.0)} |",
        f"| >= 10x the teacher's images/s at batch 256 | {speed:.1f}x | {met(speed >= 10.0)} |",
        "",
    ]


def report(results: dict) -> str:
    """The markdown report: provenance, budgets, the accuracy and cost table, sweeps, the learned graph."""
    m, d, p = results["machine"], results["data"], results["preset_config"]
    rows = results["rows"]
    sc = results["student_config"]
    sec = results["seconds"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    teachers = "; ".join(
        f"{t['arch']} {t['epochs']} epochs" + (f" ({', '.join(t['overrides'])})" if t["overrides"] else "")
        for t in p["teachers"]
    )
    lines = [
        f"# cnn2gnn bench: {d['name']}, preset `{results['preset']}`",
        "",
        f"- command: `{results['command']}`",
        f"- date: {results['date']}",
        f"- machine: {m['platform']}, {m['processor']}, {m['cpu_count']} cores, torch threads {m['torch_threads']}, "
        f"device {results['device']}" + (f" ({m['cuda']})" if m["cuda"] else ""),
        f"- load average (1/5/15 min) at the start {_load(m['load_average'])}, at the end "
        f"{_load(m['load_average_end'])}: timings are as measured under that load",
        f"- versions: {versions}",
        f"- time: {sec['total']:.0f} s in all ({sec['train']:.0f} s training, "
        f"{sec['total'] - sec['train']:.0f} s evaluation and report); {results['trained']} runs trained, "
        f"{results['reused']} reused from an earlier call with the same config hash"
        + (
            f"; the training of all {len(results['jobs'])} runs, reused ones as recorded when they were trained, "
            f"took {results['runs_train_seconds']:.0f} s"
            if results.get("runs_train_seconds") is not None and results["reused"]
            else ""
        ),
        "",
        "Every number below comes from the runs this command made (folders under `runs/`, named "
        "`<row>-<config hash>-s<seed>`, each with its config.yaml, metrics.jsonl and manifest.json).",
        "",
        "## Budgets",
        "",
        f"- data: {d['name']} ({d['train']} train / {d['val']} val / {d['test']} test, fingerprint {d['fingerprint']}"
        + (f", limit_train {d['limit_train']}" if d["limit_train"] else "")
        + (f", limit_test {d['limit_test']}" if d["limit_test"] else "")
        + "); one split for every run",
        f"- teachers (trained from scratch, seeds {_seeds(p['teacher_seeds'])}): {teachers}"
        + (f"; all with {', '.join(p['teacher_set'])}" if p["teacher_set"] else ""),
        f"- every student distils the same teacher: {results['distiller']}",
        f"- students: {p['student_epochs']} epochs, seeds {_seeds(p['seeds'])}; hidden {sc['model']['hidden']}, "
        f"k {sc['model']['k']}, aggregate {sc['model']['aggregate']}, graph space {sc['model']['graph_space']}, "
        f"training graph {sc['model']['train_graph']}, anchor bank m = {sc['model']['anchors']}; "
        f"{sc['optim']['optimizer']} lr {sc['optim']['lr']} ({sc['optim']['schedule']}), batch "
        f"{sc['optim']['batch_size']}; KD alpha {sc['distill']['alpha']}, T {sc['distill']['temperature']}",
        f"- evaluation: test batch {p['eval_batch_size']}; students on {p['shuffles']} seeded shuffles of the test set "
        "(their mean per run), a teacher once (its predictions do not depend on the order)",
        "",
        "## Accuracy and cost",
        "",
        "Test accuracy in %, mean +- std over the training seeds (n). *last*: the final model; *best-val epoch*: the "
        "test accuracy logged at the epoch of highest val accuracy (logged under the training graph policy, one fixed "
        "shuffle, batch 512). FLOPs per image from `torch.utils.flop_counter` on a batch of 256 (graph distances and "
        "propagation included). images/s on this machine at batch 1 and 256, graph included (the anchors policy's "
        "bank precomputed once).",
        "",
        "| model | graph at test | n | test acc, last | test acc, best-val epoch | best epoch | val acc, last "
        "| params | FLOPs/image | s/epoch (train) | images/s b=1 | images/s b=256 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows.values():
        if r["group"] == "sweep":
            continue
        for policy, e in r["policies"].items():
            best = r["test_acc_best_epoch"] if policy == r["logged_policy"] else None
            ips = e.get("images_per_s", {})
            params = f"{r['parameters']:,}" + (f" + bank {r['anchors']}" if policy == "anchors" else "")
            lines.append(
                f"| {r['label']} | {policy} | {r['seeds'].__len__()} | {_pct(e['test_acc'])} | {_pct(best)} | "
                f"{r['best_epoch']['mean']:.1f}/{r['epochs']} | {_pct(r['val_acc_last'])} | {params} | "
                f"{_si(e.get('flops_per_image'))} | {r['seconds_per_epoch']['mean']:.2f} | "
                f"{_si(ips.get('1'))} | {_si(ips.get('256'))} |"
            )
    lines += ["", *targets(results)]
    lines += ["![training curves](curves.png)", "", "![accuracy vs inference cost](acc_vs_inference_cost.png)", ""]
    tb = results["test_batch_size"]
    if tb:
        lines += [
            "## Test batch size (batch policy, CNN2GNN)",
            "",
            "The batch policy builds the graph among the images of a test batch: at batch 1 the student is an MLP, "
            "and class-sorted batches leak labels through the graph. Anchors-policy predictions do not depend on the "
            "batch.",
            "",
            "| test batch | shuffled | class-sorted |",
            "|---|---|---|",
            *[f"| {b} | {_pct(v['shuffled'])} | {_pct(v['class_sorted'])} |" for b, v in tb.items()],
            "",
            "![accuracy vs test batch size](acc_vs_test_batch_size.png)",
            "",
        ]
    tk = results["test_k"]
    if tk:
        pols = list(next(iter(tk.values())))
        lines += [
            f"## k at test time (CNN2GNN trained with k = {sc['model']['k']})",
            "",
            "| k | " + " | ".join(f"{q} policy" for q in pols) + " |",
            "|---|" + "---|" * len(pols),
            *[f"| {k} | " + " | ".join(_pct(v[q]) for q in pols) + " |" for k, v in tk.items()],
            "",
            "![accuracy vs k at test time](acc_vs_k_test_time.png)",
            "",
        ]
    if results["sweeps"]:
        lines += ["## Sweeps and ablations (trained)", ""]
        for sname, sw in results["sweeps"].items():
            base = f" (with {', '.join(sw['base'])})" if sw["base"] else ""
            lines += [
                f"### {sw['key']}{base}",
                "",
                "| value | batch policy | anchors policy | run |",
                "|---|---|---|---|",
            ]
            for pt in sw["points"]:
                r = rows[pt["row"]]
                lines.append(
                    f"| {pt['value']} | {_pct(r['policies'].get('batch', {}).get('test_acc'))} | "
                    f"{_pct(r['policies'].get('anchors', {}).get('test_acc'))} | {pt['row']} |"
                )
            lines += ["", f"![{sname}](sweep_{sname}.png)", ""]
    hom = results["graph"]["homophily"]
    if hom:
        classes = results["graph"]["classes"]
        lines += [
            "## The learned graph",
            "",
            "Homophily of the anchors graph: for each test image, the share of its k anchors (non-zero edges) that "
            "have its label, averaged per class (first seed of each row).",
            "",
            "| model | mean | " + " | ".join(classes) + " |",
            "|---|---|" + "---|" * len(classes),
            *[
                f"| {rows[n]['label']} | {100 * h['mean']:.1f} | "
                + " | ".join(f"{100 * v:.1f}" for v in h["per_class"])
                + " |"
                for n, h in hom.items()
            ],
            "",
            "![homophily](graph_homophily.png)",
            "",
        ]
        if "neighbours" in results["figures"]:
            lines += ["![test images and their nearest anchors](graph_neighbours.png)", ""]
    return "\n".join(lines) + "\n"
