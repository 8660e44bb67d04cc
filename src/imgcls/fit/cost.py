"""How long a candidate's run takes, and the training that fills a given time:
`imgcls fit`'s arithmetic.

A run's wall time is modelled as
    startup + test + prefix + prefix_per_image * images + epochs * per_epoch + passes * per_image
where `images` is the training set (or subset), `passes` the images trained on over the
resized stage's `epochs` (the last may end early), `prefix` the stages before the resized one
(a head on cached features: the backbone's forward pass over the images once), `per_epoch`
the validation and checkpoints after each epoch. Before any trial the figures come from a
probe (a few training and inference steps on random images at the candidate's input size);
after a trial, from what the trial's run folder recorded."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from imgcls.fit.candidates import Candidate
from imgcls.models import build_model
from imgcls.models.profile import training_images_per_second
from imgcls.train.precision import resolve_precision
from imgcls.train.setup import resolve_device

TRAIN_OVERHEAD = 1.25  # measured steps vs. the probe's: augmentation, the real optimizer
TTA_VIEWS = {"none": 1, "mirror": 2, "mirror_translate": 6}
PROBE_BATCH = {"cpu": 32, "cuda": 512}  # the largest batch a probe steps
MAX_EPOCHS = 200  # a longer budget than this many epochs needs goes unused, said so


@dataclass
class Cost:
    startup: float
    per_image: float
    per_epoch: float
    eval_per_image: float
    prefix: float = 0.0
    prefix_per_image: float = 0.0
    measured: bool = False  # per_image from a trial's resized epochs (not only the probe)

    def seconds(self, epochs: int, images: int, test_images: int = 0, views: int = 1,
                passes: float | None = None) -> float:
        """Predicted wall time of a run of `epochs` resized epochs (validated after each) on
        `images` images, training on `passes` images in all (default: whole epochs)."""
        passes = epochs * images if passes is None else passes
        return (self.startup + self.prefix + self.prefix_per_image * images
                + epochs * self.per_epoch + passes * self.per_image
                + self.test_seconds(test_images, views))

    def test_seconds(self, test_images: int, views: int = 1) -> float:
        """Predicted seconds of the test: each image through the network once per TTA view."""
        return test_images * views * self.eval_per_image

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Sizing:
    epochs: int  # resized epochs begun (the last may end early)
    subset: int | None  # training images when fewer than all
    passes: float  # images trained on in all, over the epochs
    seconds: float  # predicted

    def images(self, train_images: int) -> int:
        return self.subset or train_images


def size_run(cost: Cost, seconds: float, train_images: int, min_images: int,
             test_images: int = 0, views: int = 1, head_only: bool = False) -> Sizing | None:
    """What fills `seconds`: training on all the images for as many passes as fit (the last
    epoch cut short where the time ends); where caching a head stage's features over all of
    them leaves too little, one epoch over a stratified subset; `head_only`: the resized
    stage dropped (0 epochs) when not even that fits. None when not even `min_images` fit."""
    fixed = cost.startup + cost.prefix + cost.test_seconds(test_images, views)
    usable = seconds - fixed
    if usable <= 0:
        return None
    n = train_images
    floor = min(min_images, n)
    for epochs in range(1, MAX_EPOCHS + 1):
        passes = (usable - cost.prefix_per_image * n - epochs * cost.per_epoch) / cost.per_image
        if passes <= epochs * n:
            break
    if epochs > 1 and passes < (epochs - 1) * n:  # one more epoch costs more than it trains
        epochs -= 1
    passes = min(passes, epochs * n)
    if passes >= floor:
        return Sizing(epochs, None, passes, cost.seconds(epochs, n, test_images, views, passes))
    subset = min(n, int((usable - cost.per_epoch) / (cost.prefix_per_image + cost.per_image)))
    if subset >= floor:
        return Sizing(1, subset, subset, cost.seconds(1, subset, test_images, views))
    return _head_only(cost, usable, n, floor, test_images, views) if head_only else None


def _head_only(cost: Cost, usable: float, n: int, floor: int, test_images: int = 0,
               views: int = 1) -> Sizing | None:
    """The head stage alone on as many of the `n` images as `usable` seconds cache (all of
    them, or a stratified subset); None without a cached stage or below `floor` images."""
    if cost.prefix_per_image <= 0:
        return None
    subset = min(n, int(usable / cost.prefix_per_image))
    if subset < floor:
        return None
    return Sizing(0, None if subset == n else subset, 0,
                  cost.seconds(0, subset, test_images, views))


def size_trial(cost: Cost, seconds: float, train_images: int, min_images: int,
               head_only: bool) -> Sizing | None:
    """A trial's training for `seconds`: as `size_run`, except that a candidate with a head
    stage (`head_only`) whose fine-tuning would fit only on a subset trains its head alone
    on as many images as fit: fine-tuned for an epoch on a small subset, a model measures
    that subset (Lite0 on 298 of flowers5-128's 3,107 images: 0.67 on validation, against
    0.76 for its head alone on 2,520), while the head alone is the transfer curves' own
    first point and, on every image, the final run's head stage."""
    sizing = size_run(cost, seconds, train_images, min_images)
    if head_only and (sizing is None or sizing.subset is not None):
        usable = seconds - cost.startup - cost.prefix
        return _head_only(cost, usable, train_images, min(min_images, train_images)) or sizing
    return sizing


def steps_per_epoch(images: int, batch_size: int) -> int:
    """The training loader's batches an epoch: whole batches only (a set no larger than one
    batch is one smaller batch)."""
    return images // batch_size if images > batch_size else 1


