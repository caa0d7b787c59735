"""Where the benchmark's numbers were measured (docs/method.md section 7): platform, cores, torch threads, load average
and package versions, stated at the top of every report.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from ..run import environment

VERSIONS = ("cnn2gnn", "python", "torch", "torchvision", "numpy")  # the keys of `environment` that are versions


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the platform has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine() -> dict[str, Any]:
    """Where the numbers were measured: platform, cores, threads, load, package versions (matplotlib included)."""
    import matplotlib

    env = environment()
    return {
        "platform": env["platform"],
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": env["threads"],
        "load_average": load_average(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": {**{k: env[k] for k in VERSIONS}, "matplotlib": matplotlib.__version__},
    }
