"""The batch loader: each batch is one gather of uint8 images, the augmentation ops on the
training device, then normalization as one fused multiply-add. No worker processes, no
per-image Python (airbench's approach), which keeps a 2-core CPU busy with the model.

Datasets that fit in memory sit on the training device whole. Larger ones stay in their
memory-mapped cache file and each batch is read from it; the ops are the same either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from imgcls.augment import AugmentContext, AugmentOp, Mixer
from imgcls.augment.functional import to_device
from imgcls.data.base import ImageSet


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct, reproducible seed per (run seed, epoch, purpose)."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def fits_in_memory(nbytes: int, share: float = 0.5) -> bool:
    """Whether `nbytes` is at most `share` of the memory available now."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no sysconf: assume it fits
        return True
    return nbytes <= share * available


class Batches:
    """An epoch's batch order, shared by image batches and cached-feature batches: a
    shuffle drawn from (seed, epoch), so a resumed or cached run sees the same order.
    `sampler="balanced"` draws the epoch's ids with replacement instead, every class
    equally likely (each image of a class with n images: 1 / (C * n), C the classes
    present), as many as there are images, also from (seed, epoch)."""

    def __init__(self, labels: torch.Tensor, batch_size: int, shuffle: bool, drop_last: bool,
                 seed: int, shard: tuple[int, int], sampler: str = "shuffle"):
        if sampler not in ("shuffle", "balanced"):
            raise ValueError(f"sampler = {sampler!r}: valid: shuffle, balanced")
        self.labels, self.batch_size = labels, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.sampler = sampler
        self._by_class: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        # data-parallel training: (rank, world size). Every process draws the same global
        # batch and keeps its share (`take_shard`), so N processes do one process's step
        self.shard = shard

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> tuple[torch.Generator, list[torch.Tensor]]:
        """The epoch's generator (augmentation draws from it next) and its batches' ids, on
        the CPU (the augmentation looks up per-image state by id there)."""
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, 1))
        n = len(self.labels)
        if self.sampler == "balanced":
            order = self.balanced_draw(n, generator)
        else:
            order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        return generator, [order[b * self.batch_size:(b + 1) * self.batch_size]
                           for b in range(len(self))]

    def balanced_draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """`n` ids drawn with replacement: a class uniformly among those present, then an
        image of it uniformly (on the CPU, so every device draws the same ids)."""
        if self._by_class is None:
            labels = self.labels.cpu().long()
            _, counts = torch.unique(labels, sorted=True, return_counts=True)
            self._by_class = (torch.argsort(labels, stable=True), counts.cumsum(0) - counts,
                              counts)
        ids, starts, counts = self._by_class
        cls = torch.randint(len(counts), (n,), generator=generator)
        size = counts[cls]
        within = (torch.rand(n, generator=generator, dtype=torch.float64) * size).long()
        return ids[starts[cls] + torch.minimum(within, size - 1)]


class BatchLoader(Batches):
    def __init__(self, data: ImageSet, batch_size: int, mean: torch.Tensor, std: torch.Tensor,
                 device: torch.device, *, shuffle: bool = False, drop_last: bool = False,
                 augment: Sequence[AugmentOp] = (), mix: Mixer | None = None, seed: int = 0,
                 channels_last: bool = True, in_memory: bool | None = None,
                 size: int | None = None, interpolation: str = "bilinear",
                 shard: tuple[int, int] = (0, 1), sampler: str = "shuffle"):
        if in_memory is None:
            in_memory = fits_in_memory(data.images.nbytes)
        # in memory: read-only memory maps are copied into RAM (or onto the device) once;
        # streamed: the memory map stays, and batches are read from it
        self.images = (torch.from_numpy(np.require(data.images, requirements=["C", "W"]))
                       .to(device) if in_memory else data.images)
        super().__init__(torch.from_numpy(np.asarray(data.labels)).to(device), batch_size,
                         shuffle, drop_last, seed, shard, sampler)
        self.device = device
        self.augment, self.mix = list(augment), mix
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # normalize as one fused multiply-add on the uint8 values
        self.scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1).to(device)
        self.shift = (-mean / std).view(1, -1, 1, 1).to(device)
        # the network's input size, when it differs from the stored images' (resized on the
        # fly on the device, after augmentation: cheap ops at the small size)
        self.size = size if size != data.images.shape[1] else None
        self.interpolation = interpolation

    @property
    def num_images(self) -> int:
        return len(self) * self.batch_size if self.drop_last else len(self.labels)

    def gather(self, ids: torch.Tensor) -> torch.Tensor:
        """uint8 images `ids` as an NCHW view of NHWC memory (channels_last), on the device."""
        if isinstance(self.images, torch.Tensor):
            batch = self.images[to_device(ids, self.images.device)]
        else:
            batch = to_device(torch.from_numpy(self.images[ids.cpu().numpy()]), self.device)
        return batch.permute(0, 3, 1, 2)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0-1 float) NCHW -> normalized float NCHW in the loader's memory format."""
        scale = self.scale if batch.dtype == torch.uint8 else self.scale * 255
        x = batch.float().mul_(scale).add_(self.shift)
        if self.size is not None:
            x = F.interpolate(x, size=(self.size, self.size), mode=self.interpolation,
                              antialias=self.size < x.shape[-1], align_corners=False)
        return x.contiguous(memory_format=self.memory_format)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, targets) batches; targets are class indices, or class probabilities
        when MixUp/CutMix mixes labels."""
        generator, batches = self.order(epoch)
        for ids in batches:
            batch = self.gather(ids)
            ctx = AugmentContext(ids, len(self.labels), epoch, generator, self.seed)
            for op in self.augment:
                batch = op(batch, ctx)
            x, y = self.normalize(batch), self.labels[to_device(ids, self.labels.device)]
            x, y = self.mix(x, y, generator) if self.mix else (x, y)
            yield take_shard(x, y, self.shard)


def take_shard(x: torch.Tensor, y: torch.Tensor,
               shard: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's share of a global batch (all of it outside data-parallel runs)."""
    rank, size = shard
    return (x, y) if size == 1 else (x.tensor_split(size)[rank], y.tensor_split(size)[rank])
