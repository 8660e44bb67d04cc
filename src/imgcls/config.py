"""The whole experiment configuration in one place: the schema, and YAML in and out.

Every setting a run depends on lives in these pydantic models, and the resolved config saved
with a run reproduces it. This module is a leaf: it imports nothing from imgcls but the
registry's spelling helper, so reading a config needs neither torch nor timm, and no
component depends on it at run time. The checks that need a component (a registry name, a
model's arguments, an augmentation op's keys) are `imgcls.configure`'s; load configs there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from imgcls.registry import closest

Metric = Literal["val_accuracy", "val_loss", "val_macro_f1", "val_balanced_accuracy",
                 "val_top5_accuracy", "train_accuracy", "train_loss"]
TTA = Literal["none", "mirror", "mirror_translate"]


class ConfigError(ValueError):
    """A config problem, worded for the person who wrote the config."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    source: str = Field(
        "cifar10", description="The data source: `cifar10`, `cifar100` (the official "
        "\"python version\" archives), `folder` (one sub-folder per class, optionally under "
        "`train/` and `test/` or `val/`), `csv` (a CSV/TSV file of image paths and labels), "
        "`hf` (a Hugging Face `datasets` dataset; `pip install -e '.[hf]'`) or "
        "`torchvision:<Name>` (a torchvision classification dataset, e.g. "
        "`torchvision:FashionMNIST`).")
    path: str | None = Field(
        None, description="An archive (`.tar.gz`, `.tgz`, `.tar`, `.zip`, extracted once into "
        "the cache), a folder, a CSV/TSV file, a Hugging Face hub name, `save_to_disk` "
        "folder or parquet file(s), or where to download to. None: the cache dir.")
    image_size: int | None = Field(
        None, ge=8, le=1024, description="Square side in pixels the images are decoded and "
        "stored at. None: the source's native size; for images of mixed sizes, the median "
        "short side (rounded to a multiple of 8, at most 256), stated in the log and the "
        "run's resolved config.")
    channels: Literal["auto", 1, 3] = Field(
        "auto", description="Colour channels the images are stored and trained with: 1 "
        "(grayscale, a third of the memory), 3 (RGB; grayscale images are repeated), or "
        "`auto`: 1 when every training image is grayscale, else 3.")
    image_column: str | None = Field(
        None, description="`csv`: the column of image paths (relative to the CSV file); "
        "`hf`: the image column. None: the first of path, filename, file, image, img.")
    label_column: str | None = Field(
        None, description="`csv`/`hf`: the column of labels (class names or integers). "
        "None: the first of label, labels, class, category, target, fine_label.")
    split_column: str | None = Field(
        None, description="`csv`: a column whose values (`train`, `test`; `val` counts as "
        "test) assign each row's split. None: the column `split` if there is one, else the "
        "stratified `test_fraction` split.")
    hf_config: str | None = Field(
        None, description="`hf`: the dataset's configuration (subset) name, for hub datasets "
        "that have several.")
    sampler: Literal["shuffle", "balanced"] = Field(
        "shuffle", description="Training batch order: `shuffle` (each image once per epoch) "
        "or `balanced` (each epoch draws as many images, every class equally often, with "
        "replacement: for imbalanced classes).")
    resize: Literal["center_crop", "squash", "pad"] = Field(
        "center_crop", description="How `folder` images are brought to `image_size`: "
        "`center_crop` scales the short side and cuts the centre square (keeps the aspect "
        "ratio, drops the edges); `squash` scales both sides (keeps everything, distorts, as "
        "Keras' `image_dataset_from_directory`); `pad` scales the long side and pads with "
        "black (keeps both).")
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Stratified validation split taken from the "
        "training data. 0: no validation split; a monitored `val_*` metric then falls back "
        "to its `train_*` twin.")
    test_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Stratified test split, for folders without a "
        "`test/` or `val/` split only.")
    labels: Literal["fine", "coarse"] = Field(
        "fine", description="CIFAR-100 only: `fine` (100 classes) or `coarse` (20).")
    on_corrupt: Literal["skip", "error"] = Field(
        "skip", description="Unreadable or non-image files: `skip` (listed by `imgcls data "
        "info`, in `preprocess.json` and counted in `summary.json`) or `error`.")
    sha256: str | None = Field(
        None, description="Expected SHA-256 of the archive, checked before anything in it "
        "is read (overrides the official checksum); required for your own CIFAR-format "
        "archives.")
    url: str | None = Field(
        None, description="Download from here instead of the official URL (`https://`, "
        "`file://`).")
    download: bool = Field(
        True, description="Allow downloading a missing archive; false: fail with a message "
        "saying where to put it.")
    cache_dir: str | None = Field(
        None, description="Where decoded arrays, extracted archives and downloads are kept. "
        "None: `$IMGCLS_CACHE` or `~/.cache/imgcls`.")
    train_subset: int | None = Field(
        None, ge=1, description="Train on a stratified subset of this many images. None: "
        "all of the training data.")
    split_seed: int = Field(
        0, description="Fixes the val/test split independently of `seed`, so repeated runs "
        "with different seeds share it.")
    exclude: str | None = Field(
        None, description="A text file of images to leave out, one per line (`#` starts a "
        "comment): their paths relative to the data set's folder (or the CSV's), or "
        "`train/123`-style names for array sources, as `imgcls audit` and `imgcls data info` "
        "list them. Applied before the splits; the file's SHA-256 is kept in the run's "
        "summary. A name that is not one of the data's images is an error.")
    relabel: str | None = Field(
        None, description="A CSV file of `path,class` rows (a header row is optional): "
        "images trained and tested as that class instead of their own. Names as in "
        "`data.exclude`; an unknown name or class is an error.")
    in_memory: bool | None = Field(
        None, description="Keep the decoded images in memory, on the training device; "
        "false: read each batch from the memory-mapped cache file (same ops, same batches). "
        "None: in memory when they take under half the free memory.")


