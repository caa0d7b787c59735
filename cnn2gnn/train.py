"""The generic training loop: ``train_one_epoch`` (steps of a recipe's loss), ``fit`` (epochs, evaluation, a metrics
line and a checkpoint per epoch, resume), and the optimizer and learning-rate schedule they use. Recipes (teacher.py,
student.py) supply the model, the step and the evaluation; run.py sets up what they share.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import load_training_state, load_weights, save_training_state, save_weights
from .config import OptimConfig
from .data import BatchIterator
from .distributed import SINGLE, World
from .errors import TrainingDivergedError, UserError

Step = Callable[[Any], dict[str, torch.Tensor]]  # batch -> named loss terms; "loss" is minimised


def make_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum) or AdamW over the parameters that require gradients."""
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """Per-step learning-rate factor: ``onecycle`` (linear warm-up over ``warmup`` of the steps, then cosine to 0),
    ``cosine`` (cosine to 0) or ``constant``."""
    total = max(total_steps, 1)
    warm = int(cfg.warmup * total) if cfg.schedule == "onecycle" else 0

    def factor(step: int) -> float:
        if cfg.schedule == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        t = min((step - warm) / max(total - warm, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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
    history: list[dict[str, Any]]  # one row per epoch, as written to metrics.jsonl
    best_epoch: int  # epoch with the highest validation accuracy (the last one without a validation split)
    saved_epoch: int  # the epoch whose weights the model holds on return (best_epoch under keep=best)
    seconds: float  # wall time of this call (the epochs run now, not those before a resume)


BEST = "best.safetensors"  # in run_dir/ckpt: the weights of the best epoch so far


def best_epoch(history: list[dict[str, Any]], select: str) -> int:
    """The first epoch with the highest ``select`` score; the last epoch when no row has one (no validation split)."""
    scored = [r for r in history if not math.isnan(r.get(select, math.nan))]
    return max(scored, key=lambda r: r[select])["epoch"] if scored else (history[-1]["epoch"] if history else -1)


def train_one_epoch(
    model: nn.Module,
    step: Step,
    batches: BatchIterator,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    grad_clip: float | None,
    desc: str,
    progress: bool,
    world: World = SINGLE,
) -> dict[str, float]:
    """One pass over ``batches``: the sample-weighted mean of every loss term ``step`` returns, as ``train_<term>``.
    With several processes (``world``) each step's terms are summed over them first: the means of the global batch.

    A NaN or infinite loss raises :class:`TrainingDivergedError` (a user error: lower the learning rate); with
    several processes, in all of them at the same step.
    """
    model.train()
    sums: dict[str, float] = {}
    seen = 0
    show = progress and world.main
    bar = tqdm(batches, desc=desc, disable=None if show else True, leave=False, dynamic_ncols=True)
    for batch in bar:
        terms = step(batch)
        b = len(batch.y)
        # each term times its rows, summed over the processes (float64: exact for one process)
        totals = world.sum(torch.stack([t.detach().double() * b for t in terms.values()])).tolist()
        batch_sums = dict(zip(terms, totals, strict=True))
        b *= world.size
        if not math.isfinite(batch_sums["loss"]):
            raise TrainingDivergedError(
                f"training diverged: the loss became {batch_sums['loss'] / b} at {desc} "
                f"(lr {scheduler.get_last_lr()[0]:.3g}); lower the learning rate (--lr or --set optim.lr=...) and "
                "start the run again"
            )
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        seen += b
        for key, value in batch_sums.items():
            sums[key] = sums.get(key, 0.0) + value
        bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", lr=f"{scheduler.get_last_lr()[0]:.3g}")
    return {f"train_{key}": value / max(seen, 1) for key, value in sums.items()}


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


def _resume(run_dir: Path, model: nn.Module, optimizer, scheduler) -> int:
    """Restore the last complete checkpoint of ``run_dir``; returns the epoch to start at (0 without one)."""
    state = load_training_state(run_dir, model)
    if state is None:
        return 0
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng_torch"])
    if torch.cuda.is_available() and "rng_cuda" in state:
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return int(state["epoch"]) + 1


def _checkpoint(run_dir: Path, epoch: int, model: nn.Module, optimizer, scheduler) -> None:
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng_torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state_all()
    save_training_state(run_dir, epoch, model, state)


def summary_writer():
    """TensorBoard's ``SummaryWriter`` class; a one-line :class:`UserError` when the package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        msg = "run.tensorboard=true needs the tensorboard package: pip install 'cnn2gnn[tensorboard]'"
        raise UserError(msg) from None
    return SummaryWriter


@contextlib.contextmanager
def tensorboard_scalars(run_dir: Path, *, enabled: bool, purge_step: int = 0):
    """A function ``log(row)`` that writes every numeric value of a metrics row as a TensorBoard scalar, at step
    ``row["epoch"]``, into ``run_dir/tensorboard/`` (a no-op unless ``enabled``); the writer is closed on exit, errors
    included. Events of an earlier run at steps >= ``purge_step`` (where a resumed run starts) are hidden."""
    if not enabled:
        yield lambda row: None
        return
    writer = summary_writer()(str(run_dir / "tensorboard"), purge_step=purge_step)

    def log(row: dict[str, Any]) -> None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                writer.add_scalar(key, value, row["epoch"])
        writer.flush()

    try:
        yield log
    finally:
        writer.close()


def fit(
    model: nn.Module,
    step: Step,
    train_batches: BatchIterator,
    evaluate: Callable[[], dict[str, float]],
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    epochs: int,
    run_dir: Path,
    grad_clip: float | None = None,
    resume: bool = False,
    progress: bool = True,
    select: str = "val_acc",
    keep: str = "best",
    tensorboard: bool = False,
    world: World = SINGLE,
) -> FitResult:
    """Train for ``epochs``: each epoch is :func:`train_one_epoch`, then ``evaluate()`` (validation scores only:
    the test split is for the saved model, once, never for choosing), a line in ``run_dir/metrics.jsonl`` and a
    checkpoint in ``run_dir/ckpt``. The weights of the epoch with the best ``select`` score are kept in
    ``ckpt/best.safetensors``; with ``keep="best"`` the model holds them on return, with ``"last"`` the last epoch's.

    With ``resume`` the run continues after the last complete checkpoint; on CPU with a fixed seed it ends with the
    same weights as an uninterrupted run (batch order and augmentation depend only on the seed and the epoch, and
    the RNG state is restored). The checkpoints of the finished epochs survive a diverged or interrupted run.
    With ``tensorboard`` every metrics line is also written as TensorBoard scalars (:func:`tensorboard_scalars`).

    Several processes (``world``, :mod:`cnn2gnn.distributed`): ``model`` is the unwrapped module (``step`` runs the
    wrapped one); every process resumes from the checkpoint, rank 0 alone evaluates and writes the metrics, the
    best weights and the checkpoint while the others wait, and all of them get its metrics row.
    """
    metrics_path, best_path = run_dir / "metrics.jsonl", run_dir / "ckpt" / BEST
    start = _resume(run_dir, model, optimizer, scheduler) if resume else 0
    history = _read_metrics(metrics_path, start - 1)
    best = best_epoch(history, select)
    world.barrier()  # every process has read the run folder before rank 0 writes to it
    if world.main:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in history))
    t_start = time.perf_counter()
    with tensorboard_scalars(run_dir, enabled=tensorboard and world.main, purge_step=start) as log_scalars:
        for epoch in range(start, epochs):
            train_batches.set_epoch(epoch)
            world.seed(train_batches.seed, epoch)
            t0 = time.perf_counter()
            losses = train_one_epoch(
                model, step, train_batches, optimizer, scheduler,
                grad_clip=grad_clip, desc=f"epoch {epoch + 1}/{epochs}", progress=progress, world=world,
            )  # fmt: skip
            seconds = time.perf_counter() - t0
            row = {"epoch": epoch, **losses, "lr": scheduler.get_last_lr()[0], "train_seconds": round(seconds, 3)}
            model.eval()
            if world.main:
                row.update(evaluate())
            row = world.share(row)  # rank 0's: its timing and validation scores
            history.append(row)
            new_best = best_epoch(history, select) == epoch  # a new best (or no validation split)
            best = epoch if new_best else best
            if world.main:
                with open(metrics_path, "a") as f:  # before the checkpoint: a resume drops rows past it, never misses
                    f.write(json.dumps(row) + "\n")
                log_scalars(row)
                if new_best:  # its weights, before the checkpoint that makes the epoch count as done
                    save_weights(best_path, model)
                _checkpoint(run_dir, epoch, model, optimizer, scheduler)
            world.barrier()  # no process runs ahead of the checkpoint
            if progress and world.main:
                shown = "  ".join(f"{k}={v:.4f}" for k, v in row.items() if k.endswith(("acc", "loss")))
                tqdm.write(f"epoch {epoch + 1}/{epochs}  {shown}  ({seconds:.1f}s)")
    saved = history[-1]["epoch"] if history else -1
    if keep == "best" and best != saved and best >= 0:
        load_weights(best_path, model, what=f"the best epoch ({best + 1})")
        saved = best
    world.sync(model)  # several processes: all hold rank 0's model (BatchNorm statistics are per process)
    return FitResult(history, best, saved, time.perf_counter() - t_start)
