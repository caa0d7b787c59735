"""Training loops: one generic ``fit`` (epochs of steps, evaluation, metrics, per-epoch checkpoints, resume) and
the teacher run built on it. The student's distillation run lives in ``student.py`` and uses the same ``fit``.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import atomic_write_json, load_training_state, save_model_dir, save_training_state
from .config import OptimConfig, TeacherConfig, dump_yaml
from .data import Augment, BatchIterator, DataBundle, Split, load_dataset
from .errors import TrainingDivergedError, UserError
from .models.cnn import count_parameters, create_teacher


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' asked for, but CUDA is not available here")
    return device


def setup_run(seed: int, threads: int | None) -> None:
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)


def make_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise UserError(f"unknown optimizer '{cfg.optimizer}' (known: sgd, adamw)")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """Per-step learning-rate schedule: ``onecycle`` (linear warm-up, cosine to 0), ``cosine`` or ``constant``."""
    total = max(total_steps, 1)
    warm = int(cfg.warmup * total) if cfg.schedule == "onecycle" else 0

    def factor(step: int) -> float:
        if cfg.schedule == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        t = min((step - warm) / max(total - warm, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * t))

    if cfg.schedule not in ("onecycle", "cosine", "constant"):
        raise UserError(f"unknown schedule '{cfg.schedule}' (known: onecycle, cosine, constant)")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def run_manifest(cfg: Any, bundle: DataBundle, device: torch.device, extra: dict | None = None) -> dict[str, Any]:
    import numpy
    import torchvision

    return {
        "cnn2gnn": __version__,
        "command": " ".join(sys.argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "seed": cfg.run.seed,
        "data": data_summary(bundle),
        **(extra or {}),
    }


def data_summary(bundle: DataBundle) -> dict[str, Any]:
    """What a manifest or report says about the data: name, fingerprint, split sizes."""
    return {
        "name": bundle.name,
        "fingerprint": bundle.fingerprint,
        "train": len(bundle.train),
        "val": len(bundle.val),
        "test": len(bundle.test),
    }


@torch.no_grad()
def predict_logits(model: Callable[[torch.Tensor], torch.Tensor], batches: BatchIterator) -> torch.Tensor:
    """Logits for every sample of the iterator's split, in split order (works for shuffled iterators too)."""
    out = None
    for batch in batches:
        logits = model(batch.x).float().cpu()
        if out is None:
            out = torch.empty(len(batches.labels), logits.shape[1])
        out[batch.index.cpu()] = logits
    return out if out is not None else torch.empty(0)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels.cpu()).float().mean()) if len(labels) else float("nan")


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int
    seconds: float


def _read_metrics(path: Path, upto_epoch: int) -> list[dict[str, Any]]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("epoch", math.inf) <= upto_epoch:
                rows.append(row)
    return rows


def fit(
    model: nn.Module,
    step: Callable[[Any], dict[str, torch.Tensor]],
    train_batches: BatchIterator,
    evaluate: Callable[[], dict[str, float]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    epochs: int,
    run_dir: Path,
    grad_clip: float | None = None,
    resume: bool = False,
    progress: bool = True,
    select: str = "val_acc",
) -> FitResult:
    """Train for ``epochs``: each step calls ``step(batch)`` for a dict of named losses (key ``loss`` is minimised),
    each epoch ends with ``evaluate()``, a line in ``run_dir/metrics.jsonl`` and a checkpoint in ``run_dir/ckpt``.

    With ``resume`` the run continues after the last complete checkpoint; on CPU with a fixed seed it ends with the
    same weights as an uninterrupted run (batch order and augmentation depend only on the seed and the epoch, and
    the RNG state is restored). A NaN or infinite loss stops the run with :class:`TrainingDivergedError` (a user
    error: lower the learning rate); the checkpoints of the finished epochs are kept.
    """
    metrics_path = run_dir / "metrics.jsonl"
    start, history = 0, []
    if resume:
        state = load_training_state(run_dir, model)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng_torch"])
            if torch.cuda.is_available() and "rng_cuda" in state:
                torch.cuda.set_rng_state_all(state["rng_cuda"])
            start = int(state["epoch"]) + 1
            history = _read_metrics(metrics_path, state["epoch"])
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in history))
    t_start = time.perf_counter()
    for epoch in range(start, epochs):
        model.train()
        train_batches.set_epoch(epoch)
        sums: dict[str, float] = {}
        n_seen = 0
        t0 = time.perf_counter()
        bar = tqdm(
            train_batches,
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=None if progress else True,
            leave=False,
            dynamic_ncols=True,
        )
        for batch in bar:
            terms = step(batch)
            loss = terms["loss"]
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"training diverged: the loss became {loss.item()} at epoch {epoch + 1}/{epochs} (lr "
                    f"{scheduler.get_last_lr()[0]:.3g}); lower the learning rate (--lr or --set optim.lr=...) and "
                    "start the run again"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()
            b = len(batch.y)
            n_seen += b
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach()) * b
            bar.set_postfix(loss=f"{sums['loss'] / n_seen:.4f}", lr=f"{scheduler.get_last_lr()[0]:.3g}")
        train_seconds = time.perf_counter() - t0
        row = {
            "epoch": epoch,
            **{f"train_{k}": v / max(n_seen, 1) for k, v in sums.items()},
            "lr": scheduler.get_last_lr()[0],
            "train_seconds": round(train_seconds, 3),
        }
        model.eval()
        row.update(evaluate())
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng_torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        history.append(row)
        with open(metrics_path, "a") as f:  # before the checkpoint: a resume drops rows past it, never misses one
            f.write(json.dumps(row) + "\n")
        save_training_state(run_dir, epoch, model, state)
        if progress:
            shown = "  ".join(f"{k}={v:.4f}" for k, v in row.items() if k.endswith(("acc", "loss")))
            tqdm.write(f"epoch {epoch + 1}/{epochs}  {shown}  ({train_seconds:.1f}s)")
    scored = [r for r in history if not math.isnan(r.get(select, math.nan))]
    best = max(scored, key=lambda r: r[select])["epoch"] if scored else len(history) - 1
    return FitResult(history, best, time.perf_counter() - t_start)


