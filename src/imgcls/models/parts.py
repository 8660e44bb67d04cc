"""A model's anatomy, for transfer learning: its classifier head, its stages (coarse blocks,
stem first) and its layers with weights, in forward order. Stages come from timm's own
`group_matcher` when the model has one; registry models are split at their top-level
modules, with Sequential containers opened one level (so ResNet blocks count as stages)."""

from __future__ import annotations

from torch import nn

from imgcls.registry import closest


class ModelStructureError(ValueError):
    pass


def has_weights(module: nn.Module, recurse: bool = True) -> bool:
    return next(module.parameters(recurse=recurse), None) is not None


def input_channels(model: nn.Module) -> int:
    """The channel count of the model's input (its first convolution's; 3 without one)."""
    return next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 3)


def head_name(model: nn.Module) -> str:
    """The classifier: timm's `pretrained_cfg['classifier']`, else the last Linear."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("classifier")
    if isinstance(name, str) and name in dict(model.named_modules()):
        return name
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelStructureError(f"{type(model).__name__} has no Linear classifier to replace")
    return linears[-1]


def head_parameters(model: nn.Module) -> list[str]:
    head = head_name(model)
    return [n for n, _ in model.named_parameters() if n.startswith(head + ".")]


def stages(model: nn.Module) -> list[tuple[str, list[str]]]:
    """(stage name, parameter names) from the stem to the last stage; the head excluded."""
    head = set(head_parameters(model))
    if hasattr(model, "group_matcher"):
        from timm.models import group_parameters

        matcher = model.group_matcher(coarse=True)
        groups = group_parameters(model, matcher)
        names = list(matcher)  # 'stem', 'blocks' ...
        result = []
        for index in sorted(groups):
            params = [p for p in groups[index] if p not in head]
            if params:
                label = names[0] if index == 0 and names else f"stage {index}"
                result.append((label, params))
        return result
    owners: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        parametrized = [(f"{name}.{n}", c) for n, c in child.named_children()
                        if has_weights(c)]
        if isinstance(child, nn.Sequential | nn.ModuleList) and len(parametrized) > 1:
            owners += parametrized
        elif has_weights(child):
            owners.append((name, child))
    result = []
    for name, module in owners:
        params = [f"{name}.{n}" for n, _ in module.named_parameters()]
        params = [p for p in params if p not in head]
        if params:
            result.append((name, params))
    return result


def layers(model: nn.Module) -> list[str]:
    """Modules that hold weights directly (convs, norms, linears), in definition order,
    without the head: what Keras's `model.layers[fine_tune_at:]` indexes, less its
    weightless layers."""
    head = head_name(model)
    return [n for n, m in model.named_modules()
            if n and not (n == head or n.startswith(head + "."))
            and has_weights(m, recurse=False)]


def trainable_parameters(model: nn.Module, train: str | None = None,
                         fine_tune_at: int | str | None = None,
                         last_stages: int | None = None) -> set[str]:
    """Names of the parameters a stage trains: the head plus what the setting unfreezes.
    train='head' | 'all'; fine_tune_at: a layer index (see `layers`) or a module name, from
    which on everything trains; last_stages: the last K of `stages`."""
    every = [n for n, _ in model.named_parameters()]
    chosen = set(head_parameters(model))
    if train == "all":
        return set(every)
    if isinstance(fine_tune_at, int):
        names = layers(model)
        if not 0 <= fine_tune_at < len(names):
            raise ModelStructureError(
                f"fine_tune_at = {fine_tune_at}: the model has {len(names)} layers with weights "
                f"(0-{len(names) - 1}, head excluded; `imgcls models NAME --layers` lists them)")
        start = names[fine_tune_at]
    elif isinstance(fine_tune_at, str):
        start = fine_tune_at
        modules = dict(model.named_modules())
        if start not in modules or not has_weights(modules[start]):
            raise ModelStructureError(
                f"fine_tune_at = {start!r}: no module with weights of that name"
                f"{closest(start, [n for n in modules if n], n=3)}; e.g. "
                f"{', '.join(n for n, _ in stages(model)[-3:])}")
    elif last_stages is not None:
        blocks = stages(model)
        if not 1 <= last_stages <= len(blocks):
            raise ModelStructureError(
                f"last_stages = {last_stages}: the model has {len(blocks)} stages "
                f"({', '.join(n for n, _ in blocks)})")
        for _, params in blocks[-last_stages:]:
            chosen.update(params)
        return chosen
    else:
        return chosen
    first = next(i for i, n in enumerate(every) if n.startswith(start + "."))
    return chosen | set(every[first:])


def stage_depths(model: nn.Module) -> dict[str, int]:
    """How many stages before the head each parameter sits (head 0, last stage 1, ...),
    for discriminative learning rates."""
    blocks = stages(model)
    depth = {p: len(blocks) - i for i, (_, params) in enumerate(blocks) for p in params}
    return {n: depth.get(n, 0) for n, _ in model.named_parameters()}


def frozen_norms(model: nn.Module, trainable: set[str], every: bool = False) -> list[nn.Module]:
    """BatchNorm layers none of whose parameters train, or `every` one: they stay in
    inference mode (the notes' `base_model(x, training=False)`), so their running statistics
    do not move; the scale and shift of a trainable one still learn."""
    result = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = [f"{name}.{n}" for n, _ in module.named_parameters()]
            if every or not any(p in trainable for p in params):
                result.append(module)
    return result