def steps_for(sizing: Sizing, train_images: int, batch_size: int) -> int:
    """The optimizer steps of `sizing`'s passes: a run's `train.steps`."""
    images = sizing.images(train_images)
    return max(1, round(sizing.passes / images * steps_per_epoch(images, batch_size)))


def smallest_run(cost: Cost, train_images: int, min_images: int, test_images: int,
                 views: int, head_only: bool) -> float:
    """The shortest run `size_run` accepts: one epoch (or, head-only, the cached stage) over
    `min_images` images."""
    images = min(min_images, train_images)
    return cost.seconds(0 if head_only and cost.prefix_per_image > 0 else 1, images,
                        test_images, views)


# -- measuring -------------------------------------------------------------------------------
def _inference_images_per_second(model: torch.nn.Module, x: torch.Tensor, steps: int = 2
                                 ) -> float:
    model.eval()
    times = []
    with torch.no_grad():
        for step in range(steps + 1):
            start = time.perf_counter()
            model(x)
            if step:
                times.append(time.perf_counter() - start)
    return len(x) / statistics.median(times)


def probe(candidate: Candidate, classes: int, channels: int, startup: float,
          val_images: int) -> tuple[Cost, dict[str, float]]:
    """A first cost estimate from a few training and inference steps of the candidate's
    network on random images (no weights are loaded: speed does not depend on them), at its
    own batch size (at most PROBE_BATCH: the probe's seconds count against the budget, and
    a CPU's speed per image hardly grows with the batch) under the precision its run would
    use; `startup` is the measured time to load the data. The runs are paced, so this
    estimate only plans them."""
    cfg = candidate.config
    device = resolve_device(cfg.train.device)
    largest_batch = PROBE_BATCH[device.type]
    batch = min(cfg.train.micro_batch_size or cfg.train.batch_size, largest_batch)
    precision = resolve_precision(cfg.train.amp, device)
    size = candidate.input_size
    torch.manual_seed(0)
    model = build_model(cfg.model, classes, size, channels).to(device)
    with torch.autocast(device.type, dtype=precision.dtype or torch.float32,
                        enabled=precision.dtype is not None):
        train_ips = training_images_per_second(model, size, classes, batch, steps=2, warmup=1)
        x = torch.randn(min(cfg.train.eval_batch_size, 2 * largest_batch), channels, size,
                        size, device=device)
        eval_ips = _inference_images_per_second(model.to(memory_format=torch.channels_last),
                                                x.contiguous(memory_format=torch.channels_last))
    per_eval = 1 / eval_ips
    transfer = candidate.family == "transfer"
    head_epochs = sum(s.epochs for s in cfg.stages[:-1])
    cost = Cost(startup=startup + 1.0, per_image=TRAIN_OVERHEAD / train_ips,
                per_epoch=0.1 + val_images * per_eval, eval_per_image=per_eval,
                prefix=(val_images * per_eval + 0.05 * head_epochs) if transfer else 0.0,
                prefix_per_image=per_eval if transfer else 0.0)
    return cost, {"train_images_per_second": train_ips, "eval_images_per_second": eval_ips}


def calibrated(estimate: Cost, summary: dict[str, Any], metrics: list[dict[str, Any]],
               images: int, val_images: int, resized_stage: int | None,
               wall: float | None = None) -> Cost:
    """The cost model fitted to a finished trial: its startup, the seconds per image of its
    resized stage's epochs, the rest of each of those epochs (validation, checkpoints), its
    cached stage and the seconds per image of inference (its fastest validation: the test
    runs through the same loader, which a probe on random tensors leaves out). `wall`: the
    trial's seconds as the caller's clock saw them (building the model and loading its
    weights included, which the run's own wall time leaves out). Figures the trial could
    not show (a head-only trial has no resized epochs) keep the estimate's."""
    resized = [m for m in metrics
               if resized_stage is None or m.get("stage") == resized_stage + 1]
    per_image = estimate.per_image
    if resized:
        seconds = sum(m["seconds"] for m in resized)
        seen = sum(m["images_per_second"] * m["seconds"] for m in resized)
        per_image = seconds / max(seen, 1)
    stages = summary.get("stages") or []
    staged = sum(s["train_seconds"] for s in stages)
    cache = max(0.0, staged - summary["train_seconds"]) if stages else 0.0
    head = sum(m["seconds"] for m in metrics if m not in resized)
    startup = summary["startup_seconds"] + max(0.0, (wall or 0.0) - summary["wall_seconds"])
    rest = ((wall or summary["wall_seconds"]) - startup - summary["train_seconds"] - cache
            - summary.get("test_seconds", 0.0))
    per_epoch = estimate.per_epoch
    if resized:  # validation after the cached stage's epochs (on features) is negligible
        per_epoch = max(0.0, rest) / len(resized)
    timed = [m["val_seconds"] for m in resized if m.get("val_seconds")]
    eval_per_image = min(timed) / val_images if timed and val_images else estimate.eval_per_image
    prefix, prefix_per_image = estimate.prefix, estimate.prefix_per_image
    if cache:
        prefix_per_image = cache / (images + val_images)
        prefix = prefix_per_image * val_images + head
    return Cost(startup=startup, per_image=per_image, per_epoch=per_epoch,
                eval_per_image=eval_per_image, prefix=prefix,
                prefix_per_image=prefix_per_image, measured=bool(resized))


def views(tta: str) -> int:
    return TTA_VIEWS.get(tta, 1)


def ceil_seconds(seconds: float) -> int:
    """Seconds rounded up to the next 10 (how a smallest useful budget is quoted)."""
    return int(math.ceil(seconds / 10) * 10)
