"""findings.json, typed: what `imgcls audit` found, each finding with the images it is
about, its evidence and a score, as the HTML page, the benchmarks and a user's scripts read
it back."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageRef(Record):
    """One image as the run's splits hold it."""

    name: str  # what data.exclude / data.relabel take
    split: str  # train, val or test
    label: str


class DuplicatePair(Record):
    """Two images that are the same picture: pixel-identical (`exact`), or near (resized,
    recompressed, cropped, mirrored): the cosine similarity of their features and how well
    their pixels line up (`aligned`, the best normalized cross-correlation)."""

    a: ImageRef
    b: ImageRef
    similarity: float
    exact: bool
    aligned: float | None = None

    @property
    def across(self) -> bool:
        return self.a.split != self.b.split


class Threshold(Record):
    """How the near-duplicate thresholds were set: what copies of sample images, edited the
    ways near duplicates arise, reach to their originals in the features (`value`) and in
    their alignment (`aligned`)."""

    value: float
    aligned: float
    sample: int
    twins_below: float  # share of the edited copies under the threshold (missed)
    strangers_above: float  # share of images whose nearest other is over it in features
    twin_quantiles: dict[str, float]  # 1%, 5%, 50% of the copies' similarity
    aligned_quantiles: dict[str, float]  # and of their alignment
    stranger_quantiles: dict[str, float]  # 50%, 99%, 99.9% of the nearest others'


class Leakage(Record):
    """Held-out images with a duplicate (exact or near) in the training split."""

    test_images: int
    test_leaking: int
    val_images: int
    val_leaking: int

    @property
    def test_share(self) -> float:
        return self.test_leaking / max(self.test_images, 1)


class LabelSuspect(Record):
    """A training image whose out-of-sample predicted probability for its own class is low:
    `given` is its label, `suggested` the class predicted instead."""

    image: ImageRef
    given_probability: float
    suggested: str
    suggested_probability: float


class Outlier(Record):
    """An image that is odd by `kind` (`constant`, `dark`, `bright`, `blurry`, `tiny`,
    `aspect`, `channels`, `isolated`); `value` the measure, `evidence` it in words."""

    image: ImageRef
    kind: str
    value: float
    evidence: str


class Findings(Record):
    """Everything one audit found, and how."""

    data: str
    classes: list[str]
    counts: dict[str, list[int]]  # images per class, per split
    features: str  # what the images were compared and classified by
    seconds: dict[str, float]  # per step
    threshold: Threshold | None
    duplicates: list[DuplicatePair]
    leakage: Leakage
    label_method: str
    label_accuracy: float | None  # the out-of-sample predictions' accuracy on given labels
    label_suspects: list[LabelSuspect]
    outliers: list[Outlier]