class ModelConfig(Strict):
    name: str = Field(
        "fastnet94", description="A registered model (`imgcls models`, docs/models.md) or "
        "`timm:<any timm model>`.")
    args: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword arguments for the model's "
        "constructor (`dropout`, `global_pool`, timm's `drop_rate`, `in_chans`, ...).")
    small_input: bool = Field(
        False, description="`timm:` models only: a stride-1 stem conv and no stem max-pool, "
        "for 32-64 px images.")
    dropout: float | None = Field(
        None, ge=0, lt=1, description="Dropout, for models that have a dropout argument "
        "(`timm:` models get it as `drop_rate`). None: the model's own default.")
    drop_path: float | None = Field(
        None, ge=0, lt=1, description="Drop-path rate (stochastic depth), for `timm:` models "
        "(`drop_path_rate`). None: the model's own default.")
    pretrained: bool | str = Field(
        False, description="Transfer learning: true = timm's hub weights; or a state dict "
        "(`.pth`, `.pt`, `.bin`) or `.safetensors` file, an imgcls checkpoint or run folder, "
        "or `package:NAME` (the weights file an installed Python package ships). The head is "
        "replaced for this run's classes (docs/transfer.md).")
    pretrained_keys: Literal["by_name", "by_order"] | dict[str, str] = Field(
        "by_name", description="How the file's tensors find the model's: `by_name` (the same "
        "names); `by_order` (another implementation of the same architecture: matched in "
        "order, every shape checked); or regex renames `{pattern: replacement}` applied in "
        "order to the file's names, then by name.")
    input_size: int | None = Field(
        None, ge=8, le=1024, description="What the network sees; batches are resized to it "
        "on the fly (e.g. 72 px data -> 224 px model). None: what the pretrained weights "
        "were trained on, else `data.image_size`.")
    mean: tuple[float, float, float] | None = Field(
        None, description="Per-channel (RGB) normalization mean, on the 0-1 scale. None: the "
        "pretrained weights', else the training images' channel means.")
    std: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)],
               Annotated[float, Field(gt=0)]] | None = Field(
        None, description="Per-channel (RGB) normalization standard deviation, on the 0-1 "
        "scale, each > 0. None: the pretrained weights', else the training images'.")
    interpolation: Literal["bilinear", "bicubic"] | None = Field(
        None, description="The filter that resizes batches to `input_size`. None: the "
        "pretrained weights' (`bicubic` for most timm models), else `bilinear`.")

    @model_validator(mode="after")
    def _renames_compile(self) -> ModelConfig:
        if isinstance(self.pretrained_keys, dict):
            for pattern in self.pretrained_keys:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"pretrained_keys: {pattern!r} is not a regular "
                                     f"expression ({exc})") from None
        return self


