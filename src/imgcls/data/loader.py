"""The in-memory loader: the whole uint8 dataset sits on the training device; each batch is
one gather plus batched augmentation and normalization. No worker processes, no per-image
Python (airbench's approach), which keeps a 2-core CPU busy with the model, not the data."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from imgcls.augment import AugmentContext, Op
from imgcls.data.base import ImageSet


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct, reproducible seed per (run seed, epoch, purpose)."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


class BatchLoader:
    def __init__(self, data: ImageSet, batch_size: int, mean: torch.Tensor, std: torch.Tensor,
                 device: torch.device, *, shuffle: bool = False, drop_last: bool = False,
                 augment: Sequence[Op] = (), seed: int = 0, channels_last: bool = True):
        # read-only memory maps are copied into RAM; arrays already there are used as they are
        self.images = torch.from_numpy(np.require(data.images, requirements=["C", "W"])).to(device)
        self.labels = torch.from_numpy(np.asarray(data.labels)).to(device)
        self.batch_size = batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.augment = list(augment)
        self.seed = seed
        self.channels_last = channels_last
        # normalize as one fused multiply-add on the uint8 values
        self.scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(device)
        self.shift = (-mean / std).view(1, 3, 1, 1).to(device)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_images(self) -> int:
        return len(self) * self.batch_size if self.drop_last else len(self.labels)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC -> float NCHW; the permuted view of NHWC memory *is* channels_last."""
        x = batch.permute(0, 3, 1, 2).float().mul_(self.scale).add_(self.shift)
        return x if self.channels_last else x.contiguous()

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, 1))
        n = len(self.labels)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for b in range(len(self)):
            ids = order[b * self.batch_size:(b + 1) * self.batch_size]
            batch = self.images[ids]
            ctx = AugmentContext(ids, n, epoch, generator, self.seed)
            for op in self.augment:
                batch = op(batch, ctx)
            yield self.normalize(batch), self.labels[ids]
