"""Experiment files: one base config, the axes to vary, seeds, and (for `tune`) a search space.

    name: batch-size
    base: ../configs/cifar10-fast.yaml     # a config file (relative to this file) or a mapping
    set: {train.epochs: 4}                 # overrides for every variant
    grid: {train.batch_size: [64, 128, 256, 512]}     # the cartesian product of the axes
    variants:                              # and/or an explicit list (crossed with the grid)
      - {name: no-aug, set: {augment.ops: []}}
    repeats: 3                             # seeds base.seed .. base.seed+2 (or `seeds: [...]`)
    baseline: batch_size=64                # the variant the others are compared with
    metric: test_accuracy                  # the summary figure compared

Every variant x seed is validated as a full config before anything runs, so a typo in an
axis fails at once, naming the file, the variant and the key.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from imgcls.config import Config, ConfigError, Strict, read_yaml, set_key
from imgcls.configure import validate
from imgcls.registry import closest

SUMMARY_METRICS = {  # summary.json figure -> (label, scale shown, higher is better)
    "test_accuracy": ("test accuracy", 100.0, True),
    "test_accuracy_plain": ("test accuracy without TTA", 100.0, True),
    "best_val_accuracy": ("best val accuracy", 100.0, True),
    "test_loss": ("test loss", 1.0, False),
    "test_macro_f1": ("test macro-F1", 100.0, True),
    "test_balanced_accuracy": ("test balanced accuracy", 100.0, True),
    "test_top5_accuracy": ("test top-5 accuracy", 100.0, True),
}


class Variant(Strict):
    name: str
    set: dict[str, Any] = Field(default_factory=dict)


class SearchParam(Strict):
    """One dimension of a search space: int / float (optionally log-scaled) or categorical."""

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty `choices` list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} parameter needs `low` < `high`")
        elif self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        return self

    def extremes(self) -> list[Any]:
        """Values that must all make valid configs (checked before any trial runs)."""
        if self.type == "categorical":
            return list(self.choices or [])
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]


class TuneSettings(Strict):
    trials: int = Field(20, ge=1)
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    metric: str = "val_accuracy"  # a per-epoch metric; the trial's value is its best epoch
    direction: Literal["maximize", "minimize"] = "maximize"
    startup_trials: int = Field(5, ge=0)  # random trials before TPE / before pruning starts
    warmup_epochs: int = Field(1, ge=0)  # epochs a trial always trains before it can be pruned
    storage: str | None = None  # any Optuna/SQLAlchemy URL; default sqlite file in the folder
    study: str | None = None  # default: the experiment name


class Experiment(Strict):
    name: str
    base: str | dict[str, Any] | None = None
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    variants: list[Variant] = Field(default_factory=list)
    repeats: int = Field(1, ge=1)
    seeds: list[int] | None = None
    baseline: str | None = None
    metric: Literal[tuple(SUMMARY_METRICS)] = "test_accuracy"  # type: ignore[valid-type]
    search: dict[str, SearchParam] = Field(default_factory=dict)
    tune: TuneSettings = Field(default_factory=TuneSettings)


def variant_label(key: str, value: Any, keys: list[str]) -> str:
    """`train.batch_size`, 64 -> 'batch_size=64' (the full key if the last part is shared)."""
    short = key.rsplit(".", 1)[-1]
    if sum(k.rsplit(".", 1)[-1] == short for k in keys) > 1:
        short = key
    text = value if isinstance(value, str) else json.dumps(value)
    return f"{short}={text}"


def safe_name(name: str) -> str:
    """A variant name usable as a folder name on every filesystem."""
    return re.sub(r"[^A-Za-z0-9._=,+-]", "-", name)


class ExperimentPlan:
    """An experiment file, resolved: the variants with their overrides, and the seeds."""

    def __init__(self, spec: Experiment, base_raw: dict[str, Any], origin: str):
        self.spec, self.base_raw, self.origin = spec, base_raw, origin
        self.variants = self._expand()
        base_seed = validate(self._raw({}), origin).seed
        self.seeds = spec.seeds or [base_seed + i for i in range(spec.repeats)]
        names = [name for name, _ in self.variants]
        if spec.baseline is not None and spec.baseline not in names:
            raise ConfigError(f"{origin}: baseline {spec.baseline!r} is not a variant"
                              f"{closest(spec.baseline, names)}; variants: {', '.join(names)}")
        self.baseline = spec.baseline or names[0]
        for name, _ in self.variants:  # fail now, not three hours in
            self.config(name, self.seeds[0])
        for key, param in spec.search.items():
            for value in param.extremes():
                self._validate({key: value}, f"search.{key} = {value!r}")

    @property
    def name(self) -> str:
        return self.spec.name

    def _expand(self) -> list[tuple[str, dict[str, Any]]]:
        spec = self.spec
        for key in [*spec.grid, *spec.set, *(k for v in spec.variants for k in v.set)]:
            if key == "seed":
                raise ConfigError(f"{self.origin}: vary seeds with `repeats` or `seeds`, "
                                  "not as a config key")
        for key, values in spec.grid.items():
            if not values:
                raise ConfigError(f"{self.origin}: grid axis {key!r} has no values")
        keys = list(spec.grid)
        grid = [dict(zip(keys, combo, strict=True))
                for combo in itertools.product(*spec.grid.values())]
        listed = spec.variants or [Variant(name="")]
        variants = []
        for variant, point in itertools.product(listed, grid):
            parts = [variant.name] if variant.name else []
            parts += [variant_label(k, v, keys) for k, v in point.items()]
            name = safe_name(",".join(parts) or spec.name)
            variants.append((name, {**variant.set, **point}))
        names = [name for name, _ in variants]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"{self.origin}: variant names repeat: {', '.join(duplicates)}; "
                              "give each listed variant its own name")
        return variants

    def _raw(self, overrides: dict[str, Any], where: str = "set") -> dict[str, Any]:
        raw = copy.deepcopy(self.base_raw)
        for key, value in {**self.spec.set, **overrides}.items():
            set_key(raw, key, copy.deepcopy(value), f"{self.origin}: {where} key {key!r}")
        return raw

    def _validate(self, overrides: dict[str, Any], where: str) -> Config:
        return validate(self._raw(overrides, where), f"{self.origin}: {where}")

    def overrides(self, variant: str) -> dict[str, Any]:
        for name, overrides in self.variants:
            if name == variant:
                return overrides
        raise KeyError(variant)

    def config(self, variant: str, seed: int, extra: dict[str, Any] | None = None) -> Config:
        """The full config of one run: base, `set`, the variant's overrides, extra, seed."""
        overrides = {**self.overrides(variant), **(extra or {})}
        cfg = self._validate(overrides, f"variant {variant!r}")
        return cfg.model_copy(update={"seed": seed, "name": f"{self.name}/{variant}"})

    def fingerprint(self) -> str:
        """Identifies what the plan trains, so a changed experiment file is noticed."""
        text = json.dumps({"base": self.base_raw, "set": self.spec.set,
                           "variants": self.variants}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_experiment(path: str | Path) -> ExperimentPlan:
    path = Path(path)
    raw = read_yaml(path)
    try:
        spec = Experiment.model_validate(raw)
    except ValidationError as exc:
        problems = "\n".join(
            f"  - {'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors())
        raise ConfigError(f"{path}: invalid experiment file:\n{problems}") from None
    if isinstance(spec.base, str):
        base_path = (path.parent / spec.base).resolve()
        if not base_path.is_file():
            raise ConfigError(f"{path}: base config {spec.base!r} not found "
                              f"(looked for {base_path})")
        base_raw = read_yaml(base_path)  # its data.path stays relative to the working dir
    else:
        base_raw = copy.deepcopy(spec.base or {})
    return ExperimentPlan(spec, base_raw, str(path))

