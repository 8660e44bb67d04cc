"""Pixel-identical images across a run's splits, found from the digests the cache keeps:
a test image that is also a training image makes the test accuracy a lie, so every run
counts them (a sort of a few bytes per image) and says so."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from imgcls.data.base import ImageSet

EXAMPLES = 5  # pairs named in the warning


@dataclass(frozen=True)
class SplitOverlap:
    """Counts of images whose pixels equal another image's, and a few named pairs
    ("test/dog/1.jpg = train/dog/7.jpg")."""

    test_in_train: int
    val_in_train: int
    test_in_val: int
    repeated_in_train: int  # training images that repeat an earlier training image
    test_images: int
    val_images: int
    examples: list[str] = field(default_factory=list)

    @property
    def leaks(self) -> bool:
        return bool(self.test_in_train or self.val_in_train or self.test_in_val)

    def warning(self) -> str | None:
        """What a run says about its splits: None when no held-out image is a training or
        validation image."""
        if not self.leaks:
            return None
        parts = [f"{n} of {total} {what} images ({n / max(total, 1):.1%}) are also in {where}"
                 for n, total, what, where in (
                     (self.test_in_train, self.test_images, "test", "the training split"),
                     (self.val_in_train, self.val_images, "validation", "the training split"),
                     (self.test_in_val, self.test_images, "test", "the validation split"))
                 if n]
        return ("pixel-identical images across the splits: " + "; ".join(parts)
                + f" (e.g. {', '.join(self.examples)}); their accuracy overstates the "
                "model's on new images: `imgcls audit` lists them, `data.exclude` leaves "
                "them out")

    def summary(self) -> dict[str, object]:
        return asdict(self)


def _found(held: ImageSet, reference: ImageSet) -> np.ndarray:
    """Indices of `held`'s images with a pixel twin in `reference`."""
    return np.flatnonzero(np.isin(held.digests, reference.digests))


def _twin(digest: bytes, reference: ImageSet, order: np.ndarray) -> str:
    at = order[np.searchsorted(reference.digests, digest, sorter=order)]
    return str(reference.names[at])


def split_overlap(train: ImageSet, val: ImageSet | None, test: ImageSet) -> SplitOverlap:
    """The pixel twins between `test`, `val` and `train` (sets the cache identified)."""
    empty = ImageSet(train.images[:0], train.labels[:0], train.names[:0], train.digests[:0])
    val = val if val is not None else empty
    pairs = ((test, train), (val, train), (test, val))
    found = [_found(held, reference) for held, reference in pairs]
    examples = []
    for (held, reference), index in zip(pairs, found, strict=True):
        order = np.argsort(reference.digests, kind="stable")
        for i in index[:EXAMPLES - len(examples)]:
            examples.append(f"{held.names[i]} = {_twin(held.digests[i], reference, order)}")
    repeated = len(train) - len(np.unique(train.digests))
    return SplitOverlap(len(found[0]), len(found[1]), len(found[2]), repeated, len(test),
                        len(val), examples)
