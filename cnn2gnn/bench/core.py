"""The ``cnn2gnn bench`` command's pipeline (docs/method.md s. 6-7): train or reuse every run of a preset, evaluate
them, aggregate over seeds, and write ``results.json``, ``report.md`` and the figures.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..checkpoint import atomic_write_json, atomic_write_text
from ..config import StudentConfig, TeacherConfig, build_config, to_dict
from ..data import resolve_root
from ..errors import UserError
from ..run import build_data, data_summary, resolve_device
from .figures import figures
from .measure import SPEED_ROUNDS, evaluate_run, learned_graph, measure_speeds, sensitivity
from .plan import METHOD, override_value, plan_rows
from .presets import Preset, load_preset
from .provenance import load_average, machine
from .report import report
from .runs import train_jobs
from .stats import aggregate


def run_bench(
    preset_name: str,
    out: str | Path,
    *,
    data: str,
    data_root: str | None = None,
    download: bool = False,
    limit_train: int | None = None,
    limit_test: int | None = None,
    labels_per_class: int | None = None,
    label_noise: float | None = None,
    device: str = "auto",
    threads: int | None = None,
    command: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Train or reuse every run of the preset (a shipped name or a preset YAML file) into ``out/runs``, evaluate, and
    write ``out/report.md``, ``out/results.json`` and ``out/*.png``; returns the results. ``threads`` sets torch's
    CPU threads for the whole benchmark (None: torch's default, one per core)."""
    preset = load_preset(preset_name)
    if data_root is None:
        data_root = previous_root(Path(out), data)
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    # the command's data and run options, on top of which every job sets its own
    common = [f"data.name={override_value(data)}", "run.progress=false", f"run.device={override_value(device)}"]
    regime = (("labels_per_class", labels_per_class), ("label_noise", label_noise))
    for key, value in (("root", data_root), ("limit_train", limit_train), ("limit_test", limit_test), *regime):
        if value is not None:
            common.append(f"data.{key}={override_value(value)}")
    if download:
        common.append("data.download=true")
    if threads:
        common.append(f"run.threads={threads}")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _bench(preset_name, preset, Path(out), common, command, progress)
    finally:
        torch.set_num_threads(before)


def previous_root(out: Path, data: str) -> str | None:
    """The data root an earlier bench of ``data`` into ``out`` used (from its results.json), so a rerun without
    ``--data-root`` reads the same files; None when there is none."""
    try:
        earlier = json.loads((out / "results.json").read_text())["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return earlier.get("root") if earlier.get("name") == data else None


def _bench(
    preset_name: str, preset: Preset, out: Path, common: list[str], command: str, progress: bool
) -> dict[str, Any]:
    t_start = time.perf_counter()
    where = machine()
    data_cfg = build_config(TeacherConfig, overrides=common)
    dev = resolve_device(data_cfg.run.device)
    d = data_cfg.data
    bundle = build_data(d)

    rows, sweeps = plan_rows(preset)
    log = train_jobs(preset, rows, common, bundle.fingerprint, out, progress)
    seconds: dict[str, float] = {"train": time.perf_counter() - t_start}

    # evaluation: every run; cost (FLOPs, images/s) once per row, on its first seed, images/s of all rows together
    t0 = time.perf_counter()
    evals = [(row, run) for row in rows.values() for run in row.runs]
    bar = tqdm(evals, desc="bench: evaluating", unit="run", disable=None if progress else True, dynamic_ncols=True)
    for row, run in bar:
        bar.set_postfix_str(f"{row.name} s{run['seed']}")
        run["eval"] = evaluate_run(out / run["folder"], bundle, preset, dev, cost=run is row.runs[0])
    firsts = [row.runs[0] for row in rows.values()]
    speeds = measure_speeds([out / run["folder"] for run in firsts], bundle, preset, dev)  # timed together
    for run in firsts:
        for name, entry in run["eval"]["policies"].items():
            entry["images_per_s"] = speeds[Path(run["folder"]).name][name]
    results_rows = {name: aggregate(row) for name, row in rows.items()}
    seconds["evaluate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    test_batch, test_k = sensitivity([out / r["folder"] for r in rows[METHOD].runs], bundle, preset, dev)
    seconds["test_batch_and_k"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    firsts = {name: out / row.runs[0]["folder"] for name, row in rows.items() if row.kind == "student"}
    graph, figs = learned_graph(firsts, results_rows, bundle, preset, out, dev)
    seconds["graph"] = time.perf_counter() - t0

    results = {
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**where, "load_average_end": load_average()},
        "device": str(dev),
        "preset": preset_name,
        "preset_config": asdict(preset),
        "speed_rounds": SPEED_ROUNDS,
        "data": {
            **data_summary(bundle),
            "root": str(
                resolve_root(data_cfg.data.name, data_cfg.data.root, download=data_cfg.data.download).resolve()
            ),
            "limit_train": data_cfg.data.limit_train,
            "limit_test": data_cfg.data.limit_test,
            "labels_per_class": d.labels_per_class,
            "label_noise": d.label_noise,
        },
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
    figs.update(figures(results, out))
    results["figures"] = figs
    seconds["total"] = time.perf_counter() - t_start
    results["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", report(results))
    return results
