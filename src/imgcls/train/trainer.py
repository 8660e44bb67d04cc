"""The training loop. `Trainer.train_epoch` is the whole step, top to bottom; everything
cross-cutting (checkpoints, early stopping, logs, progress) is a callback."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imgcls.augment import Mixer, create_augment
from imgcls.augment.mix import target_hits
from imgcls.config import Config, ConfigError
from imgcls.data import DataSplits, ImageSet
from imgcls.data.loader import BatchLoader, epoch_seed
from imgcls.models import build_model
from imgcls.models.parts import frozen_norms, head_name, stage_depths, trainable_parameters
from imgcls.models.pretrained import Preprocess, load_pretrained, run_preprocess
from imgcls.models.profile import count_parameters, forward_gflops
from imgcls.tracking.run import Run, environment
from imgcls.train import distributed
from imgcls.train.callbacks import (
    EMA,
    Callback,
    Checkpoint,
    EarlyStopping,
    MetricsLog,
    ProgressBar,
    ReduceLROnPlateau,
    TensorBoard,
)
from imgcls.train.evaluate import evaluate
from imgcls.train.features import FeatureLoader, extract_features
from imgcls.train.optim import SAM, create_optimizer, frozen_norm_stats, l2_penalty
from imgcls.train.schedule import create_scheduler


class TrainingDiverged(RuntimeError):
    pass


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda': no CUDA device is available; use auto or cpu")
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                        "cpu" if name == "auto" else name)


def channel_stats(images: ImageSet, limit: int = 10_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (0-1 scale) of the first `limit` training images."""
    sample = torch.from_numpy(images.images[:limit]).double().div_(255).reshape(-1, 3)
    return sample.mean(0).float(), sample.std(0).float()


def monitored(metric: str, has_val: bool) -> str:
    """Without a validation split, monitor the training twin of a val_* metric."""
    return metric if has_val or not metric.startswith("val_") else "train_" + metric[4:]


