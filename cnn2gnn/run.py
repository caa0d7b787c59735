"""The set-up every training recipe shares (teacher.py, student.py): seed and threads, device, data, batches, the run
folder's config.yaml and manifest.json, the fit loop with the config's schedule, and the model folder at the end;
under ``torchrun``, the processes (distributed.py) with rank 0 writing the run folder.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .checkpoint import atomic_write_json, save_model_dir
from .config import DataConfig, dump_yaml
from .data import Augment, BatchIterator, DataBundle, Split, load_dataset, resolve_root
from .data.regimes import apply_regime
from .distributed import SINGLE, World
from .errors import UserError
from .train import FitResult, Step, fit, make_scheduler, summary_writer

RUN_FILES = ("model.safetensors", "meta.json", "config.yaml", "metrics.jsonl", "manifest.json", "summary.json")
RUN_DIRS = ("ckpt", "cache", "tensorboard")  # training state; a teacher's cached logits; TensorBoard events


def available_devices() -> list[str]:
    """The devices torch can use here: ``cpu``, each ``cuda:N``, and ``mps`` where it exists."""
    mps = getattr(torch.backends, "mps", None)
    extra = ["mps"] if mps is not None and mps.is_available() else []
    return ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count())), *extra]


def resolve_device(name: str) -> torch.device:
    """The device ``name`` (``auto``: the first GPU if there is one, else the CPU); one that is not there, or not a
    device name at all, is a :class:`UserError` naming the devices that are."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    here = ", ".join(available_devices())
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}' (available here: {here}; or auto)") from None
    try:
        torch.empty(0, device=device)
    except Exception:  # noqa: BLE001 - torch raises RuntimeError, AssertionError... for a device it cannot use
        raise UserError(f"device '{name}' is not available here (available: {here})") from None
    return device


def holds_run(out: Path) -> bool:
    """Whether ``out`` already holds (part of) a training run."""
    return any((out / f).exists() for f in (*RUN_FILES, *RUN_DIRS))


def prepare_out(out: Path, *, resume: bool, overwrite: bool, remove: bool = True) -> None:
    """Refuse to write a run over another unless asked: ``resume`` continues it, ``overwrite`` first removes it
    (its run files only; anything else in the folder stays; not unless ``remove``: the processes other than rank 0
    only check). A refusal leaves the folder untouched."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other: continue the run in the folder, or replace it")
    if not holds_run(out):
        return
    if overwrite:
        if not remove:
            return
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for name in RUN_DIRS:
            shutil.rmtree(out / name, ignore_errors=True)
        return
    if not resume:
        raise UserError(
            f"{out} already holds a run: pass --resume to continue it or --overwrite to replace it (or another --out)"
        )
    if (out / "summary.json").exists() and not (out / "ckpt" / "latest.json").exists():
        raise UserError(f"{out} holds a finished run, nothing to resume: pass --overwrite to train it again")


def absolute_paths(cfg: Any) -> Any:
    """``cfg`` with its data root and teacher folder made absolute, so the saved config works from any folder."""
    data = cfg.data
    if data.root is not None:
        data = replace(data, root=str(Path(data.root).expanduser().resolve()))
    cfg = replace(cfg, data=data)
    distill = getattr(cfg, "distill", None)
    if distill is not None and distill.teacher:
        cfg = replace(cfg, distill=replace(distill, teacher=str(Path(distill.teacher).expanduser().resolve())))
    return cfg


def build_data(d: DataConfig) -> DataBundle:
    """The dataset and its splits as the data section of a config describes them, under its label regime."""
    bundle = load_dataset(
        d.name,
        d.root,
        val_fraction=d.val_fraction,
        seed=d.split_seed,
        limit_train=d.limit_train,
        limit_test=d.limit_test,
        image_size=d.image_size,
        download=d.download,
    )
    return apply_regime(bundle, d.labels_per_class, d.label_noise, d.split_seed)


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
    world: World = SINGLE,
) -> BatchIterator:
    """Batches of ``split``; training shuffles, augments and drops a ragged last batch. Evaluation of a graph that
    depends on batch-mates passes ``shuffle=True`` (a fixed seeded permutation, never class-sorted). Training in
    several processes (``world``): this process's share of each global batch, a ragged last batch always dropped."""
    shuffle = train if shuffle is None else shuffle
    return BatchIterator(
        split,
        batch_size,
        mean=bundle.mean,
        std=bundle.std,
        shuffle=shuffle,
        seed=seed,
        drop_last=train and (len(split) > batch_size or world.size > 1),
        augment=augment if train else None,
        device=device,
        rank=world.rank if train else 0,
        world=world.size if train else 1,
    )


