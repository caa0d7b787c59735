"""The teacher recipe (docs/method.md section 1): a CNN from the registry trained from scratch with cross-entropy,
on the shared run set-up (run.py) and fit loop (train.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .checkpoint import file_sha256
from .config import TeacherConfig
from .data.regimes import labelled
from .models.cnn import create_teacher
from .run import Run, make_batches
from .train import accuracy, make_optimizer, predict_logits


def train_teacher(
    cfg: TeacherConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False
) -> dict[str, Any]:
    """Train a CNN teacher; writes model, config, metrics, manifest and summary into ``out``. The saved model is
    the epoch of run.keep (the best validation accuracy by default); its test accuracy is measured once, at the end.
    """
    run = Run.start(cfg, out, resume=resume, overwrite=overwrite)
    bundle, device = run.bundle, run.device
    mc = cfg.model
    model = create_teacher(
        mc.arch, bundle.num_classes, bundle.in_channels, max(bundle.image_size), mc.width, weights=mc.weights,
        pretrained=mc.pretrained, input_size=mc.input_size, input_norm=mc.input_norm, data_mean=bundle.mean,
        data_std=bundle.std,
    )  # fmt: skip
    model.to(device)
    if getattr(model, "head_loaded", None) is False:
        run.say(f"warning: the head in {mc.weights} does not fit {bundle.num_classes} classes: a new head is trained")
    adapter = getattr(model, "adapter", None)
    recorded = {"input_size": adapter.size, "input_norm": model.input_norm} if adapter is not None else {}
    evals = run.eval_batches(seed=cfg.run.seed, shuffle=False)  # a CNN's output does not depend on batch-mates
    smoothing = cfg.optim.label_smoothing
    net = run.wrap(model)  # the module the training step runs (DistributedDataParallel under torchrun)

    def step(batch) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(net(batch.x), batch.y, label_smoothing=smoothing)}

    def scores(splits) -> dict[str, float]:
        return {f"{name}_acc": accuracy(predict_logits(model, b), b.labels) for name, b in splits.items()}

    optimizer = make_optimizer(model.parameters(), cfg.optim)
    val = {k: b for k, b in evals.items() if k == "val"}
    # few labels: the labelled images only, repeated to the split's size (as many steps as with every label)
    train = labelled(bundle.train, size=len(bundle.train))
    result, manifest = run.fit(model, step, run.train_batches(train), lambda: scores(val), optimizer)
    source = (
        {"weights": str(Path(mc.weights).resolve()), "weights_sha256": file_sha256(mc.weights)} if mc.weights else {}
    )
    run.save(model, {"kind": "teacher", "arch": mc.arch, "width": mc.width, **recorded, **source})
    seen = labelled(bundle.train)
    train_eval = make_batches(bundle, seen, cfg.run.eval_batch_size, device, train=False, seed=0)
    final = scores(evals)  # the saved model, once: the test split is never seen before this
    return run.finish(
        {
            "train_acc": accuracy(predict_logits(model, train_eval), seen.labels),
            "val_acc": final.get("val_acc"),
            "test_acc": final.get("test_acc"),
            "best_epoch": result.best_epoch,
            "saved_epoch": result.saved_epoch,
            "keep": cfg.run.keep,
            "epochs": cfg.optim.epochs,
            "seconds": round(result.seconds, 1),
            "parameters": manifest["parameters"],
        }
    )