class Trainer:
    def __init__(self, cfg: Config, run: Run, data: DataSplits,
                 callbacks: Sequence[Callback] = ()):
        self.cfg, self.run, self.data = cfg, run, data
        t = cfg.train
        self.world = distributed.world()
        if t.batch_size % self.world.size:
            raise ConfigError(f"train.batch_size = {t.batch_size} does not split evenly over "
                              f"{self.world.size} processes; use a multiple of {self.world.size}")
        if t.threads or self.world.active:  # processes on one machine share its cores
            torch.set_num_threads(t.threads or max(1, (os.cpu_count() or 1)
                                                   // self.world.local_size))
        torch.use_deterministic_algorithms(t.deterministic)
        self.device = resolve_device(t.device)
        if t.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.amp = 'fp16' needs CUDA; on the CPU use 'bf16' or 'none'")
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[t.amp]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.amp == "fp16")

        torch.manual_seed(cfg.seed)  # the seed fixes the initialization
        self.model, weights = self._build_model()
        self._resolve_preprocessing(weights)
        self.train_loader, self.val_loader, self.test_loader = self._loaders()
        self.model = self.model.to(self.device)
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._check_sizes(t.image_sizes)
        self.own_frozen = {n for n, p in self.model.named_parameters() if not p.requires_grad}
        self.cache_seconds: dict[int, float] = {}  # stage -> seconds spent caching features
        plateau = cfg.schedule.plateau
        self.plateau = (ReduceLROnPlateau(monitored(plateau.monitor, self.has_val), plateau.mode,
                                          plateau.factor, plateau.patience, plateau.cooldown,
                                          plateau.min_lr, plateau.min_delta)
                        if cfg.schedule.name == "plateau" else None)
        self.begin_stage(0)
        self.ema = EMA(self.model, t.ema.decay, t.ema.warmup) if t.ema else None
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing,
                                           reduction=t.loss_reduction)
        self.callbacks = self._callbacks(callbacks)
        self.epoch = 0  # epochs completed
        self.started = time.perf_counter()
        self.earlier_wall_seconds = 0.0  # spent before an interruption, when resumed
        self.train_seconds = 0.0
        self.images_seen = 0
        self.stop_reason: str | None = None

    def _resolve_preprocessing(self, weights: Preprocess) -> None:
        """Normalization, input size and resize filter: the config's, else the pretrained
        weights', else the training data's (mean/std) and size."""
        m, data = self.cfg.model, self.data
        data_mean, data_std = channel_stats(data.train)
        self.mean = torch.tensor(m.mean or weights.mean or data_mean.tolist())
        self.std = torch.tensor(m.std or weights.std or data_std.tolist())
        self.input_size = m.input_size or weights.input_size or data.image_size
        interpolation = m.interpolation or weights.interpolation
        self.interpolation = interpolation if interpolation == "bicubic" else "bilinear"

    def _loaders(self) -> tuple[BatchLoader, BatchLoader | None, BatchLoader]:
        t, data, mix = self.cfg.train, self.data, self.cfg.augment.mix
        common = dict(mean=self.mean, std=self.std, device=self.device,
                      channels_last=t.channels_last, in_memory=self.cfg.data.in_memory,
                      size=self.input_size, interpolation=self.interpolation)
        train = BatchLoader(
            data.train, t.batch_size, shuffle=True, drop_last=len(data.train) > t.batch_size,
            augment=create_augment(self.cfg.augment), seed=self.cfg.seed,
            mix=Mixer(mix, len(data.classes)) if mix.enabled else None,
            shard=(self.world.rank, self.world.size), **common)
        val = (BatchLoader(data.val, t.eval_batch_size, **common)
               if data.val is not None else None)
        return train, val, BatchLoader(data.test, t.eval_batch_size, **common)

    def _build_model(self) -> tuple[nn.Module, Preprocess]:
        """The config's model, with its pretrained weights when asked for."""
        m, classes = self.cfg.model, self.data.classes
        size = m.input_size or run_preprocess(m.pretrained).input_size or self.data.image_size
        model = build_model(m, len(classes), size)
        if not m.pretrained:
            return model, Preprocess()
        report, weights = load_pretrained(model, m.pretrained, m.name, classes)
        if self.is_main:
            print(report.summary())
            self.run.write_json("pretrained.json", report.as_dict())
        return model, weights

    # -- stages -----------------------------------------------------------------------------
    def stage_at(self, epoch: int) -> int:
        """The stage that epoch `epoch` (0-based) belongs to."""
        end = 0
        for index, stage in enumerate(self.cfg.stages):
            end += stage.epochs
            if epoch < end:
                return index
        return max(len(self.cfg.stages) - 1, 0)

    def begin_stage(self, index: int) -> None:
        """Make the stage's parameters trainable (the rest frozen, their BatchNorms in
        inference mode) and give it a fresh optimizer and lr schedule over its epochs."""
        cfg = self.cfg
        stage = cfg.stages[index] if cfg.stages else None
        optim_cfg, schedule_cfg = cfg.stage_settings(index) if stage else (cfg.optim,
                                                                            cfg.schedule)
        self.optim_cfg = optim_cfg  # the step's settings (clipping) are the stage's
        if self.cfg.train.amp == "fp16" and optim_cfg.sam:
            raise ConfigError("optim.sam with train.amp = 'fp16' is not supported (loss "
                              "scaling would scale SAM's ascent step); use 'bf16' or 'none'")
        names = [n for n, _ in self.model.named_parameters()]
        trainable = (trainable_parameters(self.model, stage.train, stage.fine_tune_at,
                                          stage.last_stages) if stage else set(names))
        for name, p in self.model.named_parameters():
            p.requires_grad_(name in trainable and name not in self.own_frozen)
        self.frozen_norms = frozen_norms(self.model, trainable) if stage else []
        lr_scales = ({n: stage.layer_lr_decay ** depth
                      for n, depth in stage_depths(self.model).items()}
                     if stage and stage.layer_lr_decay else None)
        self.optimizer = create_optimizer(self.model, optim_cfg, lr_scales)
        sam = optim_cfg.sam
        self.sam = SAM(self.optimizer, sam.rho, sam.adaptive) if sam else None
        epochs = stage.epochs if stage else cfg.train.epochs
        self.scheduler = create_scheduler(self.optimizer, schedule_cfg, len(self.train_loader),
                                          epochs, self.plateau and (lambda: self.plateau.scale))
        self.stage_index = index
        self.net = self._replicated(self.model)  # what training batches go through
        self.cached: tuple[FeatureLoader, FeatureLoader | None] | None = None
        self.use_cache = bool(stage) and stage.train == "head" and (
            stage.cache_features is True or stage.cache_features == "auto"
            and not cfg.augment.ops and not cfg.augment.mix.enabled)

    def batches(self, val: bool = False) -> tuple[BatchLoader | FeatureLoader | None, nn.Module]:
        """The stage's training (or validation) batches and the module they go through: images
        and the model, or cached features and the head."""
        if self.use_cache and self.cached is None:
            self.cached = self._cache_features()
            self.net = self._replicated(self.model.get_submodule(head_name(self.model)))
        if not val:
            return (self.cached[0] if self.use_cache else self.train_loader), self.net
        model = self.eval_model
        return ((self.cached[1], model.get_submodule(head_name(model))) if self.use_cache
                else (self.val_loader, model))

    def _replicated(self, module: nn.Module) -> nn.Module:
        """`module` in DistributedDataParallel when several processes train (it averages
        the gradients across them during backward), else itself."""
        if not self.world.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module)

    @property
    def is_main(self) -> bool:
        """The process that writes the run folder (rank 0; the only one when alone)."""
        return self.world.is_main

    def _cache_features(self) -> tuple[FeatureLoader, FeatureLoader | None]:
        start = time.perf_counter()
        t, head = self.cfg.train, self.model.get_submodule(head_name(self.model))
        plain = BatchLoader(self.data.train, t.eval_batch_size, self.mean, self.std,
                            self.device, channels_last=t.channels_last,
                            size=self.input_size, interpolation=self.interpolation)
        train = FeatureLoader(*extract_features(self.model, head, plain, self.amp_dtype),
                              t.batch_size, shuffle=True, drop_last=self.train_loader.drop_last,
                              seed=self.cfg.seed, shard=self.train_loader.shard)
        val = (FeatureLoader(*extract_features(self.model, head, self.val_loader,
                                               self.amp_dtype), t.eval_batch_size)
               if self.val_loader is not None else None)
        self.cache_seconds[self.stage_index] = time.perf_counter() - start
        if self.is_main:
            print(f"cached the frozen backbone's features in "
                  f"{self.cache_seconds[self.stage_index]:.1f} s")
        return train, val

    @torch.no_grad()
    def _check_sizes(self, sizes: list[int]) -> None:
        """Progressive resizing needs a model that takes every size: fail before training."""
        for size in sorted(set(sizes) - {self.input_size}):
            try:
                self.model.eval()(torch.zeros(2, 3, size, size, device=self.device))
            except RuntimeError as exc:
                raise ConfigError(
                    f"train.image_sizes: {self.cfg.model.name} cannot take {size} px inputs "
                    f"({str(exc).splitlines()[0]}); use larger sizes, a global-pooling "
                    "model, or model.args.global_pool: true for flatten-head models"
                ) from None

    @property
    def has_val(self) -> bool:
        return self.val_loader is not None

    def _callbacks(self, extra: Sequence[Callback]) -> list[Callback]:
        t = self.cfg.train
        callbacks: list[Callback] = [MetricsLog()]
        callbacks += [cb for cb in (self.ema, self.plateau) if cb is not None]
        if t.early_stopping:
            e = t.early_stopping
            callbacks.append(EarlyStopping(monitored(e.monitor, self.has_val), e.mode,
                                           e.patience, e.min_delta))
        if t.tensorboard:
            callbacks.append(TensorBoard())
        callbacks += extra
        callbacks.append(ProgressBar())
        callbacks.append(Checkpoint(monitored(t.checkpoint.monitor, self.has_val),
                                    t.checkpoint.mode))  # last: saves the others' state
        return callbacks

    # -- the step ---------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        loader, _ = self.batches()
        self.model.train()
        for norm in self.frozen_norms:  # the frozen part keeps its statistics
            norm.eval()
        torch.manual_seed(epoch_seed(self.cfg.seed, epoch, 2))  # dropout & co. per epoch
        size = self.train_size(epoch)
        loss_sum = torch.zeros((), device=self.device)
        hits = torch.zeros((), device=self.device)
        seen = 0
        start = time.perf_counter()
        for step, (x, y) in enumerate(loader.epoch(epoch)):
            if x.ndim == 4 and size != x.shape[-1]:  # progressive resizing
                x = self.shrink(x, size)
            batch_loss, batch_hits = self.train_step(x, y)
            if not self.all_finite(batch_loss):
                raise TrainingDiverged(
                    f"epoch {epoch + 1}, step {step + 1}: training loss is {batch_loss.item()} "
                    f"(lr {self.main_group()['lr']:.4g}); stopped. The last good checkpoint "
                    f"({self.run.checkpoints / 'last.pt'}) is kept; lower optim.lr, clip "
                    "gradients (optim.clip_grad_norm) or check the data.")
            loss_sum += batch_loss
            hits += batch_hits
            seen += len(y)
            for cb in self.callbacks:
                cb.on_batch_end(self, seen)
        if self.world.active:  # the epoch's figures over all processes' shares
            totals = torch.stack([loss_sum, hits, torch.tensor(float(seen))]).to(self.device)
            torch.distributed.all_reduce(totals)
            loss_sum, hits, seen = totals[0], totals[1], int(totals[2].item())
            distributed.sync_buffers(self.model)
            if self.ema:
                distributed.sync_buffers(self.ema.model)
        seconds = time.perf_counter() - start
        self.train_seconds += seconds
        self.images_seen += seen
        return {"train_loss": loss_sum.item() / seen, "train_accuracy": hits.item() / seen,
                "seconds": seconds, "images_per_second": seen / seconds}

    def shrink(self, x: torch.Tensor, size: int) -> torch.Tensor:
        if self.cfg.train.resize_mode == "scale":
            return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        top, left = (torch.randint(0, n - size + 1, ()).item() for n in x.shape[-2:])
        return x[..., top:top + size, left:left + size]

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a batch; its summed loss and correct count (detached).
        With SAM the gradient is taken again at the worst nearby weights."""
        loss_sum, hits = self.backward(x, y)
        if self.sam:
            self.sam.ascend()
            with frozen_norm_stats(self.model):  # the batch already counted in BN statistics
                self.backward(x, y)
            self.sam.descend()
        if self.optim_cfg.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            nn.utils.clip_grad_norm_(params, self.optim_cfg.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss_sum, hits

    def backward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of the batch's loss (plus the L2 penalty), in micro-batches if asked;
        the batch's summed loss and correct count."""
        self.optimizer.zero_grad(set_to_none=True)
        summed = self.cfg.train.loss_reduction == "sum"
        micro = self.cfg.train.micro_batch_size or len(y)
        loss_sum = torch.zeros((), device=self.device)
        hits = torch.zeros((), device=self.device)
        chunks = list(zip(x.split(micro), y.split(micro), strict=True))
        for i, (xs, ys) in enumerate(chunks):
            # data-parallel: average gradients across processes once, after the last chunk
            last = i == len(chunks) - 1
            with nullcontext() if last or not self.world.active else self.net.no_sync():
                with torch.autocast(self.device.type, dtype=self.amp_dtype,
                                    enabled=self.amp_dtype is not None):
                    logits = self.net(xs)
                    loss = self.loss_fn(logits, ys)
                # the gradient of the whole (global) batch: a summed loss undoes DDP's mean
                weight = self.world.size if summed else len(ys) / len(y)
                self.scaler.scale(loss * weight).backward()
            loss_sum += loss.detach() if summed else loss.detach() * len(ys)
            hits += target_hits(logits, ys)
        penalty = l2_penalty(self.optimizer)
        if penalty is not None:
            self.scaler.scale(penalty).backward()
        return loss_sum, hits

    # -- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        self.init_from_data()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        self.startup_seconds = self.data.seconds + time.perf_counter() - self.started
        for epoch in range(self.epoch, self.cfg.train.epochs):
            if self.stage_at(epoch) != self.stage_index:
                self.begin_stage(self.stage_at(epoch))
            lr = self.main_group()["lr"]
            metrics: dict[str, Any] = {"epoch": epoch + 1, **self.train_epoch(epoch), "lr": lr}
            if self.cfg.stages:
                metrics["stage"] = self.stage_index + 1
            if self.val_loader is not None:
                batches, net = self.batches(val=True)
                val = evaluate(net, batches, amp_dtype=self.amp_dtype)
                metrics.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            self.epoch = epoch + 1
            for cb in self.callbacks:
                cb.on_epoch_end(self, metrics)
            if self.stop_reason:
                break
        summary = self.finish()
        for cb in self.callbacks:
            cb.on_fit_end(self, summary)
        return summary

    @property
    def eval_model(self) -> nn.Module:
        """What is validated, saved as best.pt and tested: the EMA copy when enabled."""
        return self.ema.model if self.ema else self.model

    def train_size(self, epoch: int) -> int:
        sizes = self.cfg.train.image_sizes
        return sizes[min(epoch, len(sizes) - 1)] if sizes else self.input_size

    def main_group(self) -> dict[str, Any]:
        """The param group whose lr is logged: weights on the run's full schedule, at the
        stage's own lr (the head's, with discriminative learning rates)."""
        groups = [g for g in self.optimizer.param_groups
                  if g.get("horizon_epochs") is None and g.get("lr_scale", 1.0) == 1.0]
        return next((g for g in groups if g.get("kind") == "weights"), groups[0])

    def stage_times(self, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each stage's epochs and training seconds (with its feature caching, if any)."""
        return [{"name": stage.name or f"stage {i + 1}", "epochs": stage.epochs,
                 "train_seconds": sum(m["seconds"] for m in history if m.get("stage") == i + 1)
                 + self.cache_seconds.get(i, 0.0)}
                for i, stage in enumerate(self.cfg.stages)]

    def all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the step's loss is finite in every process (so all stop together)."""
        if self.world.active:
            flag = torch.tensor(float(math.isfinite(loss.item())), device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            return bool(flag.item())
        return math.isfinite(loss.item())

    def init_from_data(self, count: int = 5000) -> None:
        """Data-dependent initialization (fastnet's whitening) from the first `count`
        training images, normalized and unaugmented; once, before the first epoch, and never
        over pretrained weights."""
        if self.epoch == 0 and not self.cfg.model.pretrained and hasattr(self.model,
                                                                         "init_from_data"):
            loader = self.train_loader
            ids = torch.arange(min(count, len(loader.labels)))
            self.model.init_from_data(loader.normalize(loader.gather(ids)))

    def finish(self) -> dict[str, Any]:
        """Test the best checkpoint (or the final weights) once; the summary of the run."""
        distributed.barrier()  # rank 0 has written best.pt
        best = self.run.checkpoints / "best.pt"
        if best.is_file():
            state = torch.load(best, map_location=self.device, weights_only=True)
            self.eval_model.load_state_dict(state["model"])
        tta = self.cfg.train.tta
        start = time.perf_counter()
        test = evaluate(self.eval_model, self.test_loader, tta, self.amp_dtype)
        test_seconds = time.perf_counter() - start
        history = self.run.metrics()
        val_acc = [m["val_accuracy"] for m in history if "val_accuracy" in m]
        checkpoint = next(cb for cb in self.callbacks if isinstance(cb, Checkpoint))
        summary = {
            "name": self.cfg.name, "model": self.cfg.model.name, "seed": self.cfg.seed,
            "test_accuracy": test.get("tta_accuracy", test["accuracy"]),
            "test_accuracy_plain": test["accuracy"], "test_loss": test["loss"], "tta": tta,
            "best_val_accuracy": max(val_acc) if val_acc else None,
            "best_epoch": checkpoint.best_epoch, "epochs": self.epoch,
            "stop_reason": self.stop_reason or "completed",
            "wall_seconds": self.wall_seconds(), "train_seconds": self.train_seconds,
            "train_images_per_second": self.images_seen / max(self.train_seconds, 1e-9),
            "data_seconds": self.data.seconds, "startup_seconds": self.startup_seconds,
            "test_seconds": test_seconds,
            "ema": self.ema is not None,
            **({"stages": self.stage_times(history)} if self.cfg.stages else {}),
            "num_parameters": sum(count_parameters(self.model)),
            "forward_gflops": forward_gflops(self.model, self.data.image_size),
            "images": {k: sum(v) for k, v in self.data.counts().items()},
            "skipped_files": len(self.data.skipped),
            **environment(str(self.device)),
        }
        return summary

    # -- resume -----------------------------------------------------------------------------
    def wall_seconds(self) -> float:
        """Wall time of the whole run, data preparation included, across resumptions."""
        return self.earlier_wall_seconds + self.data.seconds + time.perf_counter() - self.started

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "epoch": self.epoch, "stage": self.stage_index,
                "train_seconds": self.train_seconds,
                "images_seen": self.images_seen, "wall_seconds": self.wall_seconds(),
                "callbacks": [cb.state_dict() for cb in self.callbacks]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.begin_stage(state.get("stage", 0))  # the optimizer of the stage it was in
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.train_seconds = state["epoch"], state["train_seconds"]
        self.images_seen = state["images_seen"]
        self.earlier_wall_seconds = state["wall_seconds"]
        for cb, cb_state in zip(self.callbacks, state["callbacks"], strict=True):
            cb.load_state_dict(cb_state)
