"""Note 002's small CNN for flower photos: three conv 32@3x3 (valid) + ReLU + max-pool
blocks, a 128-unit dense layer and the classifier. The flatten ties the head to the input
size, so the size is a construction argument."""

from __future__ import annotations

from torch import nn


def flowers_cnn(num_classes: int = 5, image_size: int = 128, width: int = 32,
                hidden: int = 128, dropout: float = 0.0) -> nn.Sequential:
    side = image_size
    for _ in range(3):
        side = (side - 2) // 2
    if side < 1:
        raise ValueError(f"flowers_cnn needs data.image_size >= 22, got {image_size}")
    blocks: list[nn.Module] = []
    cin = 3
    for _ in range(3):
        blocks += [nn.Conv2d(cin, width, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        cin = width
    return nn.Sequential(*blocks, nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(width * side * side, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, num_classes))
