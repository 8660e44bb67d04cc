"""Any timm model behind `timm:<name>`, with the head sized for the task and, on request,
an ImageNet stem adapted to small images.

ImageNet stems shrink the input 4x before the first stage (a stride-2 conv and a stride-2
max-pool); at 32 px that leaves ResNet-18's last stage a 1x1 map, and accuracy suffers.
`small_input` turns the stem conv's stride to 1 and drops the stem max-pool, as the CIFAR
variants of these networks do, while keeping every weight (so pretrained stems still load).
Patchify stems (ViT, ConvNeXt, Swin: kernel = stride >= 4) have no such fix; those models
need their input size or their own `img_size`/`patch_size` arguments instead.

Names: `timm:resnet50` (an architecture), `timm:resnet50.a1_in1k` (with the preprocessing
and, when `model.pretrained: true`, the weights of that pretrained tag) and
`hf-hub:timm/resnet50.a1_in1k` (a model whose config and weights live on the Hugging Face
hub, read from its cache when offline).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from torch import nn

from imgcls.log import exception_line

STEM_CONVS_BEFORE_POOL = 3  # deep stems (resnet*d) have three convs before their max-pool
TIMM_PREFIX = "timm:"
HF_HUB_PREFIX = "hf-hub:"


def is_timm(name: str) -> bool:
    """A model that timm builds: `timm:<name>[.<tag>]` or `hf-hub:<org>/<name>`."""
    return name.startswith((TIMM_PREFIX, HF_HUB_PREFIX))


def timm_id(name: str) -> str:
    """What `timm.create_model` takes for a `timm:` or `hf-hub:` model name."""
    return name.removeprefix(TIMM_PREFIX)


@cache
def timm_names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


@cache
def pretrained_names() -> frozenset[str]:
    """timm's architecture.tag names that have pretrained weights."""
    import timm

    return frozenset(timm.list_pretrained())


def check_timm_name(name: str) -> None:
    """A clear error for a timm name that cannot be built (hub names are checked when
    built: whether they exist depends on the hub or its cache)."""
    from imgcls.registry import closest

    if name.startswith(HF_HUB_PREFIX):
        if "/" not in name.removeprefix(HF_HUB_PREFIX).strip("/"):
            raise ValueError(f"{name!r}: a hub model is named {HF_HUB_PREFIX}ORG/NAME, e.g. "
                             f"{HF_HUB_PREFIX}timm/resnet18.a1_in1k")
        return
    base, _, tag = timm_id(name).partition(".")
    if base not in timm_names():
        hint = closest(name, [TIMM_PREFIX + n for n in timm_names()], n=3, cutoff=0.8)
        raise ValueError(f"unknown timm model {base!r}{hint}; list them with "
                         "`imgcls models 'timm:*PATTERN*'`")
    if tag and f"{base}.{tag}" not in pretrained_names():
        tags = sorted(n.partition(".")[2] for n in pretrained_names()
                      if n.partition(".")[0] == base)
        raise ValueError(f"timm has no pretrained tag {tag!r} for {base}; its tags: "
                         f"{', '.join(tags) or 'none'} (`imgcls models --pretrained "
                         f"'timm:{base}*'`)")


def create_timm_model(name: str, num_classes: int, small_input: bool = False,
                      **args: Any) -> nn.Module:
    import timm

    try:
        model = timm.create_model(name, num_classes=num_classes, **args)
    except (OSError, RuntimeError) as exc:  # a hub name that is neither online nor cached
        if not name.startswith(HF_HUB_PREFIX):
            raise
        raise ValueError(f"{name}: could not read the model's config from the Hugging Face "
                         f"hub or its cache ({exception_line(exc)})") from None
    if small_input:
        adapt_stem_to_small_inputs(model, name)
    return model


def _stem_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    first = getattr(model, "pretrained_cfg", {}).get("first_conv")
    first = first[0] if isinstance(first, list | tuple) else first
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and (not first or path == first):
            return path, module
    raise ValueError("model.small_input: found no stem convolution to adapt")


def adapt_stem_to_small_inputs(model: nn.Module, name: str) -> list[str]:
    """Stride-1 stem conv and no stem max-pool; returns what was changed, for the log."""
    path, conv = _stem_conv(model)
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    if stride >= 4 and kernel == stride:
        raise ValueError(
            f"model.small_input: timm:{name} has a patchify stem ({path}: kernel {kernel}, "
            f"stride {stride}) that cannot be made stride 1; train it at its own input size "
            "(data.image_size) or pass its img_size/patch_size through model.args")
    changes = []
    if stride > 1:
        conv.stride = (1, 1)
        changes.append(f"{path}: stride {stride} -> 1")
    convs_seen = 0
    for module_path, module in model.named_modules():
        if module_path.startswith(path + ".") or module_path == path:
            continue
        if isinstance(module, nn.Conv2d):
            convs_seen += 1
            if convs_seen > STEM_CONVS_BEFORE_POOL:
                break
        elif isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
            parent, _, child = module_path.rpartition(".")
            setattr(model.get_submodule(parent), child, nn.Identity())
            changes.append(f"{module_path}: {type(module).__name__} removed")
            break
    return changes
