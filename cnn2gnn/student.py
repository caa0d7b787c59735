"""The distillation recipe (docs/method.md sections 1-5): a frozen CNN teacher's soft outputs train the two-layer GNN
student; the same recipe without a teacher trains the CE baselines (``distill.teacher=null``; ``model.arch=mlp`` for
the same-width MLP). Built on the shared run set-up (run.py) and fit loop (train.py).
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from . import policy
from .checkpoint import atomic_write, load_model, weights_sha256
from .config import StudentConfig
from .data import DataBundle
from .distill import distillation_loss
from .errors import UserError
from .models import create_student
from .models.cnn import FrozenTeacher
from .run import Run, build_data, make_batches
from .train import accuracy, make_optimizer, predict_logits


def stratified_anchors(labels: torch.Tensor, m: int, seed: int) -> torch.Tensor:
    """Positions of ``m`` training samples with (close to) equal numbers per class, chosen by ``seed``; a split with
    unlabelled samples (label -1, few labels) gets ``m`` drawn uniformly, so the bank never uses hidden labels."""
    g = torch.Generator().manual_seed(seed)
    if bool((labels < 0).any()):
        return torch.randperm(len(labels), generator=g)[:m].sort().values
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


def logits_key(teacher_sha256: str, bundle: DataBundle) -> str:
    """What the cached training-split logits depend on: the teacher's files, the training images and labels as
    loaded (data, split, subset, size), and the input normalisation (the only transform: the cache is unaugmented)."""
    h = hashlib.sha256(teacher_sha256.encode())
    h.update(bundle.fingerprint.encode())
    for t in (bundle.train.images, bundle.train.labels):
        h.update(t.contiguous().numpy().tobytes())
    h.update(repr((list(bundle.mean), list(bundle.std), "eval")).encode())
    return h.hexdigest()[:20]


def teacher_logits(
    teacher: FrozenTeacher, teacher_dir: str, bundle: DataBundle, batch_size: int, device: torch.device
) -> torch.Tensor:
    """The teacher's logits on the unaugmented training split, cached in ``TEACHER/cache/`` under
    :func:`logits_key`: a changed teacher (retrained into the same folder) or other data never get old logits."""
    key = logits_key(weights_sha256(teacher_dir), bundle)
    path = Path(teacher_dir) / "cache" / f"train-logits-{key}.safetensors"
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


def teacher_view(student: DataBundle, teacher: DataBundle):
    """``f(x)``: a batch normalised for the student, at its size, as the teacher's data would give it (the
    student's normalisation undone, resized to the teacher's data size, the teacher's data normalisation)."""
    if student is teacher:
        return lambda x: x

    def stats(b: DataBundle) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(b.mean).view(1, -1, 1, 1), torch.tensor(b.std).view(1, -1, 1, 1)

    (s_mean, s_std), (t_mean, t_std), size = stats(student), stats(teacher), teacher.image_size

    def view(x: torch.Tensor) -> torch.Tensor:
        x = x * s_std.to(x) + s_mean.to(x)
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (x - t_mean.to(x)) / t_std.to(x)

    return view


FIRST_LAYER_WARNING = 2_000_000  # parameters of the first layer above which a run suggests a smaller input


def describe(run: Run, model: torch.nn.Module, bundle: DataBundle) -> None:
    """Say the student's size, and warn when its first layer (input pixels x hidden width) dominates it."""
    first = model.conv1 if hasattr(model, "conv1") else model.lin1
    n_first, n_all = (sum(p.numel() for p in m.parameters()) for m in (first, model))
    c, (h, w) = bundle.in_channels, bundle.image_size
    run.say(f"student: {n_all:,} parameters, {n_first:,} in its first layer ({c}x{h}x{w} inputs)")
    if n_first > FIRST_LAYER_WARNING:
        run.say(
            f"warning: the student's first layer has {n_first / 1e6:.1f}M parameters for {c}x{h}x{w} inputs; "
            f"--image-size {max(8, h // 4)} (or model.embed=patch) makes it about {(h // max(8, h // 4)) ** 2}x smaller"
        )


def build_student(cfg: StudentConfig, bundle: DataBundle) -> torch.nn.Module:
    """The student of ``cfg.model`` for this data, with an anchor bank of ``cfg.bank.size`` training images
    (stratified, chosen by the run's seed) when it is a graph student and the size is > 0."""
    shape = (bundle.in_channels, *bundle.image_size)
    size = len(bundle.train) if cfg.bank.size == "all" else cfg.bank.size
    bank = size if cfg.model.arch == "gnn" else 0
    in_features = shape[0] * shape[1] * shape[2]
    try:
        model = create_student(cfg.model, in_features, bundle.num_classes, image_shape=shape, bank_size=0)
    except ValueError as err:
        raise UserError(str(err)) from None
    if bank > 0:
        idx = stratified_anchors(bundle.train.labels, bank, cfg.run.seed)
        batch = next(iter(make_batches(bundle, bundle.train.subset(idx), len(idx), "cpu", train=False, seed=0)))
        model.set_bank(batch.x, batch.y, idx)
        model.bank.use_search(cfg.bank.search, nlist=cfg.bank.nlist, nprobe=cfg.bank.nprobe)
    return model


