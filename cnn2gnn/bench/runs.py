"""The benchmark's runs (docs/method.md section 6): each job trained into ``OUT/runs/<row>-<config hash>-s<seed>``, or
reused when it finished before with the same config hash, or continued from its last checkpoint when interrupted.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .. import policy
from ..checkpoint import atomic_write_json, read_json
from ..config import StudentConfig, TeacherConfig, build_config
from ..student import train_student
from ..teacher import train_teacher
from .plan import Job, Row, config_hash, override_value, plan
from .presets import Preset


def run_job(job: Job, cfg, folder: Path, key: str) -> tuple[dict[str, Any], bool, float]:
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
    summary = train(cfg, folder, resume=resume, overwrite=not resume)  # a stale or partial run is replaced
    wall = time.perf_counter() - t0
    atomic_write_json(stamp, {"config_hash": key, "job": asdict(job), "wall_seconds": round(wall, 2)})
    return summary, False, wall


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]


def logged_policy(cfg: StudentConfig) -> str:
    """The policy of the per-epoch val/test accuracies that the training run logged."""
    return policy.NONE if cfg.model.arch == "mlp" else cfg.distill.train_graph


def train_jobs(
    preset: Preset, rows: dict[str, Row], common: list[str], fingerprint: str, out: Path, progress: bool
) -> list[dict[str, Any]]:
    """Train or reuse every job of ``preset`` under ``out/runs`` (``common``: the command's data and run overrides),
    appending each run to its row's ``runs``; returns the job log (folder, reused, wall seconds) in job order."""
    folders: dict[tuple[str, int], Path] = {}
    log: list[dict[str, Any]] = []
    jobs = plan(preset)
    bar = tqdm(jobs, desc="bench: training", unit="run", disable=None if progress else True, dynamic_ncols=True)
    for job in bar:
        bar.set_postfix_str(f"{job.name} s{job.seed}")
        cls = TeacherConfig if job.kind == "teacher" else StudentConfig
        overrides = [*common, *job.overrides, f"run.seed={job.seed}"]
        if job.teacher:
            teacher_dir = folders[(job.teacher, preset.teacher_seeds[0])]
            overrides.append(f"distill.teacher={override_value(str(teacher_dir))}")
        cfg = build_config(cls, overrides=overrides)
        key = config_hash(cfg, fingerprint)
        folder = out / "runs" / f"{job.name}-{key}-s{job.seed}"
        summary, reused, wall = run_job(job, cfg, folder, key)
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
        metrics = read_metrics(folder)
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
                "logged_policy": "none" if job.kind == "teacher" else logged_policy(cfg),
            }
        )
    return log
