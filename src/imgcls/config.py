"""The whole experiment configuration in one place: the schema, and YAML in and out.

Every setting a run depends on lives in these pydantic models, and the resolved config saved
with a run reproduces it. This module is a leaf: it imports nothing from imgcls but the
registry's spelling helper, so reading a config needs neither torch nor timm, and no
component depends on it at run time. The checks that need a component (a registry name, a
model's arguments, an augmentation op's keys) are `imgcls.configure`'s; load configs there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from imgcls.registry import closest

Metric = Literal["val_accuracy", "val_loss", "train_accuracy", "train_loss"]
TTA = Literal["none", "mirror", "mirror_translate"]


class ConfigError(ValueError):
    """A config problem, worded for the person who wrote the config."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    source: str = "cifar10"  # a data source: cifar10, cifar100, folder
    path: str | None = None  # archive, folder or download target; None = the cache dir
    image_size: int | None = Field(None, ge=8, le=1024)  # None = the source's native size
    resize: Literal["center_crop", "squash", "pad"] = "center_crop"
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # folders without a test/ split only
    labels: Literal["fine", "coarse"] = "fine"  # cifar100 only
    on_corrupt: Literal["skip", "error"] = "skip"
    sha256: str | None = None  # expected checksum of the archive (overrides the official one)
    url: str | None = None  # download from here instead of the official URL (file:// works)
    download: bool = True
    cache_dir: str | None = None  # default: $IMGCLS_CACHE or ~/.cache/imgcls
    train_subset: int | None = Field(None, ge=1)  # stratified subset of the training data
    split_seed: int = 0  # fixes the val/test split across run seeds
    in_memory: bool | None = None  # None: if the images take under half the free memory


class ModelConfig(Strict):
    name: str = "fastnet94"
    args: dict[str, Any] = Field(default_factory=dict)  # extra keyword arguments
    small_input: bool = False  # timm models: stride-1 stem, no stem max-pool (32-64 px)
    dropout: float | None = Field(None, ge=0, lt=1)  # None: the model's own default
    drop_path: float | None = Field(None, ge=0, lt=1)  # stochastic depth (timm models)
    # transfer learning: true = timm's hub weights; or a state dict / safetensors file, an
    # imgcls checkpoint or run folder. The head is replaced for this run's classes.
    pretrained: bool | str = False
    # what the network sees; None: what the pretrained weights were trained on, else the
    # data's size. Batches are resized to it on the fly (e.g. 72 px data -> 224 px model).
    input_size: int | None = Field(None, ge=8, le=1024)
    mean: tuple[float, float, float] | None = None  # None: the weights', else the data's
    std: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)],
               Annotated[float, Field(gt=0)]] | None = None
    interpolation: Literal["bilinear", "bicubic"] | None = None  # None: the weights' or bilinear



class MixConfig(Strict):
    """MixUp / CutMix; off while both alphas are 0."""

    mixup_alpha: float = Field(0.0, ge=0)  # Beta(alpha, alpha) mixing weights
    cutmix_alpha: float = Field(0.0, ge=0)
    prob: float = Field(1.0, ge=0, le=1)  # share of images mixed
    switch_prob: float = Field(0.5, ge=0, le=1)  # CutMix instead of MixUp, when both are on

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


class AugmentConfig(Strict):
    """`ops` run in order on every training batch; each entry is an op or policy name or a
    mapping `{name: ..., p: ..., <the op's keys>}` (`imgcls augment list`)."""

    ops: list[str | dict[str, Any]] = Field(default_factory=lambda: ["flip"])
    mix: MixConfig = Field(default_factory=MixConfig)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """The foundation's `flip: none|random|alternate` and `translate: PIXELS` keys, as
        ops (saved runs and short configs keep working)."""
        if not isinstance(data, dict) or not {"flip", "translate"} & set(data):
            return data
        data = dict(data)
        if "ops" in data:
            raise ValueError("augment: give either ops or the flip/translate shorthand, "
                             "not both")
        flip, pixels = data.pop("flip", "random"), data.pop("translate", 0)
        valid_flips = {"none": None, "random": {"name": "flip"},
                       "alternate": {"name": "flip", "alternate": True}}
        if flip not in valid_flips:
            raise ValueError(f"augment.flip = {flip!r}: expected one of "
                             f"{', '.join(map(repr, valid_flips))}")
        if not isinstance(pixels, int) or pixels < 0:
            raise ValueError(f"augment.translate = {pixels!r}: expected a whole number of "
                             "pixels >= 0")
        ops = [valid_flips[flip]] if valid_flips[flip] else []
        data["ops"] = ops + ([{"name": "translate", "pixels": pixels}] if pixels else [])
        return data


class SAMConfig(Strict):
    """Sharpness-aware minimization around the chosen optimizer: each step first climbs to
    the worst point within `rho` of the weights, then takes the gradient there."""

    rho: float = Field(0.05, gt=0)  # radius of the neighbourhood (ASAM papers use ~0.5-2)
    adaptive: bool = False  # ASAM: the radius scales with each weight's magnitude


