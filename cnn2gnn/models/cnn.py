"""CNN teachers (docs/method.md section 1): a small registry behind one interface, frozen by construction as teachers;
torchvision and timm models through ``torchvision:NAME`` / ``timm:NAME`` (models/ecosystem.py).

CIFAR-style ResNets (He et al., "Deep Residual Learning", 2016, section 4.2: 6n+2 layers, widths w, 2w, 4w) that
train on two CPU cores in minutes, and torchvision's ResNet-18..152 with a 3x3 stride-1 stem for small images.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images: a 3x3 stem, three stages of n blocks (w, 2w, 4w channels), global pooling.

    Args:
        depth: 6n + 2 (8, 20, 56, ...).
        num_classes: number of output logits.
        in_channels: image channels (1 for grey, 3 for colour).
        width: channels of the first stage.

    Shapes:
        input (B, C, H, W) -> features (B, 4 * width) -> logits (B, num_classes)
    """

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, width: int = 16):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CifarResNet: depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        layers, ch = [], width
        for stage, out_ch in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                layers.append(BasicBlock(ch, out_ch, stride=2 if stage > 0 and i == 0 else 1))
                ch = out_ch
        self.blocks = nn.Sequential(*layers)
        self.num_features = ch
        self.fc = nn.Linear(ch, num_classes)
        self.narrow = width < 8
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.narrow and torch.is_grad_enabled() and x.device.type == "cpu":
            # oneDNN's AVX2 convolution backward corrupts the heap on channels-last activations of fewer than 8
            # channels (torch 2.14.1, an AMD EPYC, one thread: free(): invalid pointer). One-channel images carry
            # channels-last strides (faster otherwise): a narrow network trains on NCHW strides instead
            x = x.clone(memory_format=torch.contiguous_format)
        return F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class TorchvisionResNet(nn.Module):
    """torchvision ResNet (18/34/50/101/152), randomly initialised, with a stem adapted to the image size.

    For images of at most 64 pixels the 7x7 stride-2 convolution and the max pool are replaced by a 3x3 stride-1
    convolution, as is usual for CIFAR-sized inputs; larger images keep the ImageNet stem.
    """

    def __init__(self, name: str, num_classes: int, in_channels: int = 3, image_size: int = 32):
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if image_size <= 64:
            net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.num_features = net.fc.in_features
        self.fc = net.fc
        net.fc = nn.Identity()
        self.body = net

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cifar(depth: int) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_channels: int, image_size: int, width: int = 16) -> nn.Module:
        return CifarResNet(depth, num_classes, in_channels, width)

    return build


def _torchvision(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_channels: int, image_size: int, width: int = 16) -> nn.Module:
        return TorchvisionResNet(name, num_classes, in_channels, image_size)

    return build


TEACHERS: dict[str, Callable[..., nn.Module]] = {
    "resnet8": _cifar(8),
    "resnet20": _cifar(20),
    "resnet56": _cifar(56),
    **{f"resnet{d}": _torchvision(f"resnet{d}") for d in (18, 34, 50, 101, 152)},
}


def create_teacher(
    arch: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    width: int = 16,
    *,
    weights: str | None = None,
    pretrained: bool = False,
    input_size: int | None = None,
    input_norm: str = "auto",
    data_mean=(0.5,),
    data_std=(0.25,),
) -> nn.Module:
    """A CNN from the registry (``resnet8`` ...) or the ecosystem (``torchvision:NAME``, ``timm:NAME``, see
    :mod:`cnn2gnn.models.ecosystem`), with ``weights`` (a local file) or the library's ``pretrained`` weights loaded.
    With a weights file, ``model.head_loaded`` says whether its head fitted (else it is new, for ``num_classes``).
    Unknown names list the known ones."""
    from .ecosystem import PREFIXES, create_ecosystem_teacher, load_weights_file

    if arch.startswith(PREFIXES):
        return create_ecosystem_teacher(
            arch, num_classes, data_mean=data_mean, data_std=data_std, pretrained=pretrained, weights=weights,
            input_size=input_size, input_norm=input_norm,
        )  # fmt: skip
    if arch not in TEACHERS:
        raise UserError(f"unknown architecture '{arch}' (known: {', '.join(TEACHERS)}, torchvision:NAME, timm:NAME)")
    if pretrained or input_size is not None or input_norm not in ("auto", "data"):
        raise UserError(
            f"{arch}: pretrained weights and model.input_size/input_norm are for torchvision:/timm: teachers"
        )
    model = TEACHERS[arch](num_classes=num_classes, in_channels=in_channels, image_size=image_size, width=width)
    if weights:
        model.head_loaded = load_weights_file(model, weights, "fc")
    return model


class FrozenTeacher(nn.Module):
    """A trained CNN used as a teacher: eval mode, no gradients, and ``.train()`` cannot unfreeze it.

    Exposes the same interface as the wrapped network (``forward_features``, ``forward_head``, ``forward``), each
    run under ``torch.no_grad()``.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        for p in self.model.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenTeacher:  # noqa: ARG002 - frozen by construction
        return super().train(False)

    @torch.no_grad()
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    @torch.no_grad()
    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(features)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
