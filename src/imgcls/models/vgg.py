"""Note 001's VGG-like "model1" for CIFAR-10: three stages of two conv 3x3 (same) + ReLU,
max-pool after each stage (64, 128, 256 channels), flatten, dropout 0.5, one dense layer,
He-normal initialization. 1,186,378 parameters with 10 classes at 32 px, as published."""

from __future__ import annotations

from torch import nn

from imgcls.models.sizing import flatten_classifier


def vgg6(num_classes: int = 10, image_size: int = 32, dropout: float = 0.5,
         global_pool: bool = False) -> nn.Sequential:
    """Note 001's VGG-like net: 3 x (2 conv 3x3 + max-pool), dropout, one dense layer."""
    layers: list[nn.Module] = []
    cin = 3
    for width in (64, 128, 256):
        for _ in range(2):
            conv = nn.Conv2d(cin, width, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")  # Keras' he_normal
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU(inplace=True)]
            cin = width
        layers.append(nn.MaxPool2d(2))
    return flatten_classifier(nn.Sequential(*layers), image_size, "vgg6", [], num_classes,
                              global_pool, feature_dropout=dropout)
