"""Loading a config: the schema of `imgcls.config` plus every check that needs a component,
so a config that cannot run is refused when it is read, before any data is decoded.

`imgcls.config` stays a leaf that knows no component; here each component is asked about
the names and keys that belong to it (a data source, a model and its arguments, an
augmentation op, an optimizer, a schedule), and the combinations no single section can see
(SAM with fp16 loss scaling) are refused. Augmentation entries come back fully resolved,
every default written out, so a run's saved config says exactly what ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from imgcls.config import Config, ConfigError, apply_overrides, parse, read_yaml

__all__ = ["ConfigError", "check", "load_config", "validate"]


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (or the defaults when `path` is None), apply `--set`s, check it."""
    raw = read_yaml(path) if path is not None else {}
    origin = str(path) if path is not None else "defaults"
    if overrides:
        origin += " with --set " + " ".join(overrides)
    return validate(apply_overrides(raw, list(overrides)), origin)


def validate(raw: dict[str, Any], origin: str = "config") -> Config:
    """A raw mapping as a checked Config, or a ConfigError listing every problem."""
    cfg = parse(raw, origin)
    problems = check(cfg)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{origin}: invalid configuration:\n{lines}")
    return cfg


def check(cfg: Config) -> list[str]:
    """Every problem the components find in `cfg`, one line each (empty: it can run).
    Resolves `augment.ops` in place."""
    return [f"{key}: {message}" for key, message in _problems(cfg)]


def _problems(cfg: Config) -> Iterator[tuple[str, str]]:
    from imgcls.augment import resolve_op
    from imgcls.data import check_source
    from imgcls.models import (
        check_model_name,
        check_regularizers,
        check_small_input,
        is_timm,
    )
    from imgcls.train.optim import OPTIMIZERS
    from imgcls.train.schedule import SCHEDULES

    def named(key: str, value: str, registry) -> Iterator[tuple[str, str]]:
        if value not in registry:
            yield f"{key} = {value!r}", registry.unknown_message(value)

    d = cfg.data
    yield from _refused(f"data.source = {d.source!r}", check_source, d.source)
    needs_path = {"folder": "a folder of class sub-folders, or a .zip/.tar(.gz) archive of one",
                  "csv": "a CSV or TSV file of image paths and labels",
                  "hf": "a Hugging Face hub name, a save_to_disk folder, parquet file(s) or "
                        "an image folder"}
    if d.source in needs_path and not d.path:
        yield "data.path", f"data.source {d.source!r} needs data.path: {needs_path[d.source]}"
    if d.val_fraction == 0:
        for key, metric in cfg.monitors():
            if metric.startswith("val_") and metric not in ("val_accuracy", "val_loss"):
                yield (f"{key} = {metric!r}", "is measured on the validation split only; set "
                       "data.val_fraction > 0 or monitor val_accuracy / val_loss")
    m = cfg.model
    if m.pretrained is True and not is_timm(m.name):
        yield ("model.pretrained = true", f"downloads timm's weights, but {m.name!r} is not a "
               "timm: model; give a weights file or an imgcls run folder instead")
    unknown = list(_refused(f"model.name = {m.name!r}", check_model_name, m.name))
    yield from unknown
    if not unknown:
        yield from _refused("model", check_small_input, m.name, m.small_input)
        yield from _refused("model", check_regularizers, m.name, m.dropout, m.drop_path, m.args)
    resolved = []
    for i, entry in enumerate(cfg.augment.ops):
        try:
            resolved.append(resolve_op(entry))
        except ValueError as exc:
            yield f"augment.ops.{i} = {entry!r}", str(exc)
    if len(resolved) == len(cfg.augment.ops):
        cfg.augment.ops = resolved
        alternating = [i for i, op in enumerate(resolved) if op.get("alternate")]
        if alternating and d.sampler == "balanced":
            yield (f"augment.ops.{alternating[0]}", "flip alternate: true mirrors each image "
                   "on alternate epochs, but data.sampler: balanced repeats images within an "
                   "epoch, and every copy would get the same flip; drop alternate (a random "
                   "flip) or use data.sampler: shuffle")
    settings = [("", cfg.optim, cfg.schedule)]
    settings += [(f"stages[{i}].", *cfg.stage_settings(i)) for i in range(len(cfg.stages))]
    for prefix, optim, schedule in settings:
        yield from named(f"{prefix}optim.name", optim.name, OPTIMIZERS)
        yield from named(f"{prefix}schedule.name", schedule.name, SCHEDULES)
        if optim.sam and cfg.train.amp == "fp16":
            yield (f"{prefix}optim.sam", "not supported with train.amp = 'fp16' (loss scaling "
                   "would scale SAM's ascent step); use 'bf16' or 'none'")
    if cfg.train.amp == "fp16" and cfg.train.device == "cpu":
        yield "train.amp = 'fp16'", "needs CUDA; on the CPU use 'bf16' or 'none'"


def _refused(key: str, check_fn: Callable[..., None], *args: Any) -> Iterator[tuple[str, str]]:
    try:
        check_fn(*args)
    except ValueError as exc:
        yield key, str(exc)
