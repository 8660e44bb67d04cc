"""DenseNet-121 (Huang et al. 2017) for 32x32 inputs: a 3x3 stem of 2 x growth channels
instead of the ImageNet 7x7/2 conv + max-pool, then the four dense blocks (6, 12, 24, 16
bottleneck layers, growth 32) with halving transitions; global average pooling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _bn_relu_conv(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)]


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 (4 x growth) -> BN-ReLU-3x3 (growth), concatenated to its input."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.new = nn.Sequential(*_bn_relu_conv(cin, 4 * growth, 1),
                                 *_bn_relu_conv(4 * growth, growth, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.new(x)], 1)


class DenseNetCifar(nn.Module):
    def __init__(self, blocks: Sequence[int], growth: int = 32, reduction: float = 0.5,
                 num_classes: int = 10):
        super().__init__()
        channels = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1, bias=False)]
        for i, count in enumerate(blocks):
            for _ in range(count):
                layers.append(DenseLayer(channels, growth))
                channels += growth
            if i < len(blocks) - 1:  # transition: compress and halve the map
                out = int(channels * reduction)
                layers += [*_bn_relu_conv(channels, out, 1), nn.AvgPool2d(2)]
                channels = out
        self.features = nn.Sequential(*layers, nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def densenet121_cifar(num_classes: int = 10, image_size: int = 32,
                      growth: int = 32) -> DenseNetCifar:
    """DenseNet-121 with a CIFAR stem: blocks 6/12/24/16, growth 32."""
    return DenseNetCifar((6, 12, 24, 16), growth, num_classes=num_classes)
