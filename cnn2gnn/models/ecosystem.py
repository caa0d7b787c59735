"""Teachers from the ecosystem (issue 13): any torchvision classification model (``torchvision:NAME``) or timm model
(``timm:NAME``), with the library's pretrained weights or a local weights file, the head replaced to the dataset's
classes, and its own input size and normalisation (:class:`InputAdapter`) in front of it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREFIXES = ("torchvision:", "timm:")


class InputAdapter(nn.Module):
    r"""From the data's normalised images to the input a network expects:

    .. math::
        \mathbf{x}' = \big(\mathrm{resize}_s(\mathrm{rgb}(\mathbf{x} \odot \sigma_d + \mu_d)) - \mu\big) / \sigma

    (undo the data's normalisation, repeat a grey channel when the network wants 3, resize bilinearly with
    anti-aliasing to ``size`` x ``size``, normalise with the network's own statistics, e.g. ImageNet's).

    Args:
        data_mean, data_std: the data's per-channel statistics (the batches' normalisation).
        mean, std: the network's per-channel statistics.
        size: the side the network sees; None keeps the data's size.
    """

    def __init__(self, data_mean, data_std, mean, std, size: int | None) -> None:
        super().__init__()
        self.register_buffer("data_mean", torch.tensor(data_mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("data_std", torch.tensor(data_std, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.data_std + self.data_mean  # values in [0, 1]
        if x.shape[1] != self.mean.shape[1]:
            x = x.expand(-1, self.mean.shape[1], -1, -1)  # grey -> RGB
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"size={self.size}"


class AdaptedTeacher(nn.Module):
    """A classifier behind an :class:`InputAdapter`, with the teacher interface (``forward_features``,
    ``forward_head``, ``forward``). ``head`` names the final linear layer (its input are the features)."""

    def __init__(self, net: nn.Module, adapter: InputAdapter, head: str, input_norm: str) -> None:
        super().__init__()
        self.adapter, self.net, self.head, self.input_norm = adapter, net, head, input_norm
        self.head_loaded: bool | None = None  # with a weights file: whether its head fitted the classes

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.adapter(x))

    def forward_features(self, x: Tensor) -> Tensor:
        if hasattr(self.net, "forward_head"):  # timm
            return self.net.forward_head(self.net.forward_features(self.adapter(x)), pre_logits=True)
        seen: list[Tensor] = []
        hook = self.net.get_submodule(self.head).register_forward_hook(lambda m, args, out: seen.append(args[0]))
        try:
            self.forward(x)
        finally:
            hook.remove()
        return seen[0].flatten(1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.net.get_submodule(self.head)(features)


def _last_linear(net: nn.Module) -> str:
    names = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise UserError(f"{type(net).__name__}: no linear classifier head to replace")
    return names[-1]


def _torchvision(name: str, num_classes: int, pretrained: bool) -> tuple[nn.Module, str, int]:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise UserError(f"unknown torchvision classification model '{name}' (e.g. {', '.join(known[:8])}, ...)")
    if not pretrained:
        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        return net, _last_linear(net), 224
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        net = torchvision.models.get_model(name, weights=weights)
    except Exception as err:  # noqa: BLE001 - no network, a broken cache: one line, with the way out
        raise UserError(f"torchvision:{name}: cannot load its pretrained weights ({err}); use --weights FILE") from None
    head = _last_linear(net)
    old = net.get_submodule(head)
    parent, _, leaf = head.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, nn.Linear(old.in_features, num_classes))
    return net, head, int(weights.transforms().crop_size[0])


def _timm(name: str, num_classes: int, pretrained: bool) -> tuple[nn.Module, str, int]:
    try:
        import timm
    except ImportError:
        raise UserError("timm: architectures timm:NAME need timm: pip install 'cnn2gnn[timm]'") from None
    if not timm.is_model(name):
        raise UserError(f"unknown timm model '{name}' (see timm.list_models())")
    try:
        net = timm.create_model(name, pretrained=pretrained, num_classes=num_classes)
    except Exception as err:  # noqa: BLE001 - no network for the pretrained weights
        raise UserError(f"timm:{name}: cannot create it ({err}); use --weights FILE for local weights") from None
    head = next(n for n, m in net.named_modules() if m is net.get_classifier())
    return net, head, int(net.pretrained_cfg.get("input_size", (3, 224, 224))[-1])


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a safetensors file or a ``torch.save``-d one (read with ``weights_only=True``); a checkpoint
    holding it under ``state_dict`` or ``model`` and DataParallel's ``module.`` prefixes are unwrapped."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such weights file") from None
    except Exception as err:  # noqa: BLE001 - pickled code refused by weights_only, truncated files...
        raise CheckpointError(f"{path}: not a readable weights file ({str(err).splitlines()[0]})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict (names -> tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights_file(net: nn.Module, path: str | Path, head: str) -> bool:
    """Load a weights file into ``net``; a head of another class count is left as initialised. Returns whether
    the head was loaded. Any other mismatch is a one-line :class:`CheckpointError` naming the file."""
    state, own = read_state_dict(path), net.state_dict()
    head_keys = {k for k in own if k.startswith(head + ".")}
    mismatched = {k for k in state if k in own and state[k].shape != own[k].shape}
    if mismatched - head_keys:
        key = sorted(mismatched - head_keys)[0]
        raise CheckpointError(f"{path}: '{key}' has shape {tuple(state[key].shape)}, the model {tuple(own[key].shape)}")
    state = {k: v for k, v in state.items() if k not in mismatched}
    missing = sorted(set(own) - set(state) - head_keys)
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{path}: weights do not match the model ({detail}; another architecture?)")
    net.load_state_dict(state, strict=False)
    return not (head_keys & mismatched) and head_keys <= set(state)


def create_ecosystem_teacher(
    arch: str,
    num_classes: int,
    *,
    data_mean,
    data_std,
    pretrained: bool = False,
    weights: str | None = None,
    input_size: int | None = None,
    input_norm: str = "auto",
) -> AdaptedTeacher:
    """The teacher ``torchvision:NAME`` or ``timm:NAME`` for ``num_classes`` classes, its weights loaded, behind its
    input adapter (``input_size`` None: the library's default with pretrained or file weights, else the data's;
    ``input_norm`` auto: ImageNet statistics with such weights, else the data's)."""
    library, _, name = arch.partition(":")
    build = _torchvision if library == "torchvision" else _timm
    net, head, native = build(name, num_classes, pretrained)
    head_loaded = load_weights_file(net, weights, head) if weights else None
    own_weights = pretrained or weights is not None
    norm = ("imagenet" if own_weights else "data") if input_norm == "auto" else input_norm
    size = input_size if input_size is not None else (native if own_weights else None)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if norm == "imagenet" else (data_mean, data_std)
    if norm == "data" and len(mean) != 3:  # a grey dataset into an RGB network: the grey statistics per channel
        mean, std = tuple(mean) * 3, tuple(std) * 3
    teacher = AdaptedTeacher(net, InputAdapter(data_mean, data_std, mean, std, size), head, norm)
    teacher.head_loaded = head_loaded
    return teacher
