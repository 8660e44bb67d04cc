"""The rows of `imgcls models`: which models match a pattern, what each costs, and one
model's layers (`--summary`, `--layers`), as strings ready for a table."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from imgcls.models import MODELS, TIMM_PREFIX, create_model, is_timm
from imgcls.models.parts import head_name, layers, stages
from imgcls.models.profile import (
    count_parameters,
    forward_gflops,
    layer_summary,
    statistics_count,
    training_images_per_second,
)
from imgcls.models.timm_models import HF_HUB_PREFIX, pretrained_names, timm_id, timm_names

TIMM_LIMIT = 40  # creating a model per row: a broad timm pattern would take minutes
PRETRAINED_LIMIT = 200  # --pretrained rows read timm's tables only: cheap


def matching_names(pattern: str | None, pretrained: bool = False) -> tuple[list[str], int]:
    """Names matching a glob (`resnet*`, `timm:convnext_*`, `timm:resnet50.*`), and how many
    matched in all. Registry names without a pattern; timm names only when the pattern says
    `timm:`; with `pretrained`, or a pattern with a tag, timm's names that have weights
    (`timm:resnet50.a1_in1k`). An `hf-hub:` name is itself."""
    if pattern and pattern.startswith(HF_HUB_PREFIX):
        return [pattern], 1
    if pretrained or pattern and pattern.startswith(TIMM_PREFIX):
        glob = timm_id(pattern) if pattern else "*"
        tagged = pretrained or "." in glob
        pool = pretrained_names() if tagged else timm_names()
        names = sorted(n for n in pool if fnmatch.fnmatchcase(n, glob))
        limit = PRETRAINED_LIMIT if pretrained else TIMM_LIMIT
        return [TIMM_PREFIX + n for n in names[:limit]], len(names)
    names = [n for n in MODELS.names() if fnmatch.fnmatchcase(n, pattern or "*")]
    return names, len(names)


def pretrained_rows(names: list[str]) -> Iterator[dict[str, str]]:
    """`imgcls models --pretrained`: where each name's weights come from, the preprocessing
    they were trained with, and whether they are in this machine's Hugging Face cache (what
    `model.pretrained: true` can load offline)."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    for name in names:
        cfg = get_pretrained_cfg(timm_id(name))
        hub = cfg.hf_hub_id if cfg else None
        cached = hub and any(isinstance(try_to_load_from_cache(hub, f), str)
                             for f in ("model.safetensors", "pytorch_model.bin"))
        yield {"model": name, "weights": f"hf-hub:{hub}" if hub else (cfg.url if cfg else "-"),
               "input": f"{cfg.input_size[-1]} px" if cfg else "-",
               "mean / std": (f"{fmt(cfg.mean)} / {fmt(cfg.std)}" if cfg else "-"),
               "resize": cfg.interpolation if cfg else "-",
               "cached": "yes" if cached else "no"}


def fmt(values: tuple[float, ...]) -> str:
    return ", ".join(f"{v:.3g}" for v in values)


def describe(name: str) -> str:
    if is_timm(name):
        return ""
    return " ".join((inspect.getdoc(MODELS.get(name)) or "").split("\n\n")[0].split())


def model_rows(names: list[str], image_size: int, num_classes: int, bench: bool = False,
               batch_size: int = 64, small_input: bool = False) -> Iterator[dict[str, Any]]:
    """One row per model; a model that cannot take `image_size` gets the reason instead."""
    for name in names:
        row: dict[str, Any] = {"model": name, "source": "timm" if is_timm(name) else "imgcls",
                               "about": describe(name)}
        try:
            model = create_model(name, num_classes, image_size, small_input and is_timm(name))
            gflops = forward_gflops(model, image_size)
        except (ValueError, RuntimeError, AssertionError) as exc:  # a ViT at the wrong size
            yield {**row, "error": f"{type(exc).__name__}: {exc}".split("\n")[0]}
            continue
        trainable, frozen = count_parameters(model)
        row |= {"params": trainable + frozen, "gflops": gflops}
        if bench:
            row["images_per_second"] = training_images_per_second(model, image_size,
                                                                  num_classes, batch_size)
        yield row


def table_row(row: dict[str, Any], image_size: int, bench: bool = False,
              batch_size: int = 64) -> dict[str, str]:
    """A `model_rows` row as the cells of `imgcls models`, by column header (the same for the
    terminal and --markdown); a failed row shows its error under "about"."""
    failed = "error" in row
    cells = {"model": row["model"], "source": row["source"],
             "params": "-" if failed else f"{row['params']:,}",
             f"GFLOPs @{image_size}px": "-" if failed else f"{row['gflops']:.3g}"}
    if bench:
        cells[f"train img/s (batch {batch_size})"] = (
            "-" if failed else f"{row['images_per_second']:.0f}")
    return cells | {"about": row["error"] if failed else row["about"]}


@dataclass
class Listing:
    """A titled table of one model and the lines shown under it."""

    title: str
    rows: list[dict[str, str]]
    notes: list[str]


def summary_listing(name: str, image_size: int = 32, num_classes: int = 10,
                    depth: int | None = None, small_input: bool = False) -> Listing:
    """`imgcls models NAME --summary`: Keras' model.summary(), layers folded below `depth`,
    and the totals, with why Keras' total differs (it counts BatchNorm statistics)."""
    model = create_model(name, num_classes, image_size, small_input)
    rows = [{"layer (type)": f"{layer.name} ({layer.kind})", "output shape": layer.output_shape,
             "params": f"{layer.params:,}"} for layer in layer_summary(model, image_size, depth)]
    trainable, frozen = count_parameters(model)
    stats = statistics_count(model)
    notes = [f"Total params: {trainable + frozen:,}\nTrainable params: {trainable:,}\n"
             f"Non-trainable params: {frozen:,}"]
    if stats:
        notes.append(f"BatchNorm statistics (buffers): {stats:,}; Keras counts them as "
                     "non-trainable params, so its total would read "
                     f"{trainable + frozen + stats:,}")
    notes.append(f"Forward: {forward_gflops(model, image_size):.3g} GFLOPs per image")
    return Listing(f"{name}: {num_classes} classes, input 3 x {image_size} x {image_size}",
                   rows, notes)


def layers_listing(name: str, num_classes: int = 10, small_input: bool = False) -> Listing:
    """`imgcls models NAME --layers`: the numbered layers with weights and their stages, which
    is what `fine_tune_at` and `last_stages` in a config's `stages:` count."""
    model = create_model(name, num_classes, small_input=small_input)
    modules = dict(model.named_modules())
    blocks = stages(model)
    stage_of = {p: label for label, params in blocks for p in params}
    rows = []
    for index, layer in enumerate(layers(model)):
        own = list(modules[layer].parameters(recurse=False))
        first = next(n for n, _ in model.named_parameters() if n.startswith(layer + "."))
        rows.append({"fine_tune_at": str(index), "layer": layer,
                     "type": type(modules[layer]).__name__,
                     "params": f"{sum(p.numel() for p in own):,}",
                     "stage": stage_of.get(first, "")})
    return Listing(f"{name}: layers with weights (head: {head_name(model)})", rows,
                   ["last_stages: K trains the last K of "
                    + ", ".join(label for label, _ in blocks)])
