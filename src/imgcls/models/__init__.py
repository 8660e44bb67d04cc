"""Model registry: `create_model(name, num_classes, image_size, **args)` builds any
registered network, or any timm model as `timm:<name>`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from imgcls.models.classic import alexnet8, baseline_cnn, lenet5, vgg16_bn
from imgcls.models.densenet_cifar import densenet121_cifar
from imgcls.models.fastnet import fastnet94, fastnet95, fastnet96
from imgcls.models.inception_cifar import inception_cifar
from imgcls.models.resnet_cifar import (
    preact_resnet18,
    resnet18_cifar,
    resnet34_cifar,
    wrn16_8,
    wrn28_10,
)
from imgcls.models.simple_cnn import flowers_cnn
from imgcls.models.timm_models import create_timm_model, timm_names
from imgcls.models.vgg import vgg6
from imgcls.registry import Registry, closest

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
for _factory in (baseline_cnn, lenet5, alexnet8, vgg16_bn, resnet18_cifar, resnet34_cifar,
                 vgg6, inception_cifar, flowers_cnn, preact_resnet18, wrn16_8, wrn28_10,
                 densenet121_cifar, fastnet94, fastnet95, fastnet96):
    MODELS.register(_factory.__name__)(_factory)

TIMM_PREFIX = "timm:"


def check_model_name(name: str) -> None:
    if name.startswith(TIMM_PREFIX):
        timm_name = name[len(TIMM_PREFIX):]
        if timm_name not in timm_names():
            hint = closest(name, [TIMM_PREFIX + n for n in timm_names()], n=3, cutoff=0.8)
            raise ValueError(f"unknown timm model {timm_name!r}{hint}; list them with "
                             "`imgcls models 'timm:*PATTERN*'`")
    elif name not in MODELS:
        also_timm = f" ({TIMM_PREFIX}{name} is timm's)" if name in timm_names() else ""
        raise ValueError(f"unknown model {name!r}{closest(name, MODELS.names(), n=3)}"
                         f"{also_timm}; valid: {', '.join(MODELS.names())}, or "
                         f"{TIMM_PREFIX}<any timm model>")


def check_small_input(name: str, small_input: bool) -> None:
    if small_input and not name.startswith(TIMM_PREFIX):
        raise ValueError(f"model.small_input applies to {TIMM_PREFIX}<name> models; {name!r} "
                         "is built for its input size already")


def create_model(name: str, num_classes: int, image_size: int = 32, small_input: bool = False,
                 **args: Any) -> nn.Module:
    """Any registry model, or `timm:<name>` (`small_input` adapts an ImageNet stem to
    32-64 px inputs; the registry's CIFAR models are built for them already)."""
    check_model_name(name)
    check_small_input(name, small_input)
    if name.startswith(TIMM_PREFIX):
        return create_timm_model(name[len(TIMM_PREFIX):], num_classes, small_input, **args)
    try:
        return MODELS.get(name)(num_classes=num_classes, image_size=image_size, **args)
    except TypeError as exc:  # a bad model.args key
        raise ValueError(f"model.args for {name!r}: {exc}") from None
