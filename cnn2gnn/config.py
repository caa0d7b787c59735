"""Typed run configuration: dataclasses per concern, layered as defaults < YAML file < ``--set a.b=c``.

Unknown keys, values of the wrong type and choices outside their ``Literal`` are :class:`~cnn2gnn.errors.ConfigError`
naming the key (and the allowed values). The dataclasses below are the single source of every default and every
choice; components receive their own section (or plain arguments) and repeat no default. The resolved config is
written as YAML into every run folder, so a run can be repeated with ``--config OUT/config.yaml``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from .errors import ConfigError
from .policy import Policy

T = TypeVar("T")

# The choices of the config, checked when a config is built; the modules that implement them import these names.
Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["onecycle", "cosine", "constant"]
Keep = Literal["best", "last"]  # which epoch's weights a run saves
InputNorm = Literal["auto", "data", "imagenet"]  # the statistics a teacher's inputs are normalised with
BankAll = Literal["all"]  # bank.size: the whole training split
Search = Literal["torch", "faiss", "faiss-ivf"]  # how the nearest anchors are found (cnn2gnn/search.py)
Amp = Literal["none", "bf16"]  # mixed precision of the forward passes
StudentArch = Literal["gnn", "mlp"]  # the CNN2GNN student | the same-width MLP baseline
Aggregate = Literal["sage", "gcn"]  # propagation rule of the graph layers (models/layers.py)
GraphSpace = Literal["head", "proj", "pixels"]  # where the graph's distances are measured
Embed = Literal["none", "randconv", "patch"]  # input embedding in front of the learned layers (models/embed.py)


class _Loader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-3`` as a float (YAML 1.1, and so ``safe_load``, needs ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


@dataclass
class DataConfig:
    name: str = "fashion-mnist"  # dataset name (see `cnn2gnn.data.DATASETS`)
    root: str | None = None  # local folder with the dataset's files; None = the dataset's default location
    val_fraction: float = 0.1  # stratified share of the training split held out for model selection
    split_seed: int = 0  # seed of the validation split: fixed, so teacher and students never see each other's val
    limit_train: int | None = None  # stratified subset of the training split (quick runs, tests)
    limit_test: int | None = None  # stratified subset of the test split
    image_size: int | None = None  # resize ImageFolder images to this side; None = size of the first image
    download: bool = False  # let torchvision download a missing dataset (needs a network)
    augment: bool = False  # random shifts (and flips) at training time; helps long schedules, not 5-epoch ones
    pad: int = 2  # random translation of up to `pad` pixels
    hflip: bool = True  # random horizontal flips
    labels_per_class: int | None = None  # keep N labels per class (train and val); the other training images stay,
    #                                      unlabelled, for distillation and as anchors (data/regimes.py)
    label_noise: float = 0.0  # flip this fraction of the training and validation labels to another class (test clean)


@dataclass
class OptimConfig:
    optimizer: Optimizer = "sgd"
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum (Nesterov)
    weight_decay: float = 5e-4
    epochs: int = 5
    batch_size: int = 128
    schedule: Schedule = "onecycle"  # onecycle (linear warm-up then cosine) | cosine | constant
    warmup: float = 0.15  # share of the steps used for warm-up under onecycle
    label_smoothing: float = 0.0
    grad_clip: float | None = None  # clip the gradient norm to this value


@dataclass
class TeacherModelConfig:
    arch: str = "resnet8"  # the registry's (cnn2gnn.models.cnn.TEACHERS), torchvision:NAME or timm:NAME
    width: int = 16  # channels of the first stage of the CIFAR-style ResNets (resnet8/20/56)
    weights: str | None = None  # a local weights file (safetensors, or a state dict read with weights_only=True)
    pretrained: bool = False  # the library's own pretrained weights (torchvision/timm; needs a network)
    input_size: int | None = None  # side the teacher sees (images resized to it); None: the data's for a new or
    #                                registry network, the library's default (e.g. 224) with pretrained or file weights
    input_norm: InputNorm = "auto"  # normalisation the teacher sees: data (the data's statistics) | imagenet |
    #                                 auto (imagenet for torchvision:/timm: with weights, else data)


@dataclass
class RunConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps (must be available here)
    threads: int | None = None  # torch CPU threads; None = torch's default
    eval_batch_size: int = 512
    progress: bool = True  # progress bars
    keep: Keep = "best"  # the saved model: best (epoch of the highest validation accuracy) | last (the last epoch)
    keep_checkpoints: bool = False  # keep OUT/ckpt/ (optimizer state, per-epoch weights) after the run has finished
    compile: bool = False  # torch.compile the model (fullgraph) for training and evaluation
    amp: Amp = "none"  # bf16: forward passes under torch.autocast(bfloat16) (GPUs; CPUs with bf16 support)
    tensorboard: bool = False  # also write each epoch's metrics as TensorBoard scalars into OUT/tensorboard/
    #                            (pip install 'cnn2gnn[tensorboard]')


@dataclass
class TeacherConfig:
    """Everything `cnn2gnn teacher` needs."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: TeacherModelConfig = field(default_factory=TeacherModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class StudentModelConfig:
    """The student network (models/gnn.py, models/mlp.py); the MLP uses hidden, dropout and the embed keys only."""

    arch: StudentArch = "gnn"  # gnn: the CNN2GNN student | mlp: the same-width MLP baseline (no graph)
    aggregate: Aggregate = "sage"  # gcn (paper: Z = A ReLU(A X W1) W2) | sage (own and neighbour terms apart)
    hidden: int = 512  # width h of the hidden layer
    k: int = 10  # neighbours per node in the sparse graph
    graph_space: GraphSpace = "head"  # where distances are measured: head (separate linear head) | proj (x W1) | pixels
    graph_dim: int = 64  # width of the `head` graph space
    dropout: float = 0.3  # dropout on the hidden layer
    input_dropout: float = 0.0  # dropout on the input pixels
    detach_graph: bool = False  # no gradient through the graph (ablation)
    self_loop: bool = True  # add I before normalising (gcn)
    label_messages: bool = False  # anchors carry their one-hot labels into the logits (anchors graph only)
    zero_init: bool = False  # neighbour weights start at 0: the student starts as the same-width MLP (sage)
    embed: Embed = "none"  # input of the two learned layers: none (pixels) | randconv (fixed random conv features)
    #                        | patch (a learned patch embedding: a third learned layer, for the MLP baseline too)
    embed_filters: int = 64  # randconv: number of random filters; patch: values per patch
    embed_kernel: int = 5  # randconv: filter side; patch: patch side
    embed_pool: int = 4  # randconv: average-pooling cell side
    image_size: int | None = None  # side of the student's input images (resized from the data's); None: the data's