class OptimConfig(Strict):
    name: str = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd, rmsprop, muon (its non-filter groups)
    nesterov: bool = True
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw, lion (Lion's paper: 0.9, 0.99)
    eps: float = Field(1e-8, gt=0)
    rho: float = Field(0.9, gt=0, lt=1)  # adadelta, rmsprop: decay of the squared-gradient mean
    # the optimizer's own decay: decoupled (w -= lr * wd * w) in adamw, lion; added to the
    # gradient (= an L2 penalty) in sgd, adam, adadelta, rmsprop and muon's non-filter groups
    weight_decay: float = Field(5e-4, ge=0)
    norm_weight_decay: float = Field(0.0, ge=0)  # for norm layers and biases
    norm_lr_scale: float = Field(1.0, gt=0)  # their lr = lr * norm_lr_scale
    # explicit penalty l2/2 * sum(w^2) added to the loss, as Keras regularizers and note 003
    l2: float = Field(0.0, ge=0)
    norm_l2: float = Field(0.0, ge=0)  # the same for norm layers and biases
    clip_grad_norm: float | None = Field(None, gt=0)  # rescale larger gradients to this norm
    sam: SAMConfig | None = None
    muon_lr: float = Field(0.02, gt=0)  # `muon` only: lr of the conv filters
    muon_momentum: float = Field(0.95, ge=0, lt=1)


class PlateauConfig(Strict):
    """Keras's ReduceLROnPlateau (note 002): lr x factor when `monitor` has not improved by
    `min_delta` for `patience` epochs; then `cooldown` epochs of grace; never below min_lr."""

    monitor: Metric = "val_loss"
    mode: Literal["max", "min"] = "min"
    factor: float = Field(0.1, gt=0, lt=1)
    patience: int = Field(10, ge=1)
    cooldown: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0)  # floor for the logged (main group's) lr
    min_delta: float = Field(1e-4, ge=0)


class ScheduleConfig(Strict):
    name: str = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    start_factor: float = Field(0.0, ge=0)  # lr multiplier at step 0 of the warm-up
    end_factor: float = Field(0.0, ge=0)  # lr multiplier at the last step
    # step: x gamma every step_epochs; multistep: x gamma at each milestone epoch;
    # exponential: x gamma per epoch. None: 0.1 for step/multistep, 0.95 for exponential
    gamma: float | None = Field(None, gt=0, le=1)
    step_epochs: float = Field(30, gt=0)
    milestones: list[Annotated[float, Field(gt=0)]] = Field(default_factory=list)
    decay: float = Field(0.0, ge=0)  # inverse_time: lr / (1 + decay * step), Keras's `decay`
    plateau: PlateauConfig = Field(default_factory=PlateauConfig)

    @model_validator(mode="after")
    def _schedule_defaults(self) -> ScheduleConfig:
        if self.gamma is None and self.name in ("step", "multistep", "exponential"):
            self.gamma = 0.95 if self.name == "exponential" else 0.1
        if self.name == "multistep" and not self.milestones:
            raise ValueError("multistep needs schedule.milestones, the epochs at which the "
                             "lr is multiplied by gamma, e.g. [30, 60, 90]")
        if self.name == "inverse_time" and self.decay == 0:
            raise ValueError("inverse_time needs schedule.decay > 0 (Keras's `decay`, e.g. "
                             "0.004 as in note 003)")
        return self


class CheckpointConfig(Strict):
    monitor: Metric = "val_accuracy"
    mode: Literal["max", "min"] = "max"


class EarlyStoppingConfig(Strict):
    monitor: Metric = "val_loss"
    mode: Literal["max", "min"] = "min"
    patience: int = Field(10, ge=1)
    min_delta: float = Field(0.0, ge=0)


class EMAConfig(Strict):
    decay: float = Field(0.999, gt=0, lt=1)  # per optimizer step
    warmup: bool = True  # decay min(decay, (1 + n) / (10 + n)) after n steps


