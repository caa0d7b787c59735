"""The benchmark of docs/method.md s. 6-7 (``cnn2gnn bench``): the teachers and every baseline trained on one split
with the same seeds (finished runs reused, keyed by a hash of their config), accuracy under both inference policies,
cost, sensitivity sweeps and the learned graph, written as ``report.md``, ``results.json`` and PNG figures.
"""

from .core import run_bench
from .figures import figures
from .plan import METHOD, REFERENCE, STUDENTS, Job, config_hash, plan
from .presets import PRESETS, Preset, Sweep, Teacher, load_preset, preset_names
from .report import report, targets

__all__ = [
    "METHOD",
    "PRESETS",
    "REFERENCE",
    "STUDENTS",
    "Job",
    "Preset",
    "Sweep",
    "Teacher",
    "config_hash",
    "figures",
    "load_preset",
    "plan",
    "preset_names",
    "report",
    "run_bench",
    "targets",
]