class MixConfig(Strict):
    """MixUp / CutMix; off while both alphas are 0."""

    mixup_alpha: float = Field(
        0.0, ge=0, description="MixUp: mixing weights drawn from Beta(alpha, alpha); 0: no "
        "MixUp.")
    cutmix_alpha: float = Field(
        0.0, ge=0, description="CutMix: the partner's pasted box covers 1 - lam of the image, "
        "lam ~ Beta(alpha, alpha); 0: no CutMix.")
    prob: float = Field(1.0, ge=0, le=1, description="Share of the images mixed.")
    switch_prob: float = Field(
        0.5, ge=0, le=1, description="When both alphas are on: the share of mixed images "
        "that get CutMix instead of MixUp.")

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


class AugmentConfig(Strict):
    """`ops` run in order on every training batch; each entry is an op or policy name or a
    mapping `{name: ..., p: ..., <the op's keys>}` (`imgcls augment list`)."""

    ops: list[str | dict[str, Any]] = Field(
        default_factory=lambda: ["flip"], description="Ops and policies run in order on every "
        "training batch, on the training device, each image drawing its own parameters: a "
        "name, or `{name: ..., p: ..., <the op's keys>}` (`imgcls augment list`, "
        "docs/augmentation.md). `[]`: no augmentation. The foundation's shorthand "
        "`augment.flip: none|random|alternate` and `augment.translate: PIXELS` is still read "
        "and becomes ops.")
    mix: MixConfig = Field(
        default_factory=MixConfig, description="MixUp / CutMix, run after normalization "
        "(they mix the labels too).")

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

    rho: float = Field(
        0.05, gt=0, description="Radius of the neighbourhood (the ASAM papers use about "
        "0.5-2).")
    adaptive: bool = Field(
        False, description="ASAM: the radius scales with each weight's magnitude.")


