"""Model folders and resumable training state, written atomically and read without unpickling.

A model folder holds ``model.safetensors`` (weights), ``meta.json`` (what to build: kind, architecture, classes,
normalisation), ``config.yaml`` (the resolved run config), ``metrics.jsonl`` and ``manifest.json``. Training state
for ``--resume`` lives in ``ckpt/``: per-epoch weights (safetensors) + optimizer/scheduler/RNG state (a dict of
tensors and numbers, loaded with ``torch.load(weights_only=True)``), made current by an atomic ``latest.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import CheckpointError, UserError

FORMAT_VERSION = 2  # 2: students described by their model config (cnn2gnn/compat.py reads 1)
WEIGHTS = "model.safetensors"
META = "meta.json"


def atomic_write(path: str | Path, write) -> None:
    """Write through ``write(tmp_path)`` into a temporary file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions a plain open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path, what: str = "file") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing ({what})")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable or corrupted {what} ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: corrupted {what} (expected a JSON object)")
    return data


def _contiguous_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_weights(path: str | Path, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
    meta = {"format_version": str(FORMAT_VERSION), **(metadata or {})}
    atomic_write(path, lambda tmp: save_file(_contiguous_state(model), tmp, metadata=meta))


def load_weights(path: str | Path, model: nn.Module, what: str = "", convert=None) -> None:
    """Load safetensors weights into ``model``; any mismatch is a one-line :class:`CheckpointError` naming the file.
    ``convert`` renames the stored weights first (a folder of an older format, see :mod:`cnn2gnn.compat`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing weights file")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: truncated or corrupted weights file ({str(err).splitlines()[0]})") from None
    if convert is not None:
        state = convert(state)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    label = f" for {what}" if what else ""
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{path}: weights do not match the model{label} ({detail})")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: weights do not match the model{label}: '{key}' has shape {tuple(state[key].shape)}, "
                f"expected {tuple(tensor.shape)} (another architecture or class count?)"
            )
    model.load_state_dict(state)


def file_sha256(*paths: str | Path) -> str:
    """A sha256 of the files' bytes, in order, 16 hex digits; an unreadable file is a :class:`CheckpointError`."""
    h = hashlib.sha256()
    for path in map(Path, paths):
        try:
            with open(path, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(block)
        except OSError as err:
            raise CheckpointError(f"{path}: unreadable ({err.strerror or err})") from None
    return h.hexdigest()[:16]


def weights_sha256(model_dir: str | Path) -> str:
    """A sha256 of a model folder's weights and description (what its outputs depend on), 16 hex digits."""
    return file_sha256(Path(model_dir) / WEIGHTS, Path(model_dir) / META)


def save_model_dir(out: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``meta.json`` (with the format version) into ``out``."""
    out = Path(out)
    save_weights(out / WEIGHTS, model, {"kind": str(meta.get("kind", ""))})
    atomic_write_json(out / META, {"format_version": FORMAT_VERSION, **meta})


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise CheckpointError(f"{model_dir}: no such model folder")
    if not model_dir.is_dir():
        raise CheckpointError(f"{model_dir}: expected a model folder (with {META} and {WEIGHTS}), got a file")
    meta = read_json(model_dir / META, "model description")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"{model_dir / META}: corrupted model description (no format_version)")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{model_dir / META}: format version {version} is newer than this cnn2gnn reads ({FORMAT_VERSION}); "
            "upgrade cnn2gnn"
        )
    for key in ("kind", "num_classes"):
        if key not in meta:
            raise CheckpointError(f"{model_dir / META}: corrupted model description (no '{key}')")
    return meta


# --------------------------------------------------------------------------------------------------------------
# Resumable training state.


def save_training_state(run_dir: str | Path, epoch: int, model: nn.Module, state: dict[str, Any], keep: int = 1):
    """Checkpoint the end of ``epoch``: weights + state, then point ``ckpt/latest.json`` at them; prune old ones."""
    ckpt = Path(run_dir) / "ckpt"
    stem = f"epoch{epoch:04d}"
    save_weights(ckpt / f"{stem}.safetensors", model)
    atomic_write(ckpt / f"{stem}.state.pt", lambda tmp: torch.save({"epoch": epoch, **state}, tmp))
    atomic_write_json(ckpt / "latest.json", {"format_version": FORMAT_VERSION, "epoch": epoch, "stem": stem})
    for old in sorted(ckpt.glob("epoch*.safetensors"))[:-keep]:
        old.unlink(missing_ok=True)
        old.with_name(old.name.replace(".safetensors", ".state.pt")).unlink(missing_ok=True)


def load_training_state(run_dir: str | Path, model: nn.Module) -> dict[str, Any] | None:
    """Load the last complete checkpoint of ``run_dir`` into ``model``; returns its state or None if there is none."""
    ckpt = Path(run_dir) / "ckpt"
    if not (ckpt / "latest.json").exists():
        return None
    latest = read_json(ckpt / "latest.json", "checkpoint pointer")
    if latest.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{ckpt / 'latest.json'}: written by a newer cnn2gnn")
    stem = latest.get("stem")
    if not isinstance(stem, str):
        raise CheckpointError(f"{ckpt / 'latest.json'}: corrupted checkpoint pointer")
    load_weights(ckpt / f"{stem}.safetensors", model)
    path = ckpt / f"{stem}.state.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing training state") from None
    except Exception as err:  # noqa: BLE001 - any failure to read it is a corrupted file
        raise CheckpointError(f"{path}: truncated or corrupted training state ({str(err).splitlines()[0]})") from None
    return state


# --------------------------------------------------------------------------------------------------------------
# Model folders -> modules.


def build_model(meta: dict[str, Any]) -> nn.Module:
    """An untrained module of the kind and shape ``meta`` (in today's format) describes; :func:`load_model` loads
    its weights."""
    kind = meta["kind"]
    try:
        if kind == "teacher":
            from .models.cnn import create_teacher

            return create_teacher(
                meta["arch"], meta["num_classes"], meta["in_channels"], max(meta["image_size"]), meta.get("width", 16),
                input_size=meta.get("input_size"), input_norm=meta.get("input_norm", "auto"),
                data_mean=meta.get("mean", (0.5,)), data_std=meta.get("std", (0.25,)),
            )  # fmt: skip
        if kind == "student":
            from .config import StudentModelConfig, from_dict
            from .models import create_student

            spec = meta["student"]
            shape = [meta["in_channels"], *meta["image_size"]] if "in_channels" in meta else None
            cfg = from_dict(StudentModelConfig, spec["model"])
            model = create_student(
                cfg, meta["in_features"], meta["num_classes"], image_shape=shape, bank_size=int(spec["bank"])
            )
            if getattr(model, "bank", None) is not None and "search" in spec:
                s = spec["search"]
                model.bank.use_search(s["search"], nlist=s.get("nlist"), nprobe=s.get("nprobe", 16))
            return model
    except (KeyError, TypeError, ValueError, UserError) as err:  # UserError: an architecture the registry lacks
        raise CheckpointError(f"{META}: cannot build a {kind} from this description ({err!r})") from None
    raise CheckpointError(f"{META}: unknown model kind '{kind}' (known: teacher, student)")


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Read a model folder written by ``cnn2gnn teacher`` or ``cnn2gnn distill``: (module in eval mode, meta)."""
    from .compat import upgrade

    model_dir = Path(model_dir)
    meta, convert = upgrade(read_meta(model_dir))
    try:
        model = build_model(meta)
    except CheckpointError as err:
        raise CheckpointError(f"{model_dir}/{err}") from None
    what = f"{meta['kind']} {meta.get('arch', '')}".strip()
    load_weights(model_dir / WEIGHTS, model, what=what, convert=convert)
    return model.to(device).eval(), meta
