"""ResNets for 32x32 inputs: a 3x3 stride-1 stem with no max-pool (the CIFAR stem), so the
last stage still sees 4x4 feature maps; global average pooling lets any size >= 32 work.

Two block orders: the original post-activation block (He et al. 2015: conv-BN-ReLU, add,
ReLU) for ResNet-18/34 as notes 003 and 004 build them, and the pre-activation block (He et
al. 2016: BN-ReLU-conv, add, nothing after) shared by PreAct-ResNet-18 and the wide ResNets
of the SAM paper (Zagoruyko & Komodakis 2016), which add dropout between the two convs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def conv_bn(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.residual = nn.Sequential(*conv_bn(cin, cout, 3, stride), nn.ReLU(inplace=True),
                                      *conv_bn(cout, cout, 3, 1))
        self.shortcut = (nn.Sequential(*conv_bn(cin, cout, 1, stride))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.residual(x) + self.shortcut(x))


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.preact = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        self.residual = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Conv2d(cout, cout, 3, 1, padding=1, bias=False))
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.preact(x)
        # a projection sees the normalized input; an identity shortcut carries x untouched
        shortcut = x if self.shortcut is None else self.shortcut(activated)
        return self.residual(activated) + shortcut


class ResNetCifar(nn.Module):
    def __init__(self, blocks: Sequence[int], num_classes: int = 10,
                 widths: Sequence[int] = (64, 128, 256, 512), preact: bool = False,
                 stem_width: int | None = None, dropout: float = 0.0):
        super().__init__()
        cin = stem_width or widths[0]
        stem = nn.Conv2d(3, cin, 3, 1, padding=1, bias=False)
        layers: list[nn.Module] = ([stem] if preact
                                   else [stem, nn.BatchNorm2d(cin), nn.ReLU(inplace=True)])
        for stage, (count, width) in enumerate(zip(blocks, widths, strict=True)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(PreActBlock(cin, width, stride, dropout) if preact
                              else BasicBlock(cin, width, stride))
                cin = width
        if preact:  # the last block's sum is not normalized yet
            layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def resnet18_cifar(num_classes: int = 10, image_size: int = 32) -> ResNetCifar:
    """ResNet-18 with the CIFAR stem (notes 003, 004): 11,173,962 parameters."""
    return ResNetCifar((2, 2, 2, 2), num_classes)


def resnet34_cifar(num_classes: int = 10, image_size: int = 32) -> ResNetCifar:
    """ResNet-34 with the CIFAR stem (note 003): blocks 3/4/6/3."""
    return ResNetCifar((3, 4, 6, 3), num_classes)


def preact_resnet18(num_classes: int = 10, image_size: int = 32) -> ResNetCifar:
    """Pre-activation ResNet-18 (He et al. 2016), the usual SAM/mixup CIFAR baseline."""
    return ResNetCifar((2, 2, 2, 2), num_classes, preact=True)


def wide_resnet(depth: int, widen: int, num_classes: int = 10,
                dropout: float = 0.0) -> ResNetCifar:
    """WRN-depth-widen: three pre-activation stages of (depth - 4) / 6 blocks, widths 16,
    32, 64 times `widen`, a 16-channel stem."""
    if (depth - 4) % 6:
        raise ValueError(f"wide ResNet depth must be 6n + 4 (16, 22, 28, 40...), got {depth}")
    n = (depth - 4) // 6
    return ResNetCifar((n, n, n), num_classes, widths=(16 * widen, 32 * widen, 64 * widen),
                       preact=True, stem_width=16, dropout=dropout)


def wrn16_8(num_classes: int = 10, image_size: int = 32, dropout: float = 0.0) -> ResNetCifar:
    """WRN-16-8, the SAM paper's smaller CIFAR net."""
    return wide_resnet(16, 8, num_classes, dropout)


def wrn28_10(num_classes: int = 10, image_size: int = 32, dropout: float = 0.0) -> ResNetCifar:
    """WRN-28-10, the SAM paper's CIFAR reference net (~36.5M parameters)."""
    return wide_resnet(28, 10, num_classes, dropout)