def fit_run(
    cfg,
    out: Path,
    model: nn.Module,
    bundle: DataBundle,
    device: torch.device,
    step,
    train_batches,
    evaluate,
    optimizer: torch.optim.Optimizer,
    *,
    resume: bool,
) -> tuple[FitResult, dict[str, Any]]:
    """Write the run folder's resolved config and manifest, then :func:`fit` with the config's schedule."""
    out.mkdir(parents=True, exist_ok=True)
    dump_yaml(cfg, out / "config.yaml")
    manifest = run_manifest(cfg, bundle, device, {"parameters": count_parameters(model)})
    atomic_write_json(out / "manifest.json", manifest)
    scheduler = make_scheduler(optimizer, cfg.optim, cfg.optim.epochs * len(train_batches))
    result = fit(
        model,
        step,
        train_batches,
        evaluate,
        optimizer,
        scheduler,
        epochs=cfg.optim.epochs,
        run_dir=out,
        grad_clip=cfg.optim.grad_clip,
        resume=resume,
        progress=cfg.run.progress,
    )
    return result, manifest


# --------------------------------------------------------------------------------------------------------------
# The teacher run.


def build_data(cfg) -> DataBundle:
    d = cfg.data
    return load_dataset(
        d.name,
        d.root,
        val_fraction=d.val_fraction,
        seed=d.split_seed,
        limit_train=d.limit_train,
        limit_test=d.limit_test,
        image_size=d.image_size,
        download=d.download,
    )


def make_batches(
    bundle: DataBundle,
    split: Split,
    batch_size: int,
    device,
    *,
    train: bool,
    seed: int,
    augment: Augment | None = None,
    shuffle: bool | None = None,
) -> BatchIterator:
    """Batches of ``split``; training shuffles, augments and drops a ragged last batch. Evaluation of a graph that
    depends on batch-mates passes ``shuffle=True`` (a fixed seeded permutation, never class-sorted)."""
    shuffle = train if shuffle is None else shuffle
    return BatchIterator(
        split,
        batch_size,
        mean=bundle.mean,
        std=bundle.std,
        shuffle=shuffle,
        seed=seed,
        drop_last=train and len(split) > batch_size,
        augment=augment if train else None,
        device=device,
    )


def data_meta(bundle: DataBundle) -> dict[str, Any]:
    return {
        "data": bundle.name,
        "classes": list(bundle.classes),
        "num_classes": bundle.num_classes,
        "in_channels": bundle.in_channels,
        "image_size": list(bundle.image_size),
        "mean": list(bundle.mean),
        "std": list(bundle.std),
        "fingerprint": bundle.fingerprint,
    }


def train_teacher(cfg: TeacherConfig, out: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Train a CNN teacher from scratch; writes model, config, metrics and manifest into ``out``."""
    out = Path(out)
    setup_run(cfg.run.seed, cfg.run.threads)
    device = resolve_device(cfg.run.device)
    bundle = build_data(cfg)
    model = create_teacher(
        cfg.model.arch, bundle.num_classes, bundle.in_channels, max(bundle.image_size), cfg.model.width
    ).to(device)
    augment = Augment(cfg.data.pad, cfg.data.hflip) if cfg.data.augment else None
    train_b = make_batches(
        bundle, bundle.train, cfg.optim.batch_size, device, train=True, seed=cfg.run.seed, augment=augment
    )
    evals = {
        name: make_batches(bundle, split, cfg.run.eval_batch_size, device, train=False, seed=cfg.run.seed)
        for name, split in (("val", bundle.val), ("test", bundle.test))
        if len(split)
    }
    optimizer = make_optimizer(model.parameters(), cfg.optim)
    smoothing = cfg.optim.label_smoothing

    def step(batch) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(model(batch.x), batch.y, label_smoothing=smoothing)}

    def evaluate() -> dict[str, float]:
        return {f"{name}_acc": accuracy(predict_logits(model, b), b.labels) for name, b in evals.items()}

    result, manifest = fit_run(cfg, out, model, bundle, device, step, train_b, evaluate, optimizer, resume=resume)
    meta = {"kind": "teacher", "arch": cfg.model.arch, "width": cfg.model.width, **data_meta(bundle)}
    save_model_dir(out, model.cpu(), meta)
    last = result.history[-1] if result.history else {}
    summary = {
        "train_acc": None,
        "val_acc": last.get("val_acc"),
        "test_acc": last.get("test_acc"),
        "best_epoch": result.best_epoch,
        "epochs": cfg.optim.epochs,
        "seconds": round(result.seconds, 1),
        "parameters": manifest["parameters"],
    }
    model.to(device).eval()
    train_eval = make_batches(bundle, bundle.train, cfg.run.eval_batch_size, device, train=False, seed=0)
    summary["train_acc"] = accuracy(predict_logits(model, train_eval), bundle.train.labels)
    atomic_write_json(out / "summary.json", summary)
    return summary