@dataclass
class BankConfig:
    """The anchor bank stored in a graph student (models/bank.py): the neighbour pool of the ``anchors`` policy."""

    size: int | BankAll = 1024  # m images, a stratified sample of the training split; all = the whole split;
    #                             0 = no bank (batch policy only)
    search: Search = "torch"  # nearest anchors: torch (exact: on the CPU the native fused or pruned search, else a
    #                           blocked top-k, any device) | faiss (exact, IndexFlatL2) | faiss-ivf (approximate: an
    #                           inverted file of nlist cells, nprobe of them searched)
    nlist: int | None = None  # faiss-ivf cells; None: about 4 sqrt(m)
    nprobe: int = 16  # faiss-ivf cells searched per query (recall against speed)


@dataclass
class DistillConfig:
    """The distillation recipe (student.py, distill.py)."""

    teacher: str | None = None  # teacher model folder; None = no teacher, cross-entropy only
    alpha: float = 0.5  # weight of the T^2 KL term; (1 - alpha) weighs the cross-entropy (selected on val)
    temperature: float = 2.0  # softmax temperature T of the KL term (selected on val, docs/ablations.md)
    cache_logits: bool = True  # compute the teacher's logits once on the (unaugmented) training set
    train_graph: Policy = "batch"  # graph at training time: batch (among the batch) | anchors (to the bank)