def train_student(
    cfg: StudentConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False
) -> dict[str, Any]:
    """Distil (or, without a teacher, train with CE) a student; writes the model folder ``out``. The saved model is
    the epoch of run.keep (the best validation accuracy by default); test accuracies are measured once, at the end.
    """
    size = cfg.model.image_size
    own = cfg.data if size is None else replace(cfg.data, image_size=size)  # the student's input size
    run = Run.start(cfg, out, resume=resume, overwrite=overwrite, data=own)
    cfg, bundle, device = run.cfg, run.bundle, run.device  # cfg with absolute paths
    model = build_student(cfg, bundle).to(device)
    describe(run, model, bundle)
    policies = policy.supported(model)
    graph = cfg.distill.train_graph if policies else policy.NONE
    if policies and graph not in policies:
        raise UserError(f"distill.train_graph={graph} needs bank.size > 0")

    teacher, cached, provenance = None, None, {}
    if cfg.distill.teacher:
        seen = bundle if size is None else build_data(cfg.data)  # the data at the teacher's resolution
        teacher, _ = load_teacher(cfg.distill.teacher, seen, device)
        provenance = {"teacher": {"path": cfg.distill.teacher, "sha256": weights_sha256(cfg.distill.teacher)}}
        if cfg.distill.cache_logits and not cfg.data.augment:
            with run.world.main_first():  # rank 0 computes and writes the cache, the others then read it
                cached = teacher_logits(teacher, cfg.distill.teacher, seen, cfg.run.eval_batch_size, device)
            cached = cached.to(device)
        view = teacher_view(bundle, seen)
    net = run.wrap(model)  # the frozen teacher is not wrapped: it has nothing to train
    # several processes: the batch graph of the global batch (the anchors graph needs none: each holds the bank)
    gather = run.world.gather if run.world.size > 1 and graph == "batch" else None
    forward = (lambda b: net(b.x)) if not policies else (lambda b: net(b.x, graph=graph, index=b.index, gather=gather))
    logged, _ = policy.resolve(model, graph if policies else None)  # the validation log uses the training graph
    eval_seed = cfg.run.seed + 1000
    evals = run.eval_batches(seed=eval_seed, shuffle=True)
    alpha, temperature = cfg.distill.alpha, cfg.distill.temperature

    def step(batch) -> dict[str, torch.Tensor]:
        t_logits = None
        if teacher is not None:
            t_logits = cached[batch.index] if cached is not None else teacher(view(batch.x))
        return distillation_loss(forward(batch), batch.y, t_logits, alpha=alpha, temperature=temperature)

    def evaluate() -> dict[str, float]:  # validation only: the test split is for the saved model, once
        return {
            f"{name}_acc": accuracy(predict_logits(logged, b), b.labels) for name, b in evals.items() if name == "val"
        }

    optimizer = make_optimizer(model.parameters(), cfg.optim)
    result, manifest = run.fit(model, step, run.train_batches(), evaluate, optimizer, manifest=provenance)
    bank = len(model.bank) if getattr(model, "bank", None) is not None else 0
    meta = {
        "kind": "student",
        "in_features": model.in_features,
        "train_graph": graph,
        "student": {"model": asdict(cfg.model), "bank": bank, "search": asdict(cfg.bank) | {"size": bank}},
        "distill": {**asdict(cfg.distill), **({"teacher_sha256": provenance["teacher"]["sha256"]} if teacher else {})},
    }
    run.save(model, meta)
    summary: dict[str, Any] = {
        "epochs": cfg.optim.epochs,
        "best_epoch": result.best_epoch,
        "saved_epoch": result.saved_epoch,
        "keep": cfg.run.keep,
        "seconds": round(result.seconds, 1),
        "parameters": manifest["parameters"],
        "train_graph": graph,
        # how the logged val_acc was measured: `cnn2gnn evaluate --split val` with these options gives it again
        "val_logged": {"policy": graph, "batch_size": cfg.run.eval_batch_size, "shuffle_seed": eval_seed},
    }
    for name in policies or (policy.NONE,):
        fn, _ = policy.resolve(model, None if name == policy.NONE else name)
        for split, b in evals.items():
            summary[f"{split}_acc_{name}"] = accuracy(predict_logits(fn, b), b.labels)
    return run.finish(summary)
