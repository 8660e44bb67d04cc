"""Model registry: `create_model(name, num_classes, image_size, **args)` builds any
registered network, or any timm model as `timm:<name>[.<tag>]` or `hf-hub:<org>/<name>`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
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
from imgcls.models.timm_models import (
    TIMM_PREFIX,
    check_timm_name,
    create_timm_model,
    is_timm,
    timm_id,
    timm_names,
)
from imgcls.models.vgg import vgg6
from imgcls.registry import Registry, closest

if TYPE_CHECKING:
    from imgcls.config import ModelConfig

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
for _factory in (baseline_cnn, lenet5, alexnet8, vgg16_bn, resnet18_cifar, resnet34_cifar,
                 vgg6, inception_cifar, flowers_cnn, preact_resnet18, wrn16_8, wrn28_10,
                 densenet121_cifar, fastnet94, fastnet95, fastnet96):
    MODELS.register(_factory.__name__)(_factory)

def check_model_name(name: str) -> None:
    if is_timm(name):
        check_timm_name(name)
    elif name not in MODELS:
        also_timm = f" ({TIMM_PREFIX}{name} is timm's)" if name in timm_names() else ""
        raise ValueError(f"unknown model {name!r}{closest(name, MODELS.names(), n=3)}"
                         f"{also_timm}; valid: {', '.join(MODELS.names())}, or "
                         f"{TIMM_PREFIX}<any timm model>")


def check_small_input(name: str, small_input: bool) -> None:
    if small_input and not is_timm(name):
        raise ValueError(f"model.small_input applies to {TIMM_PREFIX}<name> models; {name!r} "
                         "is built for its input size already")


def takes_dropout() -> list[str]:
    return [n for n in MODELS.names() if "dropout" in inspect.signature(MODELS.get(n)).parameters]


def regularizer_args(name: str) -> dict[str, str]:
    """The constructor argument behind each of model.dropout and model.drop_path."""
    timm = is_timm(name)
    return {"dropout": "drop_rate" if timm else "dropout", "drop_path": "drop_path_rate"}


def check_regularizers(name: str, dropout: float | None, drop_path: float | None,
                       args: dict[str, Any]) -> None:
    """model.dropout / model.drop_path must reach a model that has them, and only once."""
    settings = {"dropout": dropout, "drop_path": drop_path}
    for key, arg in regularizer_args(name).items():
        if settings[key] is not None and arg in args:
            raise ValueError(f"model.{key} and model.args.{arg} set the same thing; keep one")
    if is_timm(name):
        return
    with_dropout = takes_dropout()
    if dropout is not None and name not in with_dropout:
        raise ValueError(f"model.dropout: {name!r} has no dropout; models with it: "
                         f"{', '.join(with_dropout)} and timm:<name>")
    if drop_path is not None:
        raise ValueError(f"model.drop_path: {name!r} has no drop-path (stochastic depth); "
                         "timm models have it (timm:<name>)")


def build_model(cfg: ModelConfig, num_classes: int, image_size: int,
                in_chans: int = 3) -> nn.Module:
    """The model a config asks for, with its dropout and drop-path settings, for images of
    `in_chans` channels."""
    settings = {"dropout": cfg.dropout, "drop_path": cfg.drop_path}
    extra = {arg: settings[key] for key, arg in regularizer_args(cfg.name).items()
             if settings[key] is not None}
    return create_model(cfg.name, num_classes, image_size, cfg.small_input, in_chans,
                        **{**cfg.args, **extra})


def create_model(name: str, num_classes: int, image_size: int = 32, small_input: bool = False,
                 in_chans: int = 3, **args: Any) -> nn.Module:
    """Any registry model, or `timm:<name>` (`small_input` adapts an ImageNet stem to
    32-64 px inputs; the registry's CIFAR models are built for them already), taking
    `in_chans`-channel images (1: grayscale)."""
    check_model_name(name)
    check_small_input(name, small_input)
    if "in_chans" in args:
        raise ValueError("model.args.in_chans: the channel count follows the data; set "
                         "data.channels (1 or 3) instead")
    if is_timm(name):
        return create_timm_model(timm_id(name), num_classes, small_input,
                                 in_chans=in_chans, **args)
    factory = MODELS.get(name)
    own = "in_chans" in inspect.signature(factory).parameters
    try:
        model = factory(num_classes=num_classes, image_size=image_size,
                        **({"in_chans": in_chans} if own else {}), **args)
    except TypeError as exc:  # a bad model.args key
        raise ValueError(f"model.args for {name!r}: {exc}") from None
    return model if own or in_chans == 3 else adapt_input_channels(model, in_chans)


def adapt_input_channels(model: nn.Module, in_chans: int) -> nn.Module:
    """Rebuild the RGB stem conv (the first conv taking 3 channels) for `in_chans` channels.
    Its initialization is the RGB one summed over colour (as timm adapts RGB weights), so
    a 1-channel net starts as its RGB twin would on a gray image (and with the variance a
    fresh 1-channel initialization has)."""
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            conv = nn.Conv2d(in_chans, module.out_channels, module.kernel_size, module.stride,
                             module.padding, module.dilation, module.groups,
                             module.bias is not None, module.padding_mode)
            with torch.no_grad():
                conv.weight.copy_(module.weight.sum(1, keepdim=True).expand_as(conv.weight))
                if module.bias is not None:
                    conv.bias.copy_(module.bias)
            parent, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent), child, conv)
            return model
    raise ValueError(f"{type(model).__name__}: found no 3-channel stem convolution to adapt "
                     f"to {in_chans} channel(s)")
