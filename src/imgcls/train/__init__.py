"""Training entry points: `train` starts or resumes a run; `load_model` reloads one."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
from torch import nn

from imgcls.config import TTA, Config, ConfigError
from imgcls.data import DataError, load_data, load_source
from imgcls.data.base import ImageSet
from imgcls.data.loader import BatchLoader
from imgcls.log import get_logger
from imgcls.tracking.run import CheckpointError, Preprocessing, Run, environment
from imgcls.train import distributed
from imgcls.train.callbacks import Callback
from imgcls.train.evaluate import evaluate
from imgcls.train.setup import callers_torch_settings, resolve_device
from imgcls.train.trainer import Trainer

__all__ = ["Trainer", "train", "load_model"]

log = get_logger(__name__)


@callers_torch_settings()
def train(cfg: Config | None = None, run_dir: str | Path | None = None,
          resume: str | Path | None = None,
          callbacks: Sequence[Callback] = ()) -> tuple[Run, dict[str, Any]]:
    """Train `cfg` into a new run folder, or continue the run in `resume` from its last
    checkpoint (its own saved config wins; the result equals an uninterrupted run).
    `callbacks` join the run's own; each one's state is saved under its `key`, so a
    resumed run restores it by name."""
    if resume is not None:
        run = Run(resume)
        cfg = run.config()
    world = distributed.setup(resolve_device(cfg.train.device).type)  # under torchrun
    logged_to = run.mlflow() if resume is not None else None
    callbacks = [*callbacks, *_mlflow(cfg, world.is_main, callbacks, logged_to)]
    if resume is None:  # rank 0 names and creates the folder; the other processes use it
        run = Run(distributed.broadcast_object(
            str(Run.create(cfg, run_dir).path) if world.is_main else None))
    if not world.is_main:
        distributed.barrier()  # rank 0 decodes and caches the data first
    data = load_data(cfg.data)
    if world.is_main:
        distributed.barrier()
    leak = data.leak_warning()
    if leak and world.is_main:
        log.warning(leak)
    if resume is not None and run.has_preprocessing():  # what the run trained on
        data = data.with_channels(run.preprocessing().channels)
    if data.chosen_size and cfg.data.image_size is None and resume is None:
        # the resolved config says what was stored (a copy: the caller's config stays)
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(
            update={"image_size": data.chosen_size})})
        if world.is_main:
            run.write_config(cfg)
    trainer = Trainer(cfg, run, data, callbacks)
    if resume is not None and run.has_checkpoint("last"):
        trainer.load_state_dict(run.load_checkpoint("last", trainer.device))
    if world.is_main:
        if resume is not None:  # drop epochs after the checkpoint (all, if there is none)
            run.truncate_metrics(trainer.epoch)
        run.write_environment({**environment(str(trainer.device)), **trainer.speed_settings(),
                               "processes": world.size})
        inputs = trainer.inputs
        run.write_preprocessing(Preprocessing(
            classes=data.classes, image_size=data.image_size, resize=cfg.data.resize,
            input_size=inputs.size, interpolation=inputs.interpolation,
            mean=inputs.mean.tolist(), std=inputs.std.tolist(), skipped_files=data.skipped,
            channels=data.channels))
    try:
        summary = trainer.fit()
    finally:  # a replica outliving its process group aborts the process at exit
        trainer.release_replica()
    if world.is_main:
        run.write_summary({**summary, "processes": world.size})
    return run, summary


def _mlflow(cfg: Config, is_main: bool, given: Sequence[Callback],
            logged_to: dict[str, Any] | None) -> list[Callback]:
    """The MLflow logger where `tracking.mlflow` (or MLFLOW_TRACKING_URI, or for a resumed
    run the server it logged to) asks for one: the server is asked once here, so an
    unreachable one fails before the run folder is made. A parent's id and experiment come
    from the environment (a sweep, search or fit) or the resumed run's record."""
    from imgcls.tracking.mlflow_client import ENV_EXPERIMENT, ENV_PARENT, connect, tracking_uri
    from imgcls.train.mlflow_logger import MLflowLogger

    logged_to = logged_to or {}
    uri = tracking_uri(cfg.tracking.mlflow) or (
        logged_to.get("uri") if cfg.tracking.mlflow is None else None)
    if uri is None or any(isinstance(c, MLflowLogger) for c in given):
        return []
    if is_main:
        connect(uri)
    experiment = (cfg.tracking.experiment or os.environ.get(ENV_EXPERIMENT)
                  or logged_to.get("experiment") or cfg.name)
    return [MLflowLogger(uri, experiment, os.environ.get(ENV_PARENT) or logged_to.get("parent"))]


