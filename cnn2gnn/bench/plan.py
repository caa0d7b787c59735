"""What a preset trains (docs/method.md section 6): the rows (teachers, the baselines, CNN2GNN, sweep points), one job
per row and seed, and the config hash that names a run's folder so a finished run is reused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import StudentConfig, TeacherConfig, build_config, to_dict
from ..errors import UserError
from .presets import Preset

# name -> (label, overrides, distilled): the baselines of docs/method.md section 6 and the method itself
STUDENTS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "mlp-ce": ("MLP (same width), CE", ("model.arch=mlp",), False),
    "mlp-kd": ("MLP (same width), KD", ("model.arch=mlp",), True),
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
    runs: list[dict[str, Any]] = field(default_factory=list)  # one per seed, filled by `runs.train_jobs`


def override_value(value: Any) -> str:
    """``value`` written for a ``key=value`` override (JSON is YAML: strings quoted, booleans lower case)."""
    return json.dumps(value)


def plan_rows(preset: Preset) -> tuple[dict[str, Row], dict[str, list[tuple[Any, str]]]]:
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

    unknown = sorted(set(preset.students) - set(STUDENTS))
    if unknown:
        raise UserError(f"preset: unknown student row '{unknown[0]}' (known: {', '.join(STUDENTS)})")
    for name, (label, overrides, kd) in STUDENTS.items():
        if not preset.students or name in preset.students or name == METHOD:
            add(name, label, overrides, kd, "main")
    sweeps: dict[str, list[tuple[Any, str]]] = {}
    base = STUDENTS[METHOD][1]
    for sw in preset.sweeps:
        points = []
        for value in sw.values:
            name = f"{sw.name}-{str(value).lower()}"
            label = f"CNN2GNN, {sw.key}={value}" + (f" ({', '.join(sw.base)})" if sw.base else "")
            overrides = (*base, *sw.base, f"{sw.key}={override_value(value)}")
            points.append((value, add(name, label, overrides, True, "sweep")))
        sweeps[sw.name] = points
    return rows, sweeps


def plan(preset: Preset) -> list[Job]:
    """The training jobs of a preset, teachers first (a student needs its teacher's folder)."""
    rows, _ = plan_rows(preset)
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
