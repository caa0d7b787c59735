"""Native CPU kernels (issue 15, item 4): C sources shipped with the package, compiled on first use with the machine's
C compiler and loaded with :mod:`ctypes`, so the package needs no build step and works without a compiler.

Where a kernel cannot be built (no compiler, a read-only cache, ``CNN2GNN_NATIVE=0``) :func:`library` returns
``None`` and cnn2gnn uses its pure-torch path, which computes the same thing (tests/test_native.py checks that).
The shared library goes to ``$CNN2GNN_CACHE_DIR`` (default ``~/.cache/cnn2gnn``) under a name derived from the
source, the flags, the compiler and the CPU, so a cache shared by different machines never serves a foreign build.

Kernels (one C file each, built into one library):

- :func:`select_k` (``select.c``): the ``k`` smallest entries of each row of a float32 matrix, ascending, ties to
  the lower column: what :func:`cnn2gnn.select.nearest_k` (the anchor search, the graph head) runs on the CPU
  (docs/anchors_cost.md measures it against ``torch.topk``);
- :func:`adaptive_weights` (``weights.c``): the closed-form graph weights of a few candidate distances per row, what
  :func:`cnn2gnn.graph.sparse_neighbours` computes when no gradient is needed; and :func:`propagate`, the weighted
  sums of the neighbours' messages they define, optionally with the own term, the ReLU and the next layer in the same
  pass (the anchors policy's eval fast path, models/fastpath.py);
- :func:`pack` and :func:`nearest` (``nearest.c``): the exact search of a fixed bank, distances and selection in one
  pass with the distances kept in cache, what :class:`cnn2gnn.search.TorchSearch` (the anchors policy in eval mode)
  runs on CPUs with 256- or 512-bit vectors (docs/anchors_cost.md measures it against the torch path).

Every function here returns ``None`` (its caller then takes the torch path) for tensors off the CPU, of another
dtype than float32, inside ``torch.compile`` or ``torch.export``, or when the kernels are not built.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "Packed",
    "Pruned",
    "adaptive_weights",
    "available",
    "cache_dir",
    "disabled",
    "library",
    "nearest",
    "nearest_pruned",
    "pack",
    "pack_pruned",
    "propagate",
    "scanned_fraction",
    "select_k",
]

log = logging.getLogger(__name__)

SOURCES = tuple(
    Path(__file__).with_name(name) for name in ("select.c", "weights.c", "nearest.c", "pruned.c", "anchors.c")
)
# included by the sources: part of what a build depends on
HEADERS = tuple(Path(__file__).with_name(name) for name in ("common.h", "vectors.h"))
# the first set that compiles is used; -fopenmp shares the rows among torch's threads (torch's libgomp, already
# loaded, serves the library: one thread pool)
FLAGS = (("-O3", "-march=native", "-fopenmp"), ("-O3", "-fopenmp"), ("-O3",))
_lock = threading.Lock()
_state: dict[str, object] = {}


def _cpu() -> str:
    """What a build depends on besides its source and flags: the architecture and the CPU's model and features."""
    text = platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return text + platform.processor()
    keys = ("model name", "flags", "Features", "CPU part")
    return text + "".join(sorted({line for line in lines if line.split(":")[0].strip() in keys}))