class OptimConfig(Strict):
    name: str = Field(
        "sgd", description="The optimizer: `sgd` (momentum, Nesterov), `adam`, `adamw`, "
        "`adadelta`, `rmsprop`, `lion`, `muon` (Muon on the conv filters + Nesterov SGD on "
        "the rest); docs/training.md.")
    lr: float = Field(
        0.1, gt=0, description="Learning rate of the weights (the schedule multiplies it).")
    momentum: float = Field(
        0.9, ge=0, lt=1, description="Momentum of `sgd`, `rmsprop` and `muon`'s non-filter "
        "groups.")
    nesterov: bool = Field(
        True, description="Nesterov momentum (`sgd`, `muon`), when momentum > 0.")
    betas: tuple[float, float] = Field(
        (0.9, 0.999), description="The two momentum decays of `adam`, `adamw`, `lion` "
        "(Lion's paper: [0.9, 0.99]).")
    eps: float = Field(
        1e-8, gt=0, description="The denominator's epsilon (`adam`, `adamw`, `adadelta`, "
        "`rmsprop`), as in PyTorch.")
    rho: float = Field(
        0.9, gt=0, lt=1, description="`adadelta`, `rmsprop`: decay of the squared-gradient "
        "mean (Adadelta's rho, RMSprop's alpha, as Keras names them).")
    weight_decay: float = Field(
        5e-4, ge=0, description="The optimizer's own decay of the weights (matrices and "
        "filters): decoupled (`w -= lr * wd * w`) in `adamw`, `lion`; added to the gradient "
        "(= an L2 penalty) in `sgd`, `adam`, `adadelta`, `rmsprop` and `muon`'s non-filter "
        "groups.")
    norm_weight_decay: float = Field(
        0.0, ge=0, description="The same decay for norm-layer parameters and biases (none "
        "by default).")
    norm_lr_scale: float = Field(
        1.0, gt=0, description="Learning rate of norm-layer parameters and biases, relative "
        "to `lr` (theirs = lr * norm_lr_scale).")
    l2: float = Field(
        0.0, ge=0, description="Explicit penalty `l2/2 * sum(w^2)` on the weights added to "
        "the loss, as Keras regularizers and note 003.")
    norm_l2: float = Field(
        0.0, ge=0, description="The same penalty for norm-layer parameters and biases.")
    clip_grad_norm: float | None = Field(
        None, gt=0, description="Rescale gradients whose total norm exceeds this (after "
        "unscaling with fp16). None: no clipping.")
    sam: SAMConfig | None = Field(
        None, description="SAM / ASAM around the optimizer, e.g. `{rho: 0.05, adaptive: "
        "false}` (not with `train.amp: fp16`). None: off.")
    muon_lr: float = Field(
        0.02, gt=0, description="`muon` only: learning rate of the conv filters.")
    muon_momentum: float = Field(
        0.95, ge=0, lt=1, description="`muon` only: momentum of the conv filters.")
    muon_renormalize_every: int = Field(
        1, ge=1, description="`muon` only: every this many steps each conv layer's filters "
        "are scaled back to their initial norm (the square root of their count) before the "
        "update; in between the norm drifts with the updates (the 2025 CIFAR-10 record: 4 "
        "to 8).")


class PlateauConfig(Strict):
    """Keras's ReduceLROnPlateau (note 002): lr x factor when `monitor` has not improved by
    `min_delta` for `patience` epochs; then `cooldown` epochs of grace; never below min_lr."""

    monitor: Metric = Field(
        "val_loss", description="The epoch metric watched (`val_*` falls back to its "
        "`train_*` twin without a validation split).")
    mode: Literal["max", "min"] = Field(
        "min", description="Whether `monitor` improves by going up (`max`) or down (`min`).")
    factor: float = Field(
        0.1, gt=0, lt=1, description="Every group's lr is multiplied by this on a plateau.")
    patience: int = Field(
        10, ge=1, description="Epochs without improvement before the lr is lowered.")
    cooldown: int = Field(
        0, ge=0, description="Epochs after a reduction that are not counted.")
    min_lr: float = Field(
        0.0, ge=0, description="Floor for the logged (main group's) lr.")
    min_delta: float = Field(
        1e-4, ge=0, description="The least change of `monitor` that counts as an "
        "improvement.")


class ScheduleConfig(Strict):
    name: str = Field(
        "cosine", description="The lr schedule, a multiplier of each group's lr at every "
        "step: `constant`, `linear`, `cosine`, `onecycle`, `step`, `multistep`, "
        "`exponential`, `inverse_time` (Keras's `decay=`), `plateau` (ReduceLROnPlateau); "
        "docs/training.md.")
    warmup_epochs: float = Field(
        0.0, ge=0, description="Linear warm-up from `start_factor` x lr over this many "
        "epochs (fractions allowed); `onecycle`: its cosine warm-up.")
    start_factor: float = Field(
        0.0, ge=0, description="lr multiplier at step 0 of the warm-up.")
    end_factor: float = Field(
        0.0, ge=0, description="lr multiplier at the last step (`linear`, `cosine`, "
        "`onecycle`).")
    gamma: float | None = Field(
        None, gt=0, le=1, description="`step`: x gamma every `step_epochs`; `multistep`: x "
        "gamma at each milestone epoch; `exponential`: x gamma per epoch. None: 0.1 for "
        "step/multistep, 0.95 for exponential.")
    step_epochs: float = Field(
        30, gt=0, description="`step`: epochs between multiplications by `gamma`.")
    milestones: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=list, description="`multistep` (required there): the epochs at "
        "which the lr is multiplied by `gamma`, e.g. [30, 60, 90].")
    decay: float = Field(
        0.0, ge=0, description="`inverse_time` (required > 0 there): lr / (1 + decay * "
        "step), Keras's `decay`.")
    plateau: PlateauConfig = Field(
        default_factory=PlateauConfig, description="`plateau` only: its ReduceLROnPlateau "
        "settings.")

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
    monitor: Metric = Field(
        "val_accuracy", description="The epoch metric that decides which epoch is `best.pt` "
        "(`val_*` falls back to its `train_*` twin without a validation split).")
    mode: Literal["max", "min"] = Field(
        "max", description="Whether `monitor` is better higher (`max`) or lower (`min`).")