class TrainConfig(Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    micro_batch_size: int | None = Field(None, ge=1)  # split batches, accumulate gradients
    eval_batch_size: int = Field(1000, ge=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    loss_reduction: Literal["mean", "sum"] = "mean"  # sum: lr is per example (airbench)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"  # CUDA only
    channels_last: bool = True
    deterministic: bool = False  # bitwise-repeatable kernels, for resume checks
    threads: int | None = Field(None, ge=1)
    # progressive resizing: the training image size of epochs 1, 2, ...; the last entry holds
    # for the remaining epochs; empty: data.image_size throughout. Evaluation is at full size.
    image_sizes: list[Annotated[int, Field(ge=4, le=1024)]] = Field(default_factory=list)
    # scale: resize the whole image; crop: a random window of that size (objects keep their
    # size, the network sees part of the image)
    resize_mode: Literal["scale", "crop"] = "scale"
    tta: TTA = "none"
    ema: EMAConfig | None = None  # evaluate (and save as best.pt) a moving average of weights
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    early_stopping: EarlyStoppingConfig | None = None
    tensorboard: bool = True


Trainable = Literal["head", "all"]


class StageConfig(Strict):
    """One phase of a staged run (transfer learning): its epochs, what trains, and its own
    optimizer and schedule settings over the run's. Say what trains with exactly one of
    `train` (head | all), `fine_tune_at` (a layer index or module name, Keras's way: it and
    everything after it train) or `last_stages` (the last K stages and the head)."""

    name: str | None = None
    epochs: int = Field(ge=1)
    train: Trainable | None = None
    fine_tune_at: int | str | None = None
    last_stages: int | None = Field(None, ge=1)
    layer_lr_decay: float | None = Field(None, gt=0, le=1)  # lr x this per stage from the head
    optim: dict[str, Any] = Field(default_factory=dict)  # keys of `optim` to change
    schedule: dict[str, Any] = Field(default_factory=dict)  # keys of `schedule` to change
    # head-only stages: compute the frozen backbone's features once and train the head on
    # them. auto: when the run has no augmentation; true: always (this stage then sees the
    # images unaugmented, later stages augment them as configured); false: never
    cache_features: Literal["auto"] | bool = "auto"

    @model_validator(mode="after")
    def _one_choice(self) -> StageConfig:
        given = [k for k in ("train", "fine_tune_at", "last_stages")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("say what trains with exactly one of train (head | all), "
                             f"fine_tune_at or last_stages; got {given or 'none'}")
        if self.cache_features is True and self.train != "head":
            raise ValueError("cache_features: true needs train: head (a frozen backbone)")
        return self


class Config(Strict):
    name: str = "run"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    stages: list[StageConfig] = Field(default_factory=list)  # empty: one stage, all trains

    @model_validator(mode="after")
    def _stages(self) -> Config:
        if not self.stages:
            return self
        total = sum(s.epochs for s in self.stages)
        if "epochs" in self.train.model_fields_set and self.train.epochs != total:
            raise ValueError(f"train.epochs = {self.train.epochs} but the stages add up to "
                             f"{total} epochs; drop train.epochs (it follows the stages)")
        self.train.epochs = total
        for i in range(len(self.stages)):
            _, schedule = self.stage_settings(i)  # their optim/schedule changes must validate
            if (schedule.name == "plateau") != (self.schedule.name == "plateau"):
                raise ValueError(f"stages[{i}]: schedule.name plateau is a run-wide choice; set "
                                 "it in the run's schedule, not in one stage")
        return self

    def stage_settings(self, index: int) -> tuple[OptimConfig, ScheduleConfig]:
        """The optimizer and schedule settings of stage `index`: the run's, changed by the
        stage's own keys."""
        stage = self.stages[index]
        try:
            optim = OptimConfig.model_validate({**self.optim.model_dump(), **stage.optim})
            schedule = ScheduleConfig.model_validate({**self.schedule.model_dump(),
                                                      **stage.schedule})
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"stages[{index}] ({stage.name or 'unnamed'}): "
                             f"{exc.title.removesuffix('Config').lower()}."
                             f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        return optim, schedule

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the key at `loc`, to list its valid keys."""
    model: type[BaseModel] | None = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if model else None
        annotation = field.annotation if field else None
        model = annotation if isinstance(annotation, type) and issubclass(
            annotation, BaseModel) else None
        if annotation is not None and model is None:  # e.g. `EarlyStoppingConfig | None`
            for arg in getattr(annotation, "__args__", ()):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    model = arg
    return model


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        owner = _section_model(error["loc"])
        valid = list(owner.model_fields) if owner else []
        name = str(error["loc"][-1])
        return f"unknown key {key!r}{closest(name, valid)}; valid keys here: {', '.join(valid)}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key} = {error['input']!r}: {message}" if key else message


def parse(raw: dict[str, Any], origin: str = "config") -> Config:
    """The schema's verdict on a raw mapping; `imgcls.configure.validate` adds the checks
    that need the components. A saved run's config, checked when it was made, needs only
    this."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = "\n".join(f"  - {_describe(e)}" for e in exc.errors())
        raise ConfigError(f"{origin}: invalid configuration:\n{problems}") from None


def parse_override(text: str, option: str = "--set",
                   example: str = "optim.lr=0.05") -> tuple[list[str], Any]:
    """`optim.lr=0.05` -> (['optim', 'lr'], 0.05); values are parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{option} {text!r}: expected KEY=VALUE, e.g. {example}")
    return key.strip().split("."), yaml.safe_load(value) if value.strip() else None


def set_key(raw: dict[str, Any], key: str, value: Any, origin: str = "--set") -> None:
    """Set the dotted `key` (e.g. 'optim.lr') in a raw config mapping, creating sections."""
    path = key.split(".")
    node = raw
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(path[: i + 1])
            raise ConfigError(f"{origin}: {where} is a value, not a section")
        node = child
    node[path[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        set_key(raw, ".".join(path), value, f"--set {text!r}")
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return raw