def cache_dir() -> Path:
    """Where built kernels go: ``$CNN2GNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnn2gnn`` or ``~/.cache/cnn2gnn``."""
    if os.environ.get("CNN2GNN_CACHE_DIR"):
        return Path(os.environ["CNN2GNN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnn2gnn"


def _build() -> ctypes.CDLL | None:
    if os.environ.get("CNN2GNN_NATIVE", "1") in ("0", "false", "no", "off"):
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")  # CC: "gcc -m64"
    if not cc:
        log.info("cnn2gnn.native: no C compiler found; using the torch path")
        return None
    source = b"\0".join(path.read_bytes() for path in (*SOURCES, *HEADERS))
    for flags in FLAGS:
        key = hashlib.sha256(b"\0".join([source, " ".join(flags).encode(), cc.encode(), _cpu().encode()])).hexdigest()
        target = cache_dir() / "native" / f"kernels-{key[:16]}.so"
        try:
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # built apart, then moved in at once
                    out = Path(tmp) / target.name
                    # gnu99: C99 with GNU vector types, and fused multiply-adds (ISO modes turn contraction off)
                    cmd = [*shlex.split(cc), *flags, "-std=gnu99", "-shared", "-fPIC", "-o", str(out), *SOURCES]
                    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
                    os.replace(out, target)
            return _declare(ctypes.CDLL(str(target)))
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", b"") or b""
            log.info("cnn2gnn.native: %s %s failed: %s %s", cc, " ".join(flags), e, detail.decode(errors="replace"))
    return None


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.cnn2gnn_select.argtypes = [ptr, i64, i64, i64, ptr, ptr, ctypes.c_int]
    lib.cnn2gnn_select.restype = ctypes.c_int
    lib.cnn2gnn_adaptive_weights.argtypes = [ptr, i64, i64, i64, ctypes.c_double, ptr, ptr]
    lib.cnn2gnn_adaptive_weights.restype = None
    propagate_args = [ptr, ptr, i64, i64, i64, ctypes.c_double, ptr, i64, i64, ptr, ptr, i64, i64, i64, ptr, i64, ptr]
    lib.cnn2gnn_propagate.argtypes = [*propagate_args, ctypes.c_int]
    lib.cnn2gnn_propagate.restype = i64
    lib.cnn2gnn_nearest_lanes.argtypes = []
    lib.cnn2gnn_nearest_lanes.restype = ctypes.c_int
    lib.cnn2gnn_nearest_padded.argtypes = [i64]
    lib.cnn2gnn_nearest_padded.restype = i64
    lib.cnn2gnn_nearest_pack.argtypes = [ptr, i64, ptr, i64, i64, ptr, ptr]
    lib.cnn2gnn_nearest_pack.restype = None
    lib.cnn2gnn_nearest.argtypes = [ptr, i64, ptr, ptr, i64, i64, i64, i64, ptr, ptr, ctypes.c_int]
    lib.cnn2gnn_nearest.restype = ctypes.c_int
    lib.cnn2gnn_pruned.argtypes = [ptr, i64, ptr, ptr, i64, i64, i64, i64, i64, ptr, ptr, ctypes.c_int, ptr]
    lib.cnn2gnn_pruned.restype = ctypes.c_int
    lib.cnn2gnn_anchors.argtypes = [ptr, ptr, i64, i64, ptr, ctypes.c_int]  # native/prepared.py's AnchorsPass
    lib.cnn2gnn_anchors.restype = i64
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernels, built on the first call (once per process); ``None`` where they cannot be built."""
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                _state["lib"] = _build()
    return _state["lib"]  # type: ignore[return-value]


def available() -> bool:
    """Whether the native kernels are in use in this process."""
    return library() is not None


@contextlib.contextmanager
def disabled():
    """Within the block, cnn2gnn takes its torch path as if the kernels could not be built (to compare the two)."""
    saved = library()
    _state["lib"] = None
    try:
        yield
    finally:
        _state["lib"] = saved


EPS = 1e-12  # propagate's default: a row whose weights' denominator is at most this gets uniform weights


def _kernels_for(t: Tensor) -> ctypes.CDLL | None:
    """The library when it can serve the tensor ``t`` (CPU, float32, eager), else ``None``."""
    if t.device.type != "cpu" or t.dtype != torch.float32:
        return None
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():  # a traced graph keeps torch's operators
        return None
    return library()


def select_k(dist: Tensor, k: int) -> tuple[Tensor, Tensor] | None:
    r"""The ``k`` smallest entries of each row of ``dist`` (CPU, float32), ascending, and their columns; ties go to the
    lower column, NaN sorts last (as in ``torch.topk``). ``None`` when the kernels are not available. No gradient:
    the caller gathers the values from ``dist`` if it needs one. Rows are shared among torch's threads
    (``torch.get_num_threads()``, at least 16 rows each) when the library was built with OpenMP.

    Shapes:
        dist :math:`(n, m)`, :math:`1 \le k \le m` -> values :math:`(n, k)` float32, index :math:`(n, k)` int64
    """
    lib = _kernels_for(dist)
    if lib is None:
        return None
    n, m = dist.shape
    if not 1 <= k <= m:
        raise ValueError(f"select_k: k must be in [1, {m}], got k={k}")
    d = dist.detach().contiguous()
    values = torch.empty(n, k, dtype=torch.float32)
    index = torch.empty(n, k, dtype=torch.int64)
    threads = torch.get_num_threads()
    if n and lib.cnn2gnn_select(d.data_ptr(), n, m, k, values.data_ptr(), index.data_ptr(), threads):
        raise MemoryError(f"select_k: out of memory for rows of {m}")
    return values, index


def adaptive_weights(dist: Tensor, k: int, eps: float) -> tuple[Tensor, Tensor] | None:
    r"""The closed-form weights of :func:`cnn2gnn.graph.sparse_neighbours` over each row's ``K`` candidate distances:
    sorted ascending :math:`d_{(1)} \le \dots \le d_{(k+1)}` (ties to the lower column, NaN last),
    :math:`p_l = (d_{(k+1)} - d_{(l)})_+ / \sum_{l'} (d_{(k+1)} - d_{(l')})_+`, or :math:`1/k` for a row whose sum is
    at most ``eps``; and the columns, nearest first. No gradient. ``None`` when the kernels cannot serve ``dist``.

    Shapes:
        dist :math:`(n, K)`, :math:`k + 1 \le K \le 64` -> weights :math:`(n, k)` float32, columns :math:`(n, k)` int64
    """
    lib = _kernels_for(dist)
    n, width = dist.shape
    if lib is None or not 1 <= k < width <= 64:
        return None
    d = dist.detach().contiguous()
    weights = torch.empty(n, k, dtype=torch.float32)
    columns = torch.empty(n, k, dtype=torch.int64)
    lib.cnn2gnn_adaptive_weights(d.data_ptr(), n, width, k, eps, weights.data_ptr(), columns.data_ptr())
    return weights, columns


def propagate(
    dist: Tensor,
    positions: Tensor,
    k: int,
    messages: Tensor,
    bias: Tensor | None = None,
    eps: float = EPS,
    *,
    base: Tensor | None = None,
    relu: int = 0,
    head: Tensor | None = None,
) -> Tensor | None:
    r"""Row :math:`i`: :math:`\mathbf{o}_i = \mathbf{b} + \sum_{l \le k'} p_{il}\, \mathbf{m}_{j_{il}}`, the weighted
    sum of the messages of query :math:`i`'s neighbours, with :math:`p_{il}` the weights :func:`adaptive_weights` gives
    over the row's ``K`` candidate distances (:math:`k' = \min(k, K - 1)`, as in
    :func:`cnn2gnn.graph.sparse_neighbours`), :math:`j_{il}` the ``positions`` of those candidates (rows of
    ``messages``), summed nearest first, and :math:`\mathbf{b}` the ``bias`` (none by default). ``base`` (n, w') with
    w' <= w, if given, is then added to the first w' columns, and the first ``relu`` columns go through ReLU: what a
    layer's own term and activation need, in the same pass. With ``head`` :math:`\mathbf{W}` (c, h), c = w - h, the
    result is instead the next layer's :math:`\mathbf{o}_{i,h:} + \mathbf{W}\mathbf{o}_{i,:h}` (n, c), computed while
    the row is in cache (the first h columns are never written). One pass: the weights never leave the cache. No
    gradient. ``None`` when the kernels cannot serve the tensors (the caller takes the torch path), or for a single
    candidate.

    Shapes:
        dist, positions :math:`(n, K)`, :math:`2 \le K \le 64`; messages :math:`(m, w)`; bias :math:`(w,)`;
        base :math:`(n, w')`; head :math:`(w - h, h)` -> :math:`(n, w)`, or :math:`(n, w - h)` with a head; float32
    """
    lib = _kernels_for(dist)
    n, width = dist.shape
    if lib is None or not 2 <= width <= 64 or not all(_serves(t) for t in (messages, base, head)):
        return None
    m, w = messages.shape
    if (
        positions.shape != dist.shape
        or (bias is not None and bias.shape != messages.shape[1:])
        or (base is not None and (base.dim() != 2 or len(base) != n or base.shape[1] > w))
        or not 0 <= relu <= w
        or (head is not None and (head.dim() != 2 or sum(head.shape) != w))
    ):
        raise ValueError(
            f"propagate: positions {tuple(positions.shape)} must have the shape of dist {tuple(dist.shape)}, bias "
            f"{None if bias is None else tuple(bias.shape)} and relu={relu} at most the width of messages "
            f"{tuple(messages.shape)}, base {None if base is None else tuple(base.shape)} n rows of at most that "
            f"width, head {None if head is None else tuple(head.shape)} (c, h) with c + h that width"
        )
    # the kernel only reads the values (no gradient): pointers to dense rows, copied only where they are not
    d, pos, msg = _dense(dist), _dense(positions.long()), _dense(messages)
    b = None if bias is None else _dense(bias.float())
    own = base if base is None or base.stride(1) == 1 else base.contiguous()
    weight = None if head is None else _dense(head)
    nh = 0 if weight is None else weight.shape[1]
    out = torch.empty(n, w - nh, dtype=torch.float32)
    k = min(k, width - 1)
    extra = (None, 0, 0) if own is None else (own.data_ptr(), own.stride(0), own.shape[1])
    fused = (None, 0) if weight is None else (weight.data_ptr(), nh)
    args = (n, width, k, eps, msg.data_ptr(), m, w, None if b is None else b.data_ptr(), *extra, relu, *fused)
    bad = lib.cnn2gnn_propagate(d.data_ptr(), pos.data_ptr(), *args, out.data_ptr(), torch.get_num_threads())
    if bad < 0:
        raise MemoryError(f"propagate: out of memory for rows of {w}")
    if bad:
        raise IndexError(f"propagate: positions must lie in [0, {m}), the rows of messages")
    return out


def _serves(t: Tensor | None) -> bool:
    """Whether the kernels can read ``t`` (absent, or float32 on the CPU)."""
    return t is None or (t.dtype == torch.float32 and t.device.type == "cpu")


def _dense(t: Tensor) -> Tensor:
    """``t`` with contiguous rows (a copy only where it is not)."""
    return t if t.is_contiguous() else t.contiguous()


class Packed(NamedTuple):
    """A bank laid out for :func:`nearest` by :func:`pack`: its rows in blocks of the vector width, dimension-major
    (``data``), their squared norms (``sq``), and the bank's size ``(m, d)``."""

    data: Tensor
    sq: Tensor
    m: int
    d: int


MIN_LANES = 8  # below 256-bit vectors (or without FMA) the fused search is slower than torch's matrix product


def pack(bank: Tensor, bank_sq: Tensor) -> Packed | None:
    r"""The bank ``(m, d)`` and its squared row norms ``(m,)`` packed for :func:`nearest`, once per bank; ``None``
    where the kernel cannot serve it (off the CPU, not float32, traced, a build with vectors under 256 bits: the
    caller keeps the torch path). The search has no gradient: the values are read as they are."""
    lib = _kernels_for(bank)
    if lib is None or lib.cnn2gnn_nearest_lanes() < MIN_LANES:
        return None
    m, d = bank.shape
    if m == 0 or d == 0:
        return None
    bank, sq = bank.detach().contiguous(), bank_sq.detach().float().contiguous()
    padded = lib.cnn2gnn_nearest_padded(m)
    data, packed_sq = torch.empty(padded * d, dtype=torch.float32), torch.empty(padded, dtype=torch.float32)
    lib.cnn2gnn_nearest_pack(bank.data_ptr(), d, sq.data_ptr(), m, d, data.data_ptr(), packed_sq.data_ptr())
    return Packed(data, packed_sq, m, d)


def nearest(queries: Tensor, packed: Packed, k: int) -> tuple[Tensor, Tensor] | None:
    r"""Squared distances and positions of the ``k`` rows of a :func:`pack`-ed bank nearest to each query, nearest
    first: :math:`d_{ij} = \max(0, \|\mathbf{a}_j\|^2 - 2\,\mathbf{q}_i^\top\mathbf{a}_j + \|\mathbf{q}_i\|^2)`
    as :func:`cnn2gnn.graph.pairwise_sq_dists` computes it (up to the rounding of the dot products), ties to the
    lower position, NaN last. ``None`` when the kernel cannot serve ``queries`` (the caller takes the torch path).
    No gradient.

    Shapes:
        queries :math:`(n, d)`, :math:`1 \le k \le m` -> distances :math:`(n, k)` float32, positions
        :math:`(n, k)` int64
    """
    lib = _kernels_for(queries)
    n, d = queries.shape
    if lib is None or d != packed.d:
        return None
    if not 1 <= k <= packed.m:
        raise ValueError(f"nearest: k must be in [1, {packed.m}], got k={k}")
    q = queries.detach()
    if q.stride(1) != 1:
        q = q.contiguous()
    dist = torch.empty(n, k, dtype=torch.float32)
    index = torch.empty(n, k, dtype=torch.int64)
    threads = torch.get_num_threads()
    args = (packed.data.data_ptr(), packed.sq.data_ptr(), n, packed.m, d, k, dist.data_ptr(), index.data_ptr())
    if n and lib.cnn2gnn_nearest(q.data_ptr(), q.stride(0), *args, threads):
        raise MemoryError(f"nearest: out of memory for a bank of {packed.m}")
    return dist, index


from .pruned import Pruned, nearest_pruned, pack_pruned, scanned_fraction  # noqa: E402 (uses the above)