class EarlyStoppingConfig(Strict):
    monitor: Metric = Field(
        "val_loss", description="The epoch metric watched (`val_*` falls back to its "
        "`train_*` twin without a validation split).")
    mode: Literal["max", "min"] = Field(
        "min", description="Whether `monitor` is better higher (`max`) or lower (`min`).")
    patience: int = Field(
        10, ge=1, description="Stop after this many epochs without improvement.")
    min_delta: float = Field(
        0.0, ge=0, description="The least change of `monitor` that counts as an "
        "improvement.")


class EMAConfig(Strict):
    decay: float = Field(
        0.999, gt=0, lt=1, description="Decay of the moving average, per optimizer step.")
    warmup: bool = Field(
        True, description="Use the decay min(decay, (1 + n) / (10 + n)) after n steps.")


class TrainConfig(Strict):
    epochs: int = Field(
        10, ge=1, description="Epochs to train; with `stages`, their sum (leave it out).")
    steps: int | None = Field(
        None, ge=1, description="Optimizer steps of the last stage (of the whole run, "
        "without `stages`): its lr schedule spans exactly these and it stops after them, "
        "mid-epoch if need be; its epochs are then the most it may take. What `imgcls fit` "
        "saves in winner.yaml: the steps its time-paced final run took. None: whole epochs.")
    batch_size: int = Field(
        128, ge=1, description="Images per optimizer step; the global batch with `torchrun` "
        "(a multiple of the number of processes).")
    micro_batch_size: int | None = Field(
        None, ge=1, description="Split each batch into micro-batches of this size and "
        "accumulate their gradients: the same update, less memory. None: whole batches.")
    eval_batch_size: int = Field(
        1000, ge=1, description="Images per batch for validation and test.")
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="Soft targets for the cross-entropy (0.2 in the fast "
        "recipe).")
    class_weights: Literal["auto"] | list[Annotated[float, Field(gt=0)]] | None = Field(
        None, description="Per-class weights in the loss: `auto` (inverse class frequency in "
        "the training split, mean 1) or one weight per class, in class order. None: all 1.")
    loss_reduction: Literal["mean", "sum"] = Field(
        "mean", description="How the batch's losses are combined; `sum` makes the lr a "
        "per-example lr (the airbench convention).")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to train; `auto`: CUDA when available, else the CPU.")
    amp: Literal["auto", "none", "bf16", "fp16"] = Field(
        "auto", description="Mixed precision: `bf16` autocast, `fp16` with loss scaling "
        "(CUDA only; not with `optim.sam`), `none` (float32). `auto`: bf16 on CUDA devices "
        "with bf16, and on CPUs with bf16 units (AMX-BF16, AVX512-BF16) where bf16 measured "
        "at least 1.2x float32's training speed (timed once per CPU model and torch version, "
        "cached); float32 elsewhere. The choice and its reason are recorded in the run's "
        "environment.json and summary.")
    compile: Literal["auto"] | bool = Field(
        "auto", description="`torch.compile` the training network: `true`, `false`, or "
        "`auto` (on on CUDA; off on the CPU, where the compiled fast-recipe step measured "
        "slower than the plain one, before its compile time).")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = Field(
        "default", description="torch.compile's mode when compiling: `reduce-overhead` "
        "replays the step as CUDA graphs (GPU; fixed batch shapes), `max-autotune` also "
        "searches kernel configurations (long compiles).")
    sync_every: int | None = Field(
        None, ge=1, description="Steps between the host's looks at the device's running "
        "figures (the finite-loss check). A non-finite step is found by its step number "
        "either way. None: every step on the CPU (free there), every 50 on a GPU (each look "
        "waits for the device).")
    channels_last: bool = Field(
        True, description="NHWC memory format (faster on CPUs and tensor cores).")
    deterministic: bool = Field(
        False, description="Deterministic kernels (`torch.use_deterministic_algorithms`): "
        "bitwise-repeatable runs on CUDA, for resume checks.")
    threads: int | None = Field(
        None, ge=1, description="CPU threads. None: all cores, divided between the "
        "processes on one machine under `torchrun`.")
    image_sizes: list[Annotated[int, Field(ge=4, le=1024)]] = Field(
        default_factory=list, description="Progressive resizing: the training image size of "
        "epochs 1, 2, ..., e.g. [24, 24, 32]; the last entry holds for the remaining epochs. "
        "Empty: the full size throughout. Validation and test always run at the full size.")
    resize_mode: Literal["scale", "crop"] = Field(
        "scale", description="How `image_sizes` shrinks a training batch: `scale` resizes "
        "the whole image (bilinear, antialiased); `crop` takes a random window of that size, "
        "the same for the whole batch (objects keep their size, the network sees part of the "
        "image).")
    tta: TTA = Field(
        "none", description="Test-time augmentation for the final test: `mirror` (the image "
        "and its mirror), `mirror_translate` (also 1-pixel shifts, as airbench); the plain "
        "accuracy is reported too.")
    tta_margin: float | None = Field(
        None, gt=0.0, le=1.0, description="Confidence-gated TTA: the views only for the "
        "images whose plain top-1 probability leads the runner-up's by less than this (the "
        "others keep their plain prediction, which the views rarely change); the summary's "
        "`tta_share` says how many got them. None: every image.")
    tta_from_val: bool = Field(
        False, description="Keep `tta` only where it scores higher than the plain image on "
        "the validation split (the evaluated weights, just before the test; a run paced by "
        "`imgcls fit` chooses at its last validation before the end, so its last steps fit "
        "the test chosen, and keeps the TTA only if it removes a larger share of the "
        "validation error than the steps its views' time would train are forecast to: "
        "`forgone`); the summary's `tta` says what the test used and `tta_validation` "
        "the figures behind the choice (with the `epoch` it was made after, when made during "
        "training). `imgcls fit`'s runs turn it on.")
    test: bool = Field(
        True, description="Evaluate the final model on the test split at the end. false: "
        "the run never looks at the test images and its summary's test figures are null "
        "(what `imgcls fit`'s trial runs do: they are scored on validation only).")
    ema: EMAConfig | None = Field(
        None, description="An exponential moving average of the weights, e.g. `{decay: "
        "0.999, warmup: true}`: validated, saved as `best.pt` and tested instead of the "
        "weights. None: off.")
    checkpoint: CheckpointConfig = Field(
        default_factory=CheckpointConfig, description="Which epoch is saved as "
        "`best.pt` (and tested).")
    early_stopping: EarlyStoppingConfig | None = Field(
        None, description="Stop when a metric stops improving, e.g. `{monitor: val_loss, "
        "patience: 10}`. None: off.")
    tensorboard: bool = Field(
        True, description="Write TensorBoard event files into the run folder.")


