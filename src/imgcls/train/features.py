"""Feature extraction as a speed path: while the backbone is frozen and the images are not
augmented, every epoch would push the same images through the same backbone. Compute the
head's inputs once instead, and train the head on them; an epoch then costs a matrix
multiply instead of a full forward pass."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from imgcls.augment.functional import to_device
from imgcls.data.loader import Batches, BatchLoader, take_shard


class FeatureLoader(Batches):
    """Batches of cached features, in the order `BatchLoader` would give the images."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 shuffle: bool = False, drop_last: bool = False, seed: int = 0,
                 shard: tuple[int, int] = (0, 1), sampler: str = "shuffle"):
        super().__init__(labels, batch_size, shuffle, drop_last, seed, shard, sampler)
        self.features = features

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        _, batches = self.order(epoch)
        for ids in batches:
            ids = to_device(ids, self.labels.device)
            yield take_shard(self.features[ids], self.labels[ids], self.shard)


class NotSplittable(RuntimeError):
    pass


@torch.no_grad()
def extract_features(model: nn.Module, head: nn.Module, loader: BatchLoader,
                     amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs of `head`, labels) over the loader in eval mode. Raises NotSplittable when
    the model does more after its head than the head alone (its logits would differ)."""
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda module, args, out: captured.append(args[0]))
    model.eval()
    features, labels = [], []
    try:
        for i, (x, y) in enumerate(loader.epoch(0)):
            with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
            batch = captured.pop().float()
            if i == 0 and not torch.allclose(head(batch).float(), logits.float(), rtol=1e-3,
                                             atol=1e-4):
                raise NotSplittable(f"{type(model).__name__} transforms its head's output; "
                                    "its features cannot be cached (cache_features: false)")
            features.append(batch)
            labels.append(y)
    finally:
        hook.remove()
    return torch.cat(features), torch.cat(labels)
