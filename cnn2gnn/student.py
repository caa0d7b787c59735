"""The distillation run (METHOD.md sections 1-5): a frozen CNN teacher's soft outputs train the two-layer GNN
student; the same loop without a teacher trains the CE baselines (``distill.teacher=null``, ``model.aggregate=none``
for the same-width MLP).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .checkpoint import atomic_write, atomic_write_json, load_model, save_model_dir
from .config import StudentConfig
from .data import Augment, DataBundle
from .distill import distillation_loss
from .errors import UserError
from .models.cnn import FrozenTeacher
from .models.gnn import GNNStudent
from .train import (
    accuracy,
    build_data,
    data_meta,
    fit_run,
    make_batches,
    make_optimizer,
    predict_logits,
    resolve_device,
    setup_run,
)


def student_kwargs(cfg: StudentConfig, image_shape: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """The GNNStudent constructor arguments: every model.* key but the bank size and the training graph, plus the
    images' (C, H, W) when an input embedding needs it."""
    kwargs = asdict(cfg.model)
    del kwargs["anchors"], kwargs["train_graph"]
    if cfg.model.embed != "none":
        kwargs["image_shape"] = list(image_shape) if image_shape is not None else None
    return kwargs


def stratified_anchors(labels: torch.Tensor, m: int, seed: int) -> torch.Tensor:
    """Positions of ``m`` training samples with (close to) equal numbers per class, chosen by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    classes = labels.unique()
    per = [torch.nonzero(labels == c).flatten() for c in classes]
    per = [idx[torch.randperm(len(idx), generator=g)] for idx in per]
    take, rank = [], 0
    while len(take) < m and any(rank < len(idx) for idx in per):
        take.extend(int(idx[rank]) for idx in per if rank < len(idx))
        rank += 1
    return torch.tensor(sorted(take[:m]), dtype=torch.long)


def load_teacher(path: str, bundle: DataBundle, device: torch.device) -> tuple[FrozenTeacher, dict[str, Any]]:
    model, meta = load_model(path, device)
    if meta["kind"] != "teacher":
        raise UserError(f"{path}: is a {meta['kind']}, not a teacher (train one with `cnn2gnn teacher`)")
    if meta["num_classes"] != bundle.num_classes or meta.get("fingerprint") != bundle.fingerprint:
        raise UserError(
            f"{path}: teacher was trained on '{meta.get('data')}' ({meta['num_classes']} classes, data "
            f"{meta.get('fingerprint')}), not on this '{bundle.name}' ({bundle.fingerprint})"
        )
    return FrozenTeacher(model), meta


def teacher_logits(
    teacher: FrozenTeacher, teacher_dir: str, bundle: DataBundle, batch_size: int, device: torch.device
) -> torch.Tensor:
    """The teacher's logits on the unaugmented training split, cached in ``TEACHER/cache/`` by data fingerprint."""
    key = f"train-logits-{bundle.fingerprint}-{len(bundle.train)}-{int(bundle.train.labels.sum())}.safetensors"
    path = Path(teacher_dir) / "cache" / key
    if path.exists():
        try:
            logits = load_file(str(path))["logits"]
            if logits.shape[0] == len(bundle.train):
                return logits
        except Exception:  # noqa: BLE001 - a broken cache is recomputed
            pass
    logits = predict_logits(teacher, make_batches(bundle, bundle.train, batch_size, device, train=False, seed=0))
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # a read-only teacher folder only costs the cache
        atomic_write(path, lambda tmp: save_file({"logits": logits.contiguous()}, tmp))
    return logits


def train_student(cfg: StudentConfig, out: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Distil (or, without a teacher, train with CE) a GNN student; writes the model folder ``out``."""
    out = Path(out)
    setup_run(cfg.run.seed, cfg.run.threads)
    device = resolve_device(cfg.run.device)
    bundle = build_data(cfg)
    mc = cfg.model
    if mc.train_graph not in ("batch", "anchors"):
        raise UserError(f"model.train_graph must be 'batch' or 'anchors', got '{mc.train_graph}'")
    if mc.train_graph == "anchors" and mc.aggregate != "none" and mc.anchors <= 0:
        raise UserError("model.train_graph=anchors needs model.anchors > 0")
    in_features = bundle.in_channels * bundle.image_size[0] * bundle.image_size[1]
    kwargs = student_kwargs(cfg, (bundle.in_channels, *bundle.image_size))
    try:
        model = GNNStudent(in_features, bundle.num_classes, **kwargs)
    except ValueError as err:
        raise UserError(str(err)) from None
    anchors = 0
    if mc.anchors > 0 and mc.aggregate != "none":
        idx = stratified_anchors(bundle.train.labels, mc.anchors, cfg.run.seed)
        anchors = len(idx)
        bank = make_batches(bundle, bundle.train.subset(idx), len(idx), "cpu", train=False, seed=0)
        batch = next(iter(bank))
        model.set_anchors(batch.x, batch.y, idx)
    model.to(device)

    teacher, cached = None, None
    if cfg.distill.teacher:
        teacher, _ = load_teacher(cfg.distill.teacher, bundle, device)
        if cfg.distill.cache_logits and not cfg.data.augment:
            cached = teacher_logits(teacher, cfg.distill.teacher, bundle, cfg.run.eval_batch_size, device).to(device)
    augment = Augment(cfg.data.pad, cfg.data.hflip) if cfg.data.augment else None
    train_b = make_batches(
        bundle, bundle.train, cfg.optim.batch_size, device, train=True, seed=cfg.run.seed, augment=augment
    )
    graph = mc.train_graph if mc.aggregate != "none" else "batch"
    eval_seed = cfg.run.seed + 1000
    evals = {
        name: make_batches(bundle, split, cfg.run.eval_batch_size, device, train=False, seed=eval_seed, shuffle=True)
        for name, split in (("val", bundle.val), ("test", bundle.test))
        if len(split)
    }
    optimizer = make_optimizer(model.parameters(), cfg.optim)
    alpha, temperature = cfg.distill.alpha, cfg.distill.temperature

    def step(batch) -> dict[str, torch.Tensor]:
        logits = model(batch.x, graph=graph, index=batch.index)
        t_logits = None
        if teacher is not None:
            t_logits = cached[batch.index] if cached is not None else teacher(batch.x)
        return distillation_loss(logits, batch.y, t_logits, alpha=alpha, temperature=temperature)

    def evaluate() -> dict[str, float]:
        return {
            f"{name}_acc": accuracy(predict_logits(lambda x: model(x, graph=graph), b), b.labels)
            for name, b in evals.items()
        }

    result, manifest = fit_run(cfg, out, model, bundle, device, step, train_b, evaluate, optimizer, resume=resume)
    meta = {
        "kind": "student",
        "in_features": in_features,
        "train_graph": graph,
        **data_meta(bundle),
        "student": {"kwargs": kwargs, "anchors": anchors},
        "distill": asdict(cfg.distill),
    }
    save_model_dir(out, model.cpu(), meta)
    model.to(device).eval()
    summary: dict[str, Any] = {
        "epochs": cfg.optim.epochs,
        "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 1),
        "parameters": manifest["parameters"],
        "train_graph": graph,
    }
    policies = ["batch", "anchors"] if anchors else ["batch"]
    if mc.aggregate == "none":
        policies = ["none"]
    for policy in policies:
        g = "batch" if policy == "none" else policy
        for name, b in evals.items():
            summary[f"{name}_acc_{policy}"] = accuracy(predict_logits(lambda x, g=g: model(x, graph=g), b), b.labels)
    atomic_write_json(out / "summary.json", summary)
    return summary