def data_summary(bundle: DataBundle) -> dict[str, Any]:
    """What a manifest or report says about the data: name, fingerprint, split sizes."""
    return {
        "name": bundle.name,
        "fingerprint": bundle.fingerprint,
        "train": len(bundle.train),
        "val": len(bundle.val),
        "test": len(bundle.test),
    }


def data_meta(bundle: DataBundle) -> dict[str, Any]:
    """What a model folder records of its data: classes, input shape, normalisation, fingerprint."""
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


def environment() -> dict[str, Any]:
    """Versions and machine: what a manifest or benchmark report states so a number can be traced."""
    import numpy
    import torchvision

    return {
        "cnn2gnn": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
    }


@dataclass
class Run:
    """One training run: its resolved config, folder, device and data. Made by :meth:`start`; a recipe builds its
    model, step and evaluation, then calls :meth:`fit` and :meth:`save`."""

    cfg: Any  # TeacherConfig | StudentConfig (sections run, data, optim)
    out: Path
    device: torch.device
    bundle: DataBundle
    resume: bool
    world: World = SINGLE  # the processes under torchrun; rank 0 writes the run folder

    @classmethod
    def start(
        cls, cfg: Any, out: str | Path, *, resume: bool = False, overwrite: bool = False, data: DataConfig | None = None
    ) -> Run:
        """Check the folder (see :func:`prepare_out`) and the device, join the other processes under torchrun
        (:class:`~cnn2gnn.distributed.World`: one device each), seed torch, load the data (``data``, or the config's
        data section; rank 0 first, in case it downloads)."""
        out = Path(out)
        world = World.from_env()
        device = world.device(resolve_device(cfg.run.device))
        if cfg.optim.batch_size % world.size:
            raise UserError(f"optim.batch_size={cfg.optim.batch_size} must divide among the {world.size} processes")
        if cfg.run.tensorboard:  # before anything is written: a missing package is not a half-made run
            summary_writer()
        prepare_out(out, resume=resume, overwrite=overwrite, remove=world.main)
        world.init(device)  # after rank 0 has cleared the folder: no process writes into it before that
        torch.manual_seed(cfg.run.seed)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        with world.main_first():
            bundle = build_data(data or cfg.data)
        return cls(absolute_paths(cfg), out, device, bundle, resume, world)

    def say(self, message: str) -> None:
        """One line for the user on stderr (progress and warnings), unless run.progress is off; rank 0 only."""
        if self.world.main and (self.cfg.run.progress or message.startswith("warning")):
            print(f"cnn2gnn: {message}", file=sys.stderr)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the training step runs: ``model`` itself, or in DistributedDataParallel under torchrun; with
        run.compile, compiled (one graph, ``fullgraph``, in one process; DDP's hooks split it under torchrun)."""
        net = self.world.wrap(model, self.device)
        if self.cfg.run.compile:
            net = torch.compile(net, fullgraph=self.world.size == 1)
        return net

    def autocast(self):
        """The precision of a training step's forward pass: bfloat16 autocast with run.amp=bf16, else full."""
        if self.cfg.run.amp == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def augment(self) -> Augment | None:
        d = self.cfg.data
        return Augment(d.pad, d.hflip) if d.augment else None

    def train_batches(self, split: Split | None = None) -> BatchIterator:
        """The training split (or ``split``) in seeded, shuffled (with data.augment, augmented) batches of
        optim.batch_size (this process's share of them under torchrun)."""
        split = self.bundle.train if split is None else split
        batches = make_batches(
            self.bundle, split, self.cfg.optim.batch_size, self.device,
            train=True, seed=self.cfg.run.seed, augment=self.augment(), world=self.world,
        )  # fmt: skip
        if self.world.size > 1 and not len(batches):
            raise UserError(
                f"the training split ({len(split)} images) is smaller than optim.batch_size={batches.batch_size}, "
                f"the global batch of the {self.world.size} processes"
            )
        return batches

    def eval_batches(self, *, seed: int, shuffle: bool) -> dict[str, BatchIterator]:
        """``{"val": ..., "test": ...}`` (the splits that are not empty) in batches of run.eval_batch_size."""
        splits = (("val", self.bundle.val), ("test", self.bundle.test))
        return {
            name: make_batches(
                self.bundle, split, self.cfg.run.eval_batch_size, self.device, train=False, seed=seed, shuffle=shuffle
            )
            for name, split in splits
            if len(split)
        }

    def manifest(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "command": " ".join(sys.argv),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            **environment(),
            "device": str(self.device),
            "seed": self.cfg.run.seed,
            "data": data_summary(self.bundle),
            **self.world.describe(),
            **(extra or {}),
        }

    def fit(
        self,
        model: nn.Module,
        step: Step,
        train_batches: BatchIterator,
        evaluate,
        optimizer: torch.optim.Optimizer,
        manifest: dict[str, Any] | None = None,
    ) -> tuple[FitResult, dict[str, Any]]:
        """Write the resolved config and the manifest into the run folder, then train with the config's schedule.
        ``model`` is the unwrapped module; ``step`` runs :meth:`wrap`'s."""
        from .models.cnn import count_parameters

        manifest = self.manifest({"parameters": count_parameters(model), **(manifest or {})})
        if self.world.main:
            self.out.mkdir(parents=True, exist_ok=True)
            dump_yaml(self.cfg, self.out / "config.yaml")
            atomic_write_json(self.out / "manifest.json", manifest)
        optim = self.cfg.optim
        scheduler = make_scheduler(optimizer, optim, optim.epochs * len(train_batches))

        def amp_step(batch):  # run.amp: the forward pass and loss under autocast, the backward pass outside
            with self.autocast():
                return step(batch)

        result = fit(
            model, amp_step, train_batches, evaluate, optimizer, scheduler,
            epochs=optim.epochs, run_dir=self.out, grad_clip=optim.grad_clip, resume=self.resume,
            progress=self.cfg.run.progress, keep=self.cfg.run.keep, tensorboard=self.cfg.run.tensorboard,
            world=self.world,
        )  # fmt: skip
        return result, manifest

    def save(self, model: nn.Module, meta: dict[str, Any]) -> None:
        """The model folder (rank 0): weights and description (the data's classes, shape, normalisation and root
        added); ``model`` is left on the device, in eval mode."""
        if self.world.main:
            d = self.cfg.data
            root = str(resolve_root(d.name, d.root, download=d.download).resolve())
            regime = {"labels_per_class": d.labels_per_class, "label_noise": d.label_noise}
            meta = {**meta, **data_meta(self.bundle), "data_root": root, "regime": regime}
            save_model_dir(self.out, model.cpu(), meta)
        model.to(self.device).eval()

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Write ``summary.json``; remove ``ckpt/`` unless run.keep_checkpoints (the model folder is complete). Under
        torchrun: once every process is done with the folder, rank 0 writes, every process returns rank 0's summary,
        and the processes part."""
        summary = self.world.share(summary)  # also the barrier: every process is done with the folder
        if self.world.main:
            atomic_write_json(self.out / "summary.json", summary)
            if not self.cfg.run.keep_checkpoints:
                shutil.rmtree(self.out / "ckpt", ignore_errors=True)
        self.world.close()
        return summary
