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

from imgcls.models.sizing import flatten_classifier


def flowers_cnn(num_classes: int = 5, image_size: int = 128, widths: Sequence[int] = (32, 32, 32),
                hidden: int = 128, dropout: float = 0.0, batchnorm: bool = False,
                global_pool: bool = False) -> nn.Sequential:
    """Note 002's flowers CNN: 3 x (conv 32@3x3 + ReLU + max-pool), dense 128."""
    layers: list[nn.Module] = []
    cin = 3
    for width in widths:
        layers += [nn.Conv2d(cin, width, 3, bias=not batchnorm)]
        layers += [nn.BatchNorm2d(width)] if batchnorm else []
        layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        cin = width
    return flatten_classifier(nn.Sequential(*layers), image_size, "flowers_cnn",
                              [hidden] if hidden else [], num_classes, global_pool,
                              feature_dropout=dropout)