Trainable = Literal["head", "all"]


class StageConfig(Strict):
    """One phase of a staged run (transfer learning): its epochs, what trains, and its own
    optimizer and schedule settings over the run's. Say what trains with exactly one of
    `train` (head | all), `fine_tune_at` (a layer index or module name, Keras's way: it and
    everything after it train) or `last_stages` (the last K stages and the head)."""

    name: str | None = Field(None, description="Shown in logs and the stage times.")
    epochs: int = Field(ge=1, description="This stage's epochs.")
    train: Trainable | None = Field(
        None, description="What trains: `head` (feature extraction, only the new head) or "
        "`all`.")
    fine_tune_at: int | str | None = Field(
        None, description="Train from this layer on: an index N (Keras's "
        "`base_model.layers[N:]`, counting layers that hold weights) or a module name such as "
        "`layer3`; `imgcls models NAME --layers` numbers and names them.")
    last_stages: int | None = Field(
        None, ge=1, description="Train the last K stages and the head (timm's stage "
        "grouping, or an imgcls model's top-level blocks).")
    layer_lr_decay: float | None = Field(
        None, gt=0, le=1, description="Discriminative learning rates: the head at the "
        "stage's lr, the last stage at lr x d, the one before at lr x d^2, ... None: one lr.")
    optim: dict[str, Any] = Field(
        default_factory=dict, description="Keys of the run's `optim` this stage changes, "
        "e.g. `{lr: 1.0e-5}`; each stage gets a fresh optimizer.")
    schedule: dict[str, Any] = Field(
        default_factory=dict, description="Keys of the run's `schedule` this stage changes; "
        "each stage runs its schedule over its own epochs (`plateau` is run-wide only).")
    freeze_bn: Literal["frozen", "all"] = Field(
        "frozen", description="BatchNorm layers kept in inference mode (running statistics "
        "fixed): `frozen`: those whose parameters do not train; `all`: every one, while their "
        "scale and shift still train (Keras' advice for fine-tuning on small data).")
    cache_features: Literal["auto"] | bool = Field(
        "auto", description="Head-only stages: compute the frozen backbone's features once "
        "and train the head on them. `auto`: when the run has no augmentation; `true`: "
        "always (this stage then sees the images unaugmented, later stages augment them as "
        "configured; needs `train: head`); `false`: never.")

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


