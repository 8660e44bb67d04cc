"""Model registry: `create_model(name, num_classes, image_size, **args)` builds any
registered network, or any timm model as `timm:<name>`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from imgcls.models.fastnet import fastnet94
from imgcls.models.resnet_cifar import resnet18_cifar
from imgcls.models.simple_cnn import flowers_cnn
from imgcls.models.vgg import vgg6
from imgcls.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
for _factory in (fastnet94, resnet18_cifar, flowers_cnn, vgg6):
    MODELS.register(_factory.__name__)(_factory)

TIMM_PREFIX = "timm:"


def check_model_name(name: str) -> None:
    if name.startswith(TIMM_PREFIX):
        import timm

        if not timm.is_model(name[len(TIMM_PREFIX):]):
            raise ValueError(f"unknown timm model {name[len(TIMM_PREFIX):]!r}; list them with "
                             "`python -c 'import timm; print(timm.list_models())'`")
    elif name not in MODELS:
        raise ValueError(MODELS.unknown_message(name) + f", or {TIMM_PREFIX}<any timm model>")


def create_model(name: str, num_classes: int, image_size: int = 32, **args: Any) -> nn.Module:
    check_model_name(name)
    if name.startswith(TIMM_PREFIX):
        import timm

        return timm.create_model(name[len(TIMM_PREFIX):], num_classes=num_classes, **args)
    try:
        return MODELS.get(name)(num_classes=num_classes, image_size=image_size, **args)
    except TypeError as exc:  # a bad model.args key
        raise ValueError(f"model.args for {name!r}: {exc}") from None
