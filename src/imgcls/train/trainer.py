"""The training loop. Its parts (model, loaders, stages, callbacks) come ready-made from
`imgcls.train.setup`; `Trainer.train_epoch` is the whole step, top to bottom, and `fit` the
whole run. Everything cross-cutting (checkpoints, early stopping, logs, progress, EMA, the
plateau schedule) is a callback."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imgcls.augment.mix import target_hits
from imgcls.config import Config
from imgcls.data import DataSplits
from imgcls.data.loader import Batches, epoch_seed
from imgcls.log import get_logger
from imgcls.models.parts import head_name
from imgcls.models.profile import count_parameters, forward_gflops
from imgcls.tracking.run import Run, environment
from imgcls.train import distributed
from imgcls.train.callbacks import Callback
from imgcls.train.evaluate import evaluate
from imgcls.train.features import FeatureLoader, extract_features
from imgcls.train.imbalance import resolve_class_weights
from imgcls.train.metrics import SCORES, check_monitors
from imgcls.train.optim import frozen_norm_stats, l2_penalty
from imgcls.train.precision import resolve_precision
from imgcls.train.setup import (
    check_input_sizes,
    create_callbacks,
    create_loaders,
    create_model_with_weights,
    prepare_device,
    resolve_compile,
    unaugmented_loader,
)
from imgcls.train.stage import Stage, create_stage, stage_at

log = get_logger(__name__)


class TrainingDiverged(RuntimeError):
    pass


class FiniteWatch:
    """The first step of an epoch whose loss was not finite, and that loss, kept on the
    device: recording costs two tiny kernels and no wait, and the host looks only every
    `train.sync_every` steps."""

    NEVER = 2**62

    def __init__(self, device: torch.device):
        self.step = torch.full((), self.NEVER, dtype=torch.long, device=device)
        self.loss = torch.zeros((), device=device)

    def record(self, loss: torch.Tensor, step: int) -> None:
        first = ~torch.isfinite(loss) & (self.step == self.NEVER)
        self.step = torch.where(first, step, self.step)
        self.loss = torch.where(first, loss.float(), self.loss)

    def first_bad(self, across_processes: bool) -> tuple[int, float] | None:
        """(step, loss) of the first non-finite step, over all processes when several train
        (the loss is this process's, nan if its own steps were finite); None if none."""
        step = self.step
        if across_processes:
            step = step.clone()
            torch.distributed.all_reduce(step, op=torch.distributed.ReduceOp.MIN)
        first = int(step.item())
        if first == self.NEVER:
            return None
        return first, float(self.loss.item()) if first == int(self.step.item()) else math.nan


class Trainer:
    def __init__(self, cfg: Config, run: Run, data: DataSplits,
                 callbacks: Sequence[Callback] = ()):
        self.cfg, self.run, self.data = cfg, run, data
        t = cfg.train
        self.world = distributed.world()
        self.device = prepare_device(t, self.world)
        self.precision = resolve_precision(t.amp, self.device)
        self.amp_dtype = self.precision.dtype
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.precision.amp == "fp16")
        self.compiled = resolve_compile(t.compile, self.device)
        self.sync_every = t.sync_every or (1 if self.device.type == "cpu" else 50)
        if self.is_main:
            log.info(f"precision: {self.precision.describe()}"
                     + ("; torch.compile on" if self.compiled else ""))

        check_monitors(cfg, len(data.classes))
        self.class_weights = resolve_class_weights(t.class_weights, data.train.labels,
                                                   data.classes)
        torch.manual_seed(cfg.seed)  # the seed fixes the initialization
        self.model, self.inputs, report = create_model_with_weights(cfg, data)
        if report and self.is_main:
            log.info(report.summary())
            run.write_pretrained_report(report.as_dict())
        self.loaders = create_loaders(cfg, data, self.inputs, self.device, self.world)
        self.model = self.model.to(self.device)
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        check_input_sizes(self.model, cfg, self.inputs, self.device)
        self.always_frozen = {n for n, p in self.model.named_parameters() if not p.requires_grad}
        self.lr_scale = 1.0  # every group's lr multiplier (the plateau callback lowers it)
        self.eval_model = self.model  # what is validated, saved as best.pt and tested
        self.cache_seconds: dict[int, float] = {}  # stage -> seconds spent caching features
        self.begin_stage(0)
        weight = (None if self.class_weights is None else
                  torch.tensor(self.class_weights, dtype=torch.float32, device=self.device))
        self.loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=t.label_smoothing,
                                           reduction=t.loss_reduction)
        self.callbacks = create_callbacks(cfg, self.has_val, callbacks)
        for cb in self.callbacks:
            cb.on_setup(self)
        self.epoch = 0  # epochs completed
        self.started = time.perf_counter()
        self.earlier_wall_seconds = 0.0  # spent before an interruption, when resumed
        self.train_seconds = 0.0
        self.images_seen = 0
        self.stop_reason: str | None = None
        self.tta_choice: dict[str, Any] | None = None  # made on validation before the test

    @property
    def is_main(self) -> bool:
        """The process that writes the run folder (rank 0; the only one when alone)."""
        return self.world.is_main

    @property
    def has_val(self) -> bool:
        return self.loaders.val is not None

    # -- stages -----------------------------------------------------------------------------
    def begin_stage(self, index: int) -> None:
        """Stage `index` with a fresh optimizer; its batches are prepared when it trains."""
        self.stage: Stage = create_stage(self.cfg, index, self.model, len(self.loaders.train),
                                         lambda: self.lr_scale, self.always_frozen)
        self.train_batches: Batches | None = None  # set by prepare_batches

    def prepare_batches(self) -> None:
        """What the stage trains and validates on: augmented images through the model, or,
        for a head-only stage with cached features, the frozen backbone's features (computed
        here, once) through the head."""
        if self.stage.cache_features:
            train, val = self._cache_features()
            head = head_name(self.model)
            self.train_batches, self.net = train, self._replicated(self.model.get_submodule(head))
            self.val_batches, self.val_net = val, self.eval_model.get_submodule(head)
        else:
            self.train_batches, self.net = self.loaders.train, self._replicated(self.model)
            self.val_batches, self.val_net = self.loaders.val, self.eval_model

    def _replicated(self, module: nn.Module) -> nn.Module:
        """What trains `module`: itself, in DistributedDataParallel when several processes
        train (it averages the gradients across them during backward), compiled when
        `train.compile` is on (its weights stay `module`'s, so checkpoints are unchanged)."""
        if self.world.active:
            from torch.nn.parallel import DistributedDataParallel

            module = DistributedDataParallel(module)
        return (torch.compile(module, mode=self.cfg.train.compile_mode) if self.compiled
                else module)

    def release_replica(self) -> None:
        """Drop the DistributedDataParallel wrapper while its process group lives: one
        freed after `destroy_process_group` (an interrupted run's traceback keeps the
        trainer alive that long) aborts the process with SIGABRT."""
        self.net = self.model

    def _cache_features(self) -> tuple[FeatureLoader, FeatureLoader | None]:
        start = time.perf_counter()
        t, head = self.cfg.train, self.model.get_submodule(head_name(self.model))
        train_loader, val_loader = self.loaders.train, self.loaders.val
        plain = unaugmented_loader(self.cfg, self.data.train, self.inputs, self.device)
        train = FeatureLoader(*extract_features(self.model, head, plain, self.amp_dtype),
                              t.batch_size, shuffle=True, drop_last=train_loader.drop_last,
                              seed=self.cfg.seed, shard=train_loader.shard,
                              sampler=train_loader.sampler)
        val = (FeatureLoader(*extract_features(self.model, head, val_loader, self.amp_dtype),
                             t.eval_batch_size) if val_loader is not None else None)
        self.cache_seconds[self.stage.index] = time.perf_counter() - start
        if self.is_main:
            log.info(f"cached the frozen backbone's features in "
                     f"{self.cache_seconds[self.stage.index]:.1f} s")
        return train, val

    # -- the step ---------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        for norm in self.stage.frozen_norms:  # the frozen part keeps its statistics
            norm.eval()
        torch.manual_seed(epoch_seed(self.cfg.seed, epoch, 2))  # dropout & co. per epoch
        size = self.train_size(epoch)
        loss_sum = torch.zeros((), device=self.device)
        hits = torch.zeros((), device=self.device)
        watch = FiniteWatch(self.device)
        seen = 0
        start = time.perf_counter()
        for step, (x, y) in enumerate(self.train_batches.epoch(epoch)):
            if x.ndim == 4 and size != x.shape[-1]:  # progressive resizing
                x = self.shrink(x, size)
            batch_loss, batch_hits = self.train_step(x, y)
            watch.record(batch_loss, step)  # on the device: no wait for the step to finish
            if (step + 1) % self.sync_every == 0:
                self.stop_if_diverged(watch, epoch)
            loss_sum += batch_loss
            hits += batch_hits
            seen += len(y)
            for cb in self.callbacks:
                cb.on_batch_end(self, seen)
            if self.stage.horizon_reached():  # `train.steps`: the last epoch ends early
                break
        self.stop_if_diverged(watch, epoch)
        if self.world.active:  # the epoch's figures over all processes' shares
            totals = torch.stack([loss_sum, hits, torch.tensor(float(seen))]).to(self.device)
            torch.distributed.all_reduce(totals)
            loss_sum, hits, seen = totals[0], totals[1], int(totals[2].item())
            distributed.sync_buffers(self.model)
            if self.eval_model is not self.model:
                distributed.sync_buffers(self.eval_model)
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
        stage = self.stage
        loss_sum, hits = self.backward(x, y)
        if stage.sam:
            stage.sam.ascend()
            with frozen_norm_stats(self.model):  # the batch already counted in BN statistics
                self.backward(x, y)
            stage.sam.descend()
        if stage.clip_grad_norm:
            self.scaler.unscale_(stage.optimizer)
            params = [p for g in stage.optimizer.param_groups for p in g["params"]]
            nn.utils.clip_grad_norm_(params, stage.clip_grad_norm)
        self.scaler.step(stage.optimizer)
        self.scaler.update()
        stage.scheduler.step()
        return loss_sum, hits

    def backward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of the batch's loss (plus the L2 penalty), in micro-batches if asked;
        the batch's summed loss and correct count."""
        self.stage.optimizer.zero_grad(set_to_none=True)
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
                loss = self.loss_fn(logits.float(), ys)  # the loss in float32 under autocast
                # the gradient of the whole (global) batch: a summed loss undoes DDP's mean
                weight = self.world.size if summed else len(ys) / len(y)
                self.scaler.scale(loss * weight).backward()
            loss_sum += loss.detach() if summed else loss.detach() * len(ys)
            hits += target_hits(logits, ys)
        penalty = l2_penalty(self.stage.optimizer)
        if penalty is not None:
            self.scaler.scale(penalty).backward()
        return loss_sum, hits

    # -- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        try:
            return self._fit()
        except BaseException as error:
            for cb in self.callbacks:
                cb.on_exception(self, error)
            raise

    def _fit(self) -> dict[str, Any]:
        self.init_from_data()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        self.startup_seconds = self.data.seconds + time.perf_counter() - self.started
        for epoch in range(self.epoch, self.cfg.train.epochs):
            if stage_at(self.cfg, epoch) != self.stage.index:
                self.begin_stage(stage_at(self.cfg, epoch))
            if self.stage.horizon_reached():
                break
            if self.train_batches is None:
                self.prepare_batches()
            lr = self.main_group()["lr"]
            metrics: dict[str, Any] = {"epoch": epoch + 1, **self.train_epoch(epoch), "lr": lr}
            if self.cfg.stages:
                metrics["stage"] = self.stage.index + 1
            if self.val_batches is not None:
                start = time.perf_counter()
                val = evaluate(self.val_net, self.val_batches, amp_dtype=self.amp_dtype)
                metrics.update(val_loss=val["loss"], val_accuracy=val["accuracy"],
                               **{f"val_{k}": val[k] for k in SCORES if k in val},
                               val_seconds=time.perf_counter() - start)
            self.epoch = epoch + 1
            for cb in self.callbacks:
                cb.on_epoch_end(self, metrics)
            if self.stop_reason:
                break
        for cb in self.callbacks:
            cb.on_train_end(self)
        summary = self.test()
        for cb in self.callbacks:
            cb.on_fit_end(self, summary)
        return summary

    def train_size(self, epoch: int) -> int:
        sizes = self.cfg.train.image_sizes
        return sizes[min(epoch, len(sizes) - 1)] if sizes else self.inputs.size

    def main_group(self) -> dict[str, Any]:
        """The param group whose lr is logged: weights on the run's full schedule, at the
        stage's own lr (the head's, with discriminative learning rates)."""
        groups = [g for g in self.stage.optimizer.param_groups
                  if g.get("horizon_epochs") is None and g.get("lr_scale", 1.0) == 1.0]
        return next((g for g in groups if g.get("kind") == "weights"), groups[0])

    def stop_if_diverged(self, watch: FiniteWatch, epoch: int) -> None:
        """Raise TrainingDiverged if a step of this epoch had a non-finite loss in any
        process (so all stop together), naming the first such step; before the epoch's
        checkpoint, so the last good one stays."""
        found = watch.first_bad(self.world.active)
        if found is None:
            return
        step, loss = found
        raise TrainingDiverged(
            f"epoch {epoch + 1}, step {step + 1}: training loss is {loss} "
            f"(lr {self.main_group()['lr']:.4g}); stopped. The last good checkpoint "
            f"({self.run.checkpoint_path('last')}) is kept; lower optim.lr, clip "
            "gradients (optim.clip_grad_norm) or check the data.")

    def speed_settings(self) -> dict[str, Any]:
        """How this run computes (precision, compile), as recorded in its environment and
        summary."""
        return {"precision": self.precision.as_dict(), "compiled": self.compiled}

    def init_from_data(self) -> None:
        """Data-dependent initialization (fastnet's whitening) from the first training
        images (as many as the model's `whiten_images`, else 5,000), normalized and
        unaugmented; once, before the first epoch, and never over pretrained weights."""
        if self.epoch == 0 and not self.cfg.model.pretrained and hasattr(self.model,
                                                                         "init_from_data"):
            loader = self.loaders.train
            count = getattr(self.model, "whiten_images", 5000)
            ids = torch.arange(min(count, len(loader.labels)))
            self.model.init_from_data(loader.normalize(loader.gather(ids)))

    def test(self) -> dict[str, Any]:
        """Test the evaluated model once (the best checkpoint's weights, put back by the
        checkpoint callback); the summary of the run."""
        start = time.perf_counter()
        history = self.run.metrics()
        val_acc = [m["val_accuracy"] for m in history if "val_accuracy" in m]
        return {
            "name": self.cfg.name, "model": self.cfg.model.name, "seed": self.cfg.seed,
            **self.test_figures(),
            "best_val_accuracy": max(val_acc) if val_acc else None,
            "epochs": self.epoch, "last_stage_steps": self.stage.scheduler.last_epoch,
            "stop_reason": self.stop_reason or "completed",
            "wall_seconds": self.wall_seconds(), "train_seconds": self.train_seconds,
            "train_images_per_second": self.images_seen / max(self.train_seconds, 1e-9),
            "data_seconds": self.data.seconds, "startup_seconds": self.startup_seconds,
            "test_seconds": time.perf_counter() - start,
            "ema": self.cfg.train.ema is not None,
            "class_weights": self.class_weights, "sampler": self.cfg.data.sampler,
            **self.speed_settings(),
            **({"stages": self.stage_times(history)} if self.cfg.stages else {}),
            "num_parameters": sum(count_parameters(self.model)),
            "forward_gflops": forward_gflops(self.model, self.data.image_size),
            "images": {k: sum(v) for k, v in self.data.counts().items()},
            "skipped_files": len(self.data.skipped),
            "exact_duplicates": (self.data.overlap.summary() if self.data.overlap is not None
                                 else None),
            "data_edits": self.data.edits.summary(),
            **environment(str(self.device)),
        }

    def test_figures(self) -> dict[str, Any]:
        """The summary's test figures (the TTA ones when TTA is on, the plain accuracy too);
        all null when `train.test` is off."""
        tta = self.cfg.train.tta
        if not self.cfg.train.test:
            return {"test_accuracy": None, "test_accuracy_plain": None, "test_loss": None,
                    "tta": tta, "per_class": None}
        if self.tta_choice is not None:  # chosen during training (`choose_tta`)
            tta, checked = self.tta_choice["chosen"], self.tta_choice
        else:
            tta, checked = self.tta_checked_on_val(tta)
        margin = self.cfg.train.tta_margin
        test = evaluate(self.eval_model, self.loaders.test, tta, self.amp_dtype,
                        per_class=True, classes=self.data.classes, tta_margin=margin)
        shown = "tta_" if "tta_accuracy" in test else ""
        return {"test_accuracy": test.get("tta_accuracy", test["accuracy"]),
                "test_accuracy_plain": test["accuracy"], "test_loss": test["loss"], "tta": tta,
                "tta_margin": margin, "tta_share": test.get("tta_share"),
                **{f"test_{k}": test[shown + k] for k in SCORES if shown + k in test},
                "per_class": test["per_class"], "tta_validation": checked}

    def tta_checked_on_val(self, tta: str, forgone: float = 0.0
                           ) -> tuple[str, dict[str, Any] | None]:
        """With `train.tta_from_val`, the TTA kept only if it beats the plain image on the
        validation split (the evaluated weights, before the test): averaging views can cost
        accuracy (a mirror on asymmetric classes, a shift on tiny images). `forgone`: the
        share of the validation error that the time the TTA's views take would remove by
        training instead (a time-paced run's); the TTA must then remove a larger share.
        The figures behind the choice are returned for the summary."""
        if tta == "none" or not self.cfg.train.tta_from_val or self.loaders.val is None:
            return tta, None
        val = evaluate(self.eval_model, self.loaders.val, tta, self.amp_dtype,
                       tta_margin=self.cfg.train.tta_margin)
        plain, with_tta = val["accuracy"], val["tta_accuracy"]
        kept = with_tta - plain > forgone * (1.0 - plain)
        price = (f"; the steps its test's time would train are forecast to remove "
                 f"{forgone:.1%} of the error" if forgone else "")
        log.info(f"TTA {tta} {'kept' if kept else 'dropped'}: validation accuracy "
                 f"{with_tta:.4f} with it, {plain:.4f} without{price}")
        return (tta if kept else "none"), {"tta": tta, "kept": kept,
                                           "val_accuracy_plain": plain,
                                           "val_accuracy_tta": with_tta, "forgone": forgone}

    def choose_tta(self, forgone: float = 0.0) -> str:
        """Make the validation's TTA choice now, on the weights so far, for the test to keep;
        the TTA it chose ("none" if dropped). A time-paced run chooses at its last validation
        before the end, so that its last steps fit the test it will really run (six views of
        the test can take a tenth of a short budget), and weighs the TTA against the steps
        its views' time would train (`forgone`, as in `tta_checked_on_val`). Made once: a
        later call returns it."""
        if self.tta_choice is None:
            tta, checked = self.tta_checked_on_val(self.cfg.train.tta, forgone)
            if checked is None:  # nothing to choose: no TTA, or no validation
                return tta
            self.tta_choice = {**checked, "chosen": tta, "epoch": self.epoch}
        return self.tta_choice["chosen"]

    def stage_times(self, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each stage's epochs and training seconds (with its feature caching, if any)."""
        return [{"name": stage.name or f"stage {i + 1}", "epochs": stage.epochs,
                 "train_seconds": sum(m["seconds"] for m in history if m.get("stage") == i + 1)
                 + self.cache_seconds.get(i, 0.0)}
                for i, stage in enumerate(self.cfg.stages)]

    # -- resume -----------------------------------------------------------------------------
    def wall_seconds(self) -> float:
        """Wall time of the whole run, data preparation included, across resumptions."""
        return self.earlier_wall_seconds + self.data.seconds + time.perf_counter() - self.started

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(),
                "optimizer": self.stage.optimizer.state_dict(),
                "scheduler": self.stage.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "epoch": self.epoch, "stage": self.stage.index,
                "horizon": self.stage.horizon.steps,
                "train_seconds": self.train_seconds,
                "images_seen": self.images_seen, "wall_seconds": self.wall_seconds(),
                "tta_choice": self.tta_choice,
                "callbacks": {cb.key: cb.state_dict() for cb in self.callbacks}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state`; each callback gets the state saved under its key (one the
        checkpoint lacks, e.g. added since, starts fresh)."""
        self.model.load_state_dict(state["model"])
        self.begin_stage(state.get("stage", 0))  # the optimizer of the stage it was in
        self.stage.optimizer.load_state_dict(state["optimizer"])
        self.stage.scheduler.load_state_dict(state["scheduler"])
        self.stage.horizon.steps = state.get("horizon", self.stage.horizon.steps)
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.train_seconds = state["epoch"], state["train_seconds"]
        self.images_seen = state["images_seen"]
        self.earlier_wall_seconds = state["wall_seconds"]
        self.tta_choice = state.get("tta_choice")
        saved = state["callbacks"]
        if isinstance(saved, list):  # checkpoints of older versions: by position
            older = [cb for cb in self.callbacks if cb.in_list_checkpoints]
            saved = {cb.key: s for cb, s in zip(older, saved, strict=True)}
        for cb in self.callbacks:
            if cb.key in saved:
                cb.load_state_dict(saved[cb.key])