@dataclass
class StudentConfig:
    """Everything `cnn2gnn distill` needs."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: StudentModelConfig = field(default_factory=StudentModelConfig)
    bank: BankConfig = field(default_factory=BankConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(optimizer="adamw", lr=2e-3, weight_decay=1e-4, epochs=30, batch_size=256)
    )


# --------------------------------------------------------------------------------------------------------------
# Generic machinery: dict <-> dataclass with type checks, dotted overrides, YAML files.


# Keys of cnn2gnn 0.1 that moved: read from old config files silently, named in the error of a --set override.
MOVED = {"model.anchors": "bank.size", "model.train_graph": "distill.train_graph"}
HINTS = {("model.aggregate", "none"): "the same-width MLP is now model.arch=mlp"}


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A config mapping of cnn2gnn 0.1 in today's keys (``model.anchors`` -> ``bank.size``, ``model.train_graph``
    -> ``distill.train_graph``, ``model.aggregate: none`` -> ``model.arch: mlp``); other mappings are returned as
    they are."""
    model = data.get("model")
    if not isinstance(model, dict) or not ({"anchors", "train_graph"} & set(model) or model.get("aggregate") == "none"):
        return data
    data = {key: dict(value) if isinstance(value, dict) else value for key, value in data.items()}
    model = data["model"]
    for old, new in MOVED.items():
        if old.split(".")[1] in model:
            section, key = new.split(".")
            data.setdefault(section, {})[key] = model.pop(old.split(".")[1])
    if model.get("aggregate") == "none":
        model["arch"], model["aggregate"] = "mlp", "sage"
    return data


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats. Returns the value to store."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, str) and value in allowed:
            return value
        hint = HINTS.get((key, value), "")
        raise ConfigError(
            f"config key '{key}': expected one of {', '.join(map(str, allowed))}, got {value!r}"
            + (f" ({hint})" if hint else "")
        )
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is Any:
        return value
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is float and is_number:
        return float(value)
    if tp is int and is_number and isinstance(value, int):
        return value
    if (tp is bool and isinstance(value, bool)) or (tp is str and isinstance(value, str)):
        return value
    raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; missing keys keep their defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' (known under '{prefix or '.'}': {', '.join(sorted(names))})"
        )
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in data
    ]
    if required:
        raise ConfigError(f"missing config key '{prefix}{required[0]}'")
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b=c`` override in place; the value is parsed as YAML (``1e-3``, ``null``, ``[1, 2]``)."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' is not of the form key=value (e.g. optim.lr=0.05)")
    key, _, raw = assignment.partition("=")
    key = key.strip()
    if key in MOVED:
        raise ConfigError(f"config key '{key}' is now '{MOVED[key]}' (override '{assignment}')")
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if raw.strip() == "None":  # Python's spelling of null; "none" stays a string (e.g. model.aggregate=none)
        value = None
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            raise ConfigError(f"unknown config key '{'.'.join(parts[: i + 1])}' in override '{assignment}'")
        node = child
    if parts[-1] not in node:
        known = ", ".join(sorted(node))
        raise ConfigError(f"unknown config key '{key}' in override '{assignment}' (known here: {known})")
    node[parts[-1]] = value


def _merge(base: dict[str, Any], update: dict[str, Any], prefix: str = "") -> None:
    for key, value in update.items():
        if key not in base:
            known = ", ".join(sorted(base))
            raise ConfigError(f"unknown config key '{prefix}{key}' (known under '{prefix or '.'}': {known})")
        if isinstance(base[key], dict) and isinstance(value, dict):
            _merge(base[key], value, f"{prefix}{key}.")
        else:
            base[key] = value


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a text (UTF-8) file") from None
    try:
        data = _load_yaml(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def build_config(
    cls: type[T], *, files: list[str | Path] = (), overrides: list[str] = (), base: dict | None = None
) -> T:
    """Layer defaults < ``base`` < YAML ``files`` (in order) < dotted ``overrides`` and type-check the result."""
    data = to_dict(cls())
    if base:
        _merge(data, base)
    for path in files:
        _merge(data, migrate(read_yaml(path)))
    for assignment in overrides:
        apply_override(data, assignment)
    return from_dict(cls, data)


def dump_yaml(cfg: Any, path: str | Path | None = None) -> str:
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    if path is not None:
        from .checkpoint import atomic_write_text

        atomic_write_text(path, text)
    return text
