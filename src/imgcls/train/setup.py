"""The parts a run trains with, built from its config: the device, the model with its
pretrained weights and input preprocessing, the batch loaders and the callbacks (each
stage's parts are `imgcls.train.stage`'s). The Trainer receives them
ready-made and runs the loop; every choice a config makes is resolved here, once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from imgcls.augment import Mixer, create_augment
from imgcls.config import Config, ConfigError, TrainConfig
from imgcls.data import DataSplits, ImageSet
from imgcls.data.loader import BatchLoader
from imgcls.log import exception_line
from imgcls.models import build_model
from imgcls.models.pretrained import (
    LoadReport,
    Preprocess,
    PretrainedError,
    Weights,
    load_pretrained,
    unwrap,
)
from imgcls.tracking.run import Run
from imgcls.train.callbacks import (
    EMA,
    Callback,
    Checkpoint,
    EarlyStopping,
    LearningCheck,
    MetricsLog,
    ProgressBar,
    ReduceLROnPlateau,
    TensorBoard,
)
from imgcls.train.distributed import World


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda': no CUDA device is available; use auto or cpu")
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                        "cpu" if name == "auto" else name)


@contextmanager
def callers_torch_settings() -> Iterator[None]:
    """Give back the thread count and determinism setting that `prepare_device` changes
    for a run: a later run in the same process (a notebook, a fit's trials, a test suite)
    without `train.threads` would otherwise keep this run's count, one core if it asked
    for one. Wraps every entry point that builds a Trainer (`train`, `lr_find`), as a
    decorator."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def prepare_device(t: TrainConfig, world: World) -> torch.device:
    """The training device, with the process's threads and determinism set as asked."""
    if t.batch_size % world.size:
        raise ConfigError(f"train.batch_size = {t.batch_size} does not split evenly over "
                          f"{world.size} processes; use a multiple of {world.size}")
    if t.threads or world.active:  # processes on one machine share its cores
        torch.set_num_threads(t.threads or max(1, (os.cpu_count() or 1) // world.local_size))
    torch.use_deterministic_algorithms(t.deterministic)
    device = resolve_device(t.device)
    if t.amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp = 'fp16' needs CUDA; on the CPU use 'bf16' or 'none'")
    return device


def resolve_compile(setting: bool | str, device: torch.device) -> bool:
    """`train.compile` made concrete. `auto` compiles on CUDA only: on a CPU the compiled
    fast-recipe step measured 0.96x the plain one, before its compile time (docs/training.md,
    "Precision and speed")."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def channel_stats(images: ImageSet, limit: int = 10_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (0-1 scale) of the first `limit` training images."""
    channels = images.images.shape[-1]
    sample = torch.from_numpy(images.images[:limit]).double().div_(255).reshape(-1, channels)
    return sample.mean(0).float(), sample.std(0).float()


def monitored(metric: str, has_val: bool) -> str:
    """Without a validation split, monitor the training twin of a val_* metric."""
    return metric if has_val or not metric.startswith("val_") else "train_" + metric[4:]


# -- the model and what it sees ------------------------------------------------------------
@dataclass(frozen=True)
class Inputs:
    """How batches become network inputs: normalization, size and resize filter."""

    mean: torch.Tensor
    std: torch.Tensor
    size: int
    interpolation: str


def run_weights(pretrained: bool | str) -> Weights | None:
    """The best weights of an imgcls run folder named by `model.pretrained`, with the
    preprocessing it recorded; None when `pretrained` is not a folder."""
    if not isinstance(pretrained, str) or not Path(pretrained).is_dir():
        return None
    run = Run(pretrained)
    if not run.has_checkpoint("best"):
        raise PretrainedError(f"model.pretrained = {pretrained!r}: a folder, but not an imgcls "
                              "run with checkpoints/best.pt")
    state = unwrap(run.load_checkpoint("best"), run.checkpoint_path("best"))
    if not run.has_preprocessing():
        return Weights(state)
    pre = run.preprocessing()
    return Weights(state, Preprocess(pre.input_size, tuple(pre.mean), tuple(pre.std),
                                     pre.interpolation, pre.classes))


def create_model_with_weights(cfg: Config, data: DataSplits
                              ) -> tuple[nn.Module, Inputs, LoadReport | None]:
    """The config's model with its pretrained weights, if any, and the preprocessing:
    the config's, else the weights', else the training data's (mean/std) and size."""
    m, classes = cfg.model, data.classes
    weights = run_weights(m.pretrained)
    known = weights.preprocess if weights else Preprocess()
    model = build_model(m, len(classes), m.input_size or known.input_size or data.image_size,
                        data.channels)
    report = None
    if m.pretrained:
        report, known = load_pretrained(model, m.pretrained, m.name, classes, weights,
                                        m.pretrained_keys)
    data_mean, data_std = channel_stats(data.train)
    interpolation = m.interpolation or known.interpolation
    c = data.channels
    inputs = Inputs(mean=per_channel(m.mean or known.mean or data_mean.tolist(), c, "mean"),
                    std=per_channel(m.std or known.std or data_std.tolist(), c, "std"),
                    size=m.input_size or known.input_size or data.image_size,
                    interpolation=interpolation if interpolation == "bicubic" else "bilinear")
    return model, inputs, report


def per_channel(values: Sequence[float], channels: int, key: str) -> torch.Tensor:
    """One normalization value per image channel; RGB values for gray images are averaged
    (what timm does for 1-channel models), a single value serves every channel."""
    if len(values) == channels:
        return torch.tensor(list(values), dtype=torch.float32)
    if len(values) in (1, 3) and channels in (1, 3):
        return torch.full((channels,), sum(values) / len(values))
    raise ConfigError(f"model.{key} = {list(values)}: needs {channels} value(s), one per image "
                      "channel")


@torch.no_grad()
def check_input_sizes(model: nn.Module, cfg: Config, inputs: Inputs,
                      device: torch.device) -> None:
    """Progressive resizing needs a model that takes every size: fail before training."""
    for size in sorted(set(cfg.train.image_sizes) - {inputs.size}):
        try:
            model.eval()(torch.zeros(2, len(inputs.mean), size, size, device=device))
        except RuntimeError as exc:
            raise ConfigError(
                f"train.image_sizes: {cfg.model.name} cannot take {size} px inputs "
                f"({exception_line(exc, with_type=False)}); use larger sizes, a global-pooling "
                "model, or model.args.global_pool: true for flatten-head models"
            ) from None


# -- batches -------------------------------------------------------------------------------
@dataclass
class Loaders:
    train: BatchLoader
    val: BatchLoader | None
    test: BatchLoader


def create_loaders(cfg: Config, data: DataSplits, inputs: Inputs, device: torch.device,
                   world: World) -> Loaders:
    """Training batches (augmented, this process's share) and evaluation batches."""
    t, mix = cfg.train, cfg.augment.mix
    common = dict(mean=inputs.mean, std=inputs.std, device=device,
                  channels_last=t.channels_last, in_memory=cfg.data.in_memory,
                  size=inputs.size, interpolation=inputs.interpolation)
    train = BatchLoader(
        data.train, t.batch_size, shuffle=True, drop_last=len(data.train) > t.batch_size,
        augment=create_augment(cfg.augment), seed=cfg.seed,
        mix=Mixer(mix, len(data.classes)) if mix.enabled else None,
        shard=(world.rank, world.size), sampler=cfg.data.sampler, **common)
    val = BatchLoader(data.val, t.eval_batch_size, **common) if data.val is not None else None
    return Loaders(train, val, BatchLoader(data.test, t.eval_batch_size, **common))


def unaugmented_loader(cfg: Config, images: ImageSet, inputs: Inputs,
                       device: torch.device) -> BatchLoader:
    """`images` in order and unaugmented, normalized and sized as in training: what a
    frozen backbone's features are computed from."""
    t = cfg.train
    return BatchLoader(images, t.eval_batch_size, inputs.mean, inputs.std, device,
                       channels_last=t.channels_last, size=inputs.size,
                       interpolation=inputs.interpolation)


# -- callbacks -----------------------------------------------------------------------------
def create_callbacks(cfg: Config, has_val: bool, extra: Sequence[Callback] = ()
                     ) -> list[Callback]:
    """The run's callbacks in hook order; the checkpoint comes last, so it saves the
    others' state after they have seen the epoch."""
    t, plateau = cfg.train, cfg.schedule.plateau
    callbacks: list[Callback] = [MetricsLog()]
    if t.ema:
        callbacks.append(EMA(t.ema.decay, t.ema.warmup))
    if cfg.schedule.name == "plateau":
        callbacks.append(ReduceLROnPlateau(monitored(plateau.monitor, has_val), plateau.mode,
                                           plateau.factor, plateau.patience, plateau.cooldown,
                                           plateau.min_lr, plateau.min_delta))
    if t.early_stopping:
        e = t.early_stopping
        callbacks.append(EarlyStopping(monitored(e.monitor, has_val), e.mode, e.patience,
                                       e.min_delta))
    if t.tensorboard:
        callbacks.append(TensorBoard())
    callbacks.append(LearningCheck())  # always: warns about runs that fail silently
    callbacks += extra
    callbacks.append(ProgressBar())
    callbacks.append(Checkpoint(monitored(t.checkpoint.monitor, has_val), t.checkpoint.mode))
    keys = [cb.key for cb in callbacks]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"callbacks share the state key(s) {', '.join(twice)}; give each "
                         "callback its own `key`")
    return callbacks
