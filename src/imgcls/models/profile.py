"""What a model costs: parameters, forward FLOPs, measured training speed, and the
layer-by-layer table Keras users know from `model.summary()`."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from imgcls.models.parts import input_channels


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts. BatchNorm running statistics are buffers, not
    parameters; Keras lists them as "non-trainable params" (see `statistics_count`)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen


def statistics_count(model: nn.Module) -> int:
    """Running means and variances of the normalization layers."""
    return sum(b.numel() for name, b in model.named_buffers()
               if name.rsplit(".", 1)[-1] in ("running_mean", "running_var"))


def forward_gflops(model: nn.Module, image_size: int) -> float:
    """Floating-point operations of one forward pass on one image, in billions, counting a
    multiply-add as 2 (papers and timm often quote multiply-adds as "FLOPs": half this)."""
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, input_channels(model), image_size, image_size, device=device))
    return counter.get_total_flops() / 1e9


def training_images_per_second(model: nn.Module, image_size: int, num_classes: int,
                               batch_size: int = 64, steps: int = 6, warmup: int = 2,
                               channels_last: bool = True) -> float:
    """Median speed of full training steps (forward, backward, SGD update) on random images,
    in the memory format the trainer uses."""
    model.train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, input_channels(model), image_size, image_size,
                    generator=generator)
    x = x.contiguous(memory_format=fmt)
    y = torch.randint(0, num_classes, (batch_size,), generator=generator)
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


@dataclass
class Layer:
    name: str
    kind: str
    output_shape: str
    params: int


def _shown_layers(model: nn.Module, depth: int | None) -> dict[str, int]:
    """Layer name -> parameters counted on its row."""
    rows = {}
    for name, module in model.named_modules():
        if not name:
            continue
        level = name.count(".") + 1
        leaf = next(module.children(), None) is None
        if depth is None:
            own = list(module.parameters(recurse=False))
            if leaf or own:
                rows[name] = sum(p.numel() for p in own)
        elif level == depth or (leaf and level < depth):
            rows[name] = sum(p.numel() for p in module.parameters())
    return rows


def layer_summary(model: nn.Module, image_size: int, depth: int | None = None) -> list[Layer]:
    """One row per layer in call order: every leaf module (and any container holding
    parameters of its own), or with `depth` the modules that many levels down, their
    sub-layers folded in (depth 1 = the top-level blocks, like Keras' summary of a model
    built from sub-models)."""
    params = _shown_layers(model, depth)
    rows: list[Layer] = []
    seen: set[str] = set()

    def record(name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if name in seen:  # a module called twice (a shared activation) is listed once
                return
            seen.add(name)
            tensor = output[0] if isinstance(output, list | tuple) else output
            shape = (" x ".join(map(str, tensor.shape[1:])) if isinstance(tensor, torch.Tensor)
                     else "-")
            rows.append(Layer(name, type(module).__name__, shape, params[name]))
        return hook

    handles = [model.get_submodule(name).register_forward_hook(record(name)) for name in params]
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for handle in handles:
            handle.remove()
    return rows
