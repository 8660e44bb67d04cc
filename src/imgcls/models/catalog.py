"""The rows of `imgcls models`: which models match a pattern, and what each costs."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Iterator
from typing import Any

from imgcls.models import MODELS, TIMM_PREFIX, create_model
from imgcls.models.profile import count_parameters, forward_gflops, training_images_per_second
from imgcls.models.timm_models import timm_names

TIMM_LIMIT = 40  # creating a model per row: a broad timm pattern would take minutes


def matching_names(pattern: str | None) -> tuple[list[str], int]:
    """Names matching a glob (`resnet*`, `timm:convnext_*`), and how many matched in all.
    Registry names without a pattern; timm names only when the pattern says `timm:`."""
    if pattern and pattern.startswith(TIMM_PREFIX):
        glob = pattern[len(TIMM_PREFIX):]
        names = sorted(n for n in timm_names() if fnmatch.fnmatchcase(n, glob))
        return [TIMM_PREFIX + n for n in names[:TIMM_LIMIT]], len(names)
    names = [n for n in MODELS.names() if fnmatch.fnmatchcase(n, pattern or "*")]
    return names, len(names)


def describe(name: str) -> str:
    if name.startswith(TIMM_PREFIX):
        return ""
    return " ".join((inspect.getdoc(MODELS.get(name)) or "").split("\n\n")[0].split())


def model_rows(names: list[str], image_size: int, num_classes: int, bench: bool = False,
               batch_size: int = 64, small_input: bool = False) -> Iterator[dict[str, Any]]:
    """One row per model; a model that cannot take `image_size` gets the reason instead."""
    for name in names:
        row: dict[str, Any] = {"model": name, "source": "timm" if name.startswith(TIMM_PREFIX)
                               else "imgcls", "about": describe(name)}
        try:
            model = create_model(name, num_classes, image_size,
                                 small_input and name.startswith(TIMM_PREFIX))
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
