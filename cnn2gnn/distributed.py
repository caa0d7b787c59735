"""Training in several processes under ``torchrun`` (the batch graph of docs/method.md section 3 over the global batch):
the process group from the environment (WORLD_SIZE, RANK, LOCAL_RANK), one device per process, the model wrapped in
DistributedDataParallel, the gather that builds the batch graph over all processes' rows, and the few collectives
the fit loop needs. Without those variables every method is a no-op of one process.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as tdist
from torch import Tensor, nn

from .errors import UserError

__all__ = ["SINGLE", "World"]

T = TypeVar("T")
_OWNED = False  # whether this module made the process group (and so destroys it)


@dataclass(frozen=True)
class World:
    """The processes of a run: ``size`` of them, this one numbered ``rank`` (``local_rank`` on its machine).

    Rank 0 is the main process: it alone writes logs, checkpoints and the model folder. A batch of the config's
    ``optim.batch_size`` is the *global* batch: each process takes its contiguous ``batch_size / size`` rows of it
    (:class:`~cnn2gnn.data.BatchIterator`), and the gradients DistributedDataParallel averages equal those of one
    process on the whole batch.
    """

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> World:
        """The world ``torchrun`` describes in WORLD_SIZE, RANK and LOCAL_RANK; one process without them."""
        env = os.environ if env is None else env
        try:
            size = int(env.get("WORLD_SIZE") or 1)
            if size <= 1:
                return SINGLE
            missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
            if missing:
                raise UserError(f"WORLD_SIZE={size} without {', '.join(missing)}: launch with torchrun")
            rank = int(env["RANK"])
            return cls(size, rank, int(env.get("LOCAL_RANK") or rank))
        except ValueError:
            names = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
            shown = ", ".join(f"{k}={env.get(k)!r}" for k in names)
            raise UserError(f"torchrun's variables must be integers, got {shown}") from None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This process's device: ``cuda:LOCAL_RANK`` for a GPU run (whatever index was asked), else the CPU."""
        if self.size == 1 or device.type == "cpu":
            return device
        if device.type != "cuda":
            raise UserError(f"device '{device}' cannot be shared by {self.size} processes: use --device cuda or cpu")
        if self.local_rank >= torch.cuda.device_count():
            raise UserError(
                f"process {self.local_rank} of this machine needs cuda:{self.local_rank}, but "
                f"{torch.cuda.device_count()} GPUs are visible (--nproc_per_node at most the number of GPUs)"
            )
        return torch.device("cuda", self.local_rank)

    def init(self, device: torch.device) -> None:
        """Join the process group (NCCL on GPUs, gloo on CPUs), or use the one already made in this process."""
        global _OWNED
        if self.size == 1:
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # the gradient-carrying all_gather of :meth:`gather` (torch >= 2.4 has no public successor that runs on gloo)
        warnings.filterwarnings("ignore", r"torch\.distributed\.nn\.functional\.all_gather ", FutureWarning)
        if not tdist.is_initialized():
            tdist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=self.rank, world_size=self.size)
            _OWNED = True
        if tdist.get_world_size() != self.size:
            raise UserError(f"the process group has {tdist.get_world_size()} processes, WORLD_SIZE says {self.size}")
        self.barrier()

    def close(self) -> None:
        """Leave the process group this module made (at the end of a run)."""
        global _OWNED
        if self.size > 1 and _OWNED and tdist.is_initialized():
            tdist.destroy_process_group()
            _OWNED = False

    # -- collectives (no-ops for one process) --------------------------------------------------------------
    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.size == 1:
            return
        if tdist.get_backend() == "nccl":
            tdist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            tdist.barrier()

    def sum(self, t: Tensor) -> Tensor:
        """``t`` summed over the processes (a new tensor; ``t`` itself for one process)."""
        if self.size == 1:
            return t
        t = t.clone()
        tdist.all_reduce(t)
        return t

    def share(self, obj: T) -> T:
        """Rank 0's ``obj`` (picklable), in every process."""
        if self.size == 1:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (a download, a cache file), the others then (reading what it wrote)."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()

    def gather(self, t: Tensor) -> tuple[Tensor, slice]:
        """``(rows of every process, in rank order; this process's slice of them)``; gradients flow back to each
        process's own rows (summed over the processes that used them). Every process passes the same number of
        rows. The ``gather`` of :meth:`cnn2gnn.models.gnn.GNNStudent.forward`.

        Shapes:
            t: ``(n, ...)`` -> ``(size * n, ...)``
        """
        from torch.distributed.nn.functional import all_gather

        n = t.shape[0]
        # the group named: the function's default is the group of the first run in this process, maybe gone
        return torch.cat(all_gather(t, group=tdist.group.WORLD)), slice(self.rank * n, (self.rank + 1) * n)

    def sync(self, model: nn.Module) -> None:
        """Rank 0's parameters and buffers (e.g. BatchNorm statistics, which each process keeps for its own rows)
        into ``model`` in every process, so that all hold the model rank 0 saves."""
        if self.size > 1:
            for t in model.state_dict().values():
                tdist.broadcast(t, src=0)

    # -- training ------------------------------------------------------------------------------------------
    def seed(self, seed: int, epoch: int) -> None:
        """Several processes: seed this process's torch RNG from ``(seed, epoch, rank)`` at the start of an epoch,
        so that each process draws its own dropout masks and a resumed run draws the same ones; nothing for one."""
        if self.size > 1:
            # four entries: never the (seed, epoch, stream) of a BatchIterator's generators
            state = np.random.SeedSequence([seed, epoch, self.rank, 2]).generate_state(2, dtype=np.uint32)
            torch.manual_seed(int(state[0]) << 32 | int(state[1]))

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` in DistributedDataParallel (the module itself for one process), for the training forward pass;
        evaluation and saving use ``model``. Buffers are not synchronised at each forward pass (an anchor bank is the
        same in every process; a teacher's BatchNorm keeps the running statistics of rank 0's rows, which rank 0
        saves), and ``static_graph`` lets a model leave the same parameters unused at every step (``detach_graph``)
        without a search of the graph at each one.

        BatchNorm layers normalise each process's rows by their own statistics, as DistributedDataParallel does by
        default: a teacher trained in several processes is not the one a single process would train (the student
        has no BatchNorm)."""
        if self.size == 1:
            return model
        ddp = nn.parallel.DistributedDataParallel
        # older torch names the switch broadcast_buffers
        name = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters else ""
        ids = [device.index] if device.type == "cuda" else None
        return ddp(model, device_ids=ids, static_graph=True, **{name or "broadcast_buffers": False})

    def describe(self) -> dict[str, Any]:
        """What a manifest records of the processes (nothing for one)."""
        return {} if self.size == 1 else {"processes": self.size, "backend": tdist.get_backend()}


SINGLE = World()
