"""Note 002's small CNN for flower photos, and its stronger variants.

The default is the note's network: three conv 32@3x3 (valid) + ReLU + max-pool blocks, a
128-unit dense layer and the classifier; its flatten ties the head to the input size, so the
size is a construction argument. `widths`, `batchnorm` and `global_pool` turn it into the
usual modern small CNN (more channels deeper, BatchNorm, global average pooling instead of
the large dense layer, which is what overfits on a few thousand photos).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def flowers_cnn(num_classes: int = 5, image_size: int = 128, widths: Sequence[int] = (32, 32, 32),
                hidden: int = 128, dropout: float = 0.0, batchnorm: bool = False,
                global_pool: bool = False) -> nn.Sequential:
    side = image_size
    for _ in widths:
        side = (side - 2) // 2
    if side < 1:
        smallest = 1
        for _ in widths:
            smallest = smallest * 2 + 2
        raise ValueError(f"flowers_cnn with {len(widths)} blocks needs data.image_size >= "
                         f"{smallest}, got {image_size}")
    layers: list[nn.Module] = []
    cin = 3
    for width in widths:
        layers += [nn.Conv2d(cin, width, 3, bias=not batchnorm)]
        layers += [nn.BatchNorm2d(width)] if batchnorm else []
        layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        cin = width
    features = cin if global_pool else cin * side * side
    layers += [nn.AdaptiveAvgPool2d(1)] if global_pool else []
    layers += [nn.Flatten(), nn.Dropout(dropout)]
    if hidden:
        layers += [nn.Linear(features, hidden), nn.ReLU(inplace=True)]
        features = hidden
    return nn.Sequential(*layers, nn.Linear(features, num_classes))
