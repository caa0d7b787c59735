"""The benchmark's budgets (docs/method.md s. 6-7): which teachers, seeds, epochs and sweeps ``cnn2gnn bench`` runs.

A preset is a YAML file of :class:`Preset`'s keys, shipped in ``cnn2gnn/bench/presets/`` (tiny, quick, full, long)
or the user's own (``--preset my.yaml``); ``base: NAME`` starts from another preset and replaces its top-level keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..config import from_dict, read_yaml
from ..errors import ConfigError, UserError

PRESET_DIR = Path(__file__).with_name("presets")


def _tuples(obj: Any) -> None:
    """Store the lists that YAML gives as tuples, so a preset stays frozen and hashable."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, list):
            object.__setattr__(obj, f.name, tuple(value))


@dataclass(frozen=True)
class Teacher:
    arch: str  # teacher architecture (see `cnn2gnn.models.cnn.TEACHERS`)
    epochs: int  # training epochs
    overrides: tuple[str, ...] = ()  # extra config overrides of this teacher (e.g. data.augment=true)

    def __post_init__(self) -> None:
        _tuples(self)


@dataclass(frozen=True)
class Sweep:
    name: str  # short name, used in run folder and figure names (e.g. "k")
    key: str  # the config key varied (e.g. "model.k")
    # the values tried; the one equal to the CNN2GNN row's config reuses that row's runs (int before float in the
    # annotation: a YAML 3 stays an int, and so the row name k-3)
    values: tuple[bool | int | float | str, ...]
    title: str  # axis label
    base: tuple[str, ...] = ()  # overrides of the swept model besides the key (e.g. model.aggregate=gcn)
    log_x: bool = False  # logarithmic x axis in the figure

    def __post_init__(self) -> None:
        _tuples(self)


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
    speed_seconds: float = 2.0  # seconds each row's images/s is timed, per batch size, over the interleaved rounds
    neighbours: int = 8  # test images in the nearest-anchors picture
    students: tuple[str, ...] = ()  # the baseline rows to train (names of cnn2gnn.bench.plan.STUDENTS); () = all

    def __post_init__(self) -> None:
        _tuples(self)


def preset_names() -> list[str]:
    """The shipped presets, by name."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _preset_file(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    if str(name_or_path) in preset_names():
        return PRESET_DIR / f"{name_or_path}.yaml"
    path = Path(name_or_path)
    if relative_to is not None and not path.is_absolute():
        path = relative_to / path
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    raise UserError(
        f"unknown preset '{name_or_path}' (known: {', '.join(preset_names())}; or a path to a preset .yaml file)"
    )


def _preset_data(name_or_path: str | Path, relative_to: Path | None, seen: tuple[Path, ...]) -> dict[str, Any]:
    """The preset's keys with its ``base`` chain resolved: the file's top-level keys replace those of its base."""
    path = _preset_file(name_or_path, relative_to)
    if path.resolve() in seen:
        raise ConfigError(f"preset {path}: 'base' leads back to itself")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"preset {path}: 'base' must be a preset name or file, got {base!r}")
    return {**_preset_data(base, path.parent, (*seen, path.resolve())), **data}


def load_preset(name_or_path: str | Path) -> Preset:
    """The preset named ``name_or_path`` (one of :func:`preset_names`) or read from that YAML file.

    A relative ``base`` path in a file is relative to that file's folder. Unknown keys, values of the wrong type and
    missing required keys are :class:`~cnn2gnn.errors.ConfigError` naming the key and the file.
    """
    data = _preset_data(name_or_path, None, ())
    where = name_or_path if str(name_or_path) in preset_names() else Path(name_or_path)
    try:
        return from_dict(Preset, data)
    except ConfigError as err:
        raise ConfigError(f"preset {where}: {err}") from None


# every shipped preset, read once (read-only)
PRESETS: Mapping[str, Preset] = MappingProxyType({name: load_preset(name) for name in preset_names()})
