"""Networks whose dense head is sized by the flattened feature map (Keras' Flatten ->
Dense) need the input size at construction; this finds that width, and when the input is
too small for the layers, says which sizes work instead of failing deep inside a forward."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn


def _flat_width(features: nn.Module, side: int) -> int:
    was_training = features.training
    features.eval()  # BatchNorm cannot train on one probe image
    try:
        with torch.no_grad():
            return features(torch.zeros(1, 3, side, side)).flatten(1).shape[1]
    except RuntimeError:  # e.g. "Output size is too small"
        return 0
    finally:
        features.train(was_training)


def flat_features(features: nn.Module, image_size: int, model: str) -> int:
    """Width of `features(image).flatten()` at `image_size`, or a ValueError naming the
    smallest size that works."""
    width = _flat_width(features, image_size)
    if width:
        return width
    smallest = next((side for side in range(image_size + 1, 1025)
                     if _flat_width(features, side)), None)
    raise ValueError(f"{model} needs data.image_size >= {smallest}, got {image_size}")


def dense_head(in_features: int, hidden: Sequence[int], num_classes: int,
               activation: type[nn.Module] = nn.ReLU, dropout: float = 0.0) -> nn.Sequential:
    """Hidden dense layers, each followed by its activation and dropout, then the classifier."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), activation()]
        layers += [nn.Dropout(dropout)] if dropout else []
        in_features = width
    return nn.Sequential(*layers, nn.Linear(in_features, num_classes))


def flatten_classifier(features: nn.Sequential, image_size: int, model: str,
                       hidden: Sequence[int], num_classes: int, global_pool: bool = False,
                       activation: type[nn.Module] = nn.ReLU, dropout: float = 0.0,
                       feature_dropout: float = 0.0) -> nn.Sequential:
    """`features -> flatten -> [dropout] -> dense head`, as published; with `global_pool`
    the feature map is averaged instead of flattened, so the head no longer grows with the
    input size (what makes these nets usable at 128-224 px, where the flatten would hold
    millions of weights)."""
    layers: dict[str, nn.Module] = {"features": features}
    if global_pool:
        flat_features(features, image_size, model)  # still rejects too-small inputs
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
        width = _channels(features)
    else:
        width = flat_features(features, image_size, model)
    layers["flatten"] = nn.Flatten()
    if feature_dropout:
        layers["dropout"] = nn.Dropout(feature_dropout)
    layers["head"] = dense_head(width, hidden, num_classes, activation, dropout)
    return nn.Sequential(OrderedDict(layers))


def _channels(features: nn.Module) -> int:
    convs = [m for m in features.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels
