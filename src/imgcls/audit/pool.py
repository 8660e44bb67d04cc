"""All of a run's images in one place: the splits side by side, in the order train, val,
test, with each image's split, label, name and digest, so that findings can point at any
image across the splits."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from imgcls.audit.records import ImageRef
from imgcls.data import DataSplits


@dataclass
class Pool:
    images: np.ndarray  # uint8 NHWC
    labels: np.ndarray
    names: np.ndarray
    digests: np.ndarray
    splits: np.ndarray  # "train" / "val" / "test" per image
    classes: list[str]
    where: dict[str, int] = field(init=False)  # name -> index

    def __post_init__(self) -> None:
        self.where = {str(n): i for i, n in enumerate(self.names)}

    @classmethod
    def of(cls, data: DataSplits) -> Pool:
        parts = [(n, s) for n, s in (("train", data.train), ("val", data.val),
                                      ("test", data.test)) if s is not None and len(s)]
        return cls(np.concatenate([s.images for _, s in parts]),
                   np.concatenate([s.labels for _, s in parts]),
                   np.concatenate([s.names for _, s in parts]),
                   np.concatenate([s.digests for _, s in parts]),
                   np.concatenate([np.full(len(s), n) for n, s in parts]), data.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def ref(self, i: int) -> ImageRef:
        return ImageRef(name=str(self.names[i]), split=str(self.splits[i]),
                        label=self.classes[int(self.labels[i])])

    def image(self, name: str) -> np.ndarray:
        return self.images[self.where[name]]
