"""Batch augmentation: ops that take a whole NCHW batch (uint8 0-255 or float 0-1) on the
training device and give every image its own random parameters.

Configs list ops by name (`augment.ops`); `resolve_op` turns one entry into its fully
resolved form (every default written out, so a run's saved config says exactly what ran)
and `create_augment` into callables. The loader applies them right after gathering a batch,
before normalization; `augment.mix` (MixUp/CutMix) runs after it, since it mixes labels too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from imgcls.augment import ops, policies  # noqa: F401  (register the ops)
from imgcls.augment.base import AUGMENTS, AugmentContext, AugmentOp
from imgcls.augment.mix import Mixer

if TYPE_CHECKING:
    from imgcls.config import AugmentConfig

__all__ = ["AUGMENTS", "AugmentContext", "AugmentOp", "Mixer", "create_augment", "op_rows",
           "resolve_op"]


def build_op(entry: str | dict[str, Any]) -> AugmentOp:
    """An op from a config entry: a name, or a mapping with `name` and the op's keys."""
    spec = {"name": entry} if isinstance(entry, str) else dict(entry)
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError("expected an op name or a mapping with a `name` key, e.g. "
                         "{name: translate, frac: 0.1, p: 1.0}")
    name = spec.pop("name")
    if name not in AUGMENTS:
        raise ValueError(AUGMENTS.unknown_message(str(name)))
    cls = AUGMENTS.get(name)
    try:
        return cls.model_validate(spec)
    except ValidationError as exc:
        raise ValueError(f"{name}: " + "; ".join(_problem(e, cls) for e in exc.errors())
                         ) from None


def _problem(error: dict[str, Any], cls: type[AugmentOp]) -> str:
    key = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key {key!r}; valid keys: {', '.join(cls.model_fields)}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key} = {error['input']!r}: {message}" if key else message


def resolve_op(entry: str | dict[str, Any]) -> dict[str, Any]:
    return build_op(entry).spec()


def create_augment(cfg: AugmentConfig) -> list[AugmentOp]:
    return [build_op(entry) for entry in cfg.ops]


def op_rows() -> list[tuple[str, str, str]]:
    """(name, what it does, its keys with defaults) of every op and policy, for listings."""
    rows = []
    for name in AUGMENTS:
        cls = AUGMENTS.get(name)
        keys = ", ".join(f"{k}={f.default!r}" if f.default is not None else k
                         for k, f in cls.model_fields.items())
        rows.append((name, cls.summary, keys))
    return rows