class TrackingConfig(Strict):
    mlflow: str | None = Field(
        None, description="An MLflow tracking server (`http://host:5000`) or store "
        "(`sqlite:///mlflow.db`) that the run also logs to: parameters, metrics per epoch, "
        "the summary, artifacts and the model (`pip install -e '.[mlflow]'`). None: MLflow's "
        "own `MLFLOW_TRACKING_URI` when it is set, else no MLflow; `off`: never.")
    experiment: str | None = Field(
        None, description="The MLflow experiment the run goes into. None: the config's "
        "`name` (a sweep's or search's runs go into the experiment's own).")

    @field_validator("mlflow", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false


class Config(Strict):
    name: str = Field("run", description="The run's name, used in the run folder's name.")
    seed: int = Field(
        0, description="Fixes the initialization, the data order, augmentation and dropout "
        "(each epoch's draws are seeded by (seed, epoch)).")
    data: DataConfig = Field(
        default_factory=DataConfig, description="Where the images come from and how they "
        "are split.")
    model: ModelConfig = Field(
        default_factory=ModelConfig, description="The network, its weights and the "
        "preprocessing it sees.")
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig, description="Training-batch augmentation and "
        "MixUp / CutMix.")
    optim: OptimConfig = Field(
        default_factory=OptimConfig, description="The optimizer, its parameter groups and "
        "regularizers.")
    schedule: ScheduleConfig = Field(
        default_factory=ScheduleConfig, description="The learning-rate schedule.")
    train: TrainConfig = Field(
        default_factory=TrainConfig, description="The training loop, evaluation and "
        "checkpoints.")
    stages: list[StageConfig] = Field(
        default_factory=list, description="Staged training (transfer learning): "
        "stages run in order, in one run. Empty: one stage in which everything trains.")
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="Where else the run is recorded "
        "(its run folder always is).")

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

    def monitors(self) -> list[tuple[str, str]]:
        """(key, metric) of every setting that watches an epoch metric: the checkpoint, and
        early stopping and the plateau schedule when they are on."""
        watched = [("train.checkpoint.monitor", self.train.checkpoint.monitor)]
        if self.train.early_stopping:
            watched.append(("train.early_stopping.monitor", self.train.early_stopping.monitor))
        if self.schedule.name == "plateau":
            watched.append(("schedule.plateau.monitor", self.schedule.plateau.monitor))
        return watched

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