def load_model(run_dir: str | Path, checkpoint: str = "best",
               device: str | torch.device = "cpu") -> tuple[nn.Module, Preprocessing, Config]:
    """The trained model of a run, in eval mode, with its preprocessing record. Every way
    the checkpoint can be unusable is a CheckpointError naming the file."""
    from imgcls.models import build_model

    run = Run(run_dir)
    cfg = run.config()
    pre = run.preprocessing()
    state = run.load_checkpoint(checkpoint, device)
    model = build_model(cfg.model, len(pre.classes), pre.input_size, pre.channels)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        raise CheckpointError(f"{run.checkpoint_path(checkpoint)}: does not fit the run's "
                              f"model {cfg.model.name} ({lines[min(1, len(lines) - 1)].strip()}"
                              "); was it copied from another run?") from None
    return model.to(device).eval(), pre, cfg


def eval_loader(images: ImageSet, cfg: Config, pre: Preprocessing) -> BatchLoader:
    """A saved run's evaluation batches of `images`, on the CPU: its batch size,
    normalization, input size and interpolation."""
    return BatchLoader(images, cfg.train.eval_batch_size, torch.tensor(pre.mean),
                       torch.tensor(pre.std), torch.device("cpu"),
                       channels_last=cfg.train.channels_last, size=pre.input_size,
                       interpolation=pre.interpolation)


def evaluate_run(run_dir: str | Path, data_path: str | Path | None = None,
                 tta: str | None = None, checkpoint: str = "best",
                 tta_margin: float | None = None) -> dict[str, Any]:
    """Accuracy, loss, macro-F1, balanced accuracy, top-5 accuracy (more than 5 classes)
    and the per-class table (`per_class`: precision, recall, F1, support; from the TTA
    logits when TTA is on) of a run's saved model on its own test split, or on another image
    folder whose class sub-folders carry the run's class names. `tta` and `tta_margin`
    (confidence-gated TTA, 0-1) default to the run's own."""
    if tta is not None and tta not in get_args(TTA):
        raise ConfigError(f"tta = {tta!r}: valid: {', '.join(get_args(TTA))}")
    if tta_margin is not None and not 0.0 < tta_margin <= 1.0:
        raise ConfigError(f"tta_margin = {tta_margin}: valid: above 0, at most 1 (the lead "
                          "of the top-1 probability over the runner-up's)")
    model, pre, cfg = load_model(run_dir, checkpoint)
    tta = tta or cfg.train.tta
    tta_margin = tta_margin if tta_margin is not None else cfg.train.tta_margin
    if data_path is None:
        test = load_data(cfg.data).with_channels(pre.channels).test
    else:
        folder_cfg = cfg.data.model_copy(update={"source": "folder", "path": str(data_path),
                                                 "image_size": pre.image_size,
                                                 "channels": pre.channels})
        source, _ = load_source(folder_cfg)
        unknown = sorted(set(source.classes) - set(pre.classes))
        if unknown:
            raise DataError(f"{data_path}: classes {unknown} are not among the run's classes "
                            f"{pre.classes}")
        images = source.test if source.test is not None else source.train
        to_run_label = np.array([pre.classes.index(name) for name in source.classes])
        test = replace(images, labels=to_run_label[images.labels])
    loader = eval_loader(test, cfg, pre)
    return {"run": str(run_dir), "checkpoint": checkpoint, "images": len(test), "tta": tta,
            "tta_margin": tta_margin,
            **evaluate(model, loader, tta, per_class=True, classes=pre.classes,
                       tta_margin=tta_margin)}
