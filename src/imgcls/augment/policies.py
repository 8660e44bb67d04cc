"""Augmentation policies: RandAugment, TrivialAugmentWide and AutoAugment's CIFAR-10
policy, with every image drawing its own ops and magnitudes.

All three share one op space (the 14 ops of RandAugment, plus Invert for AutoAugment) and
torchvision's magnitude tables, so `magnitude: 9` means what it means there. A step of a
policy is a per-image op index and a per-image signed magnitude; `apply_steps` runs each op
once on the images that chose it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field, model_validator

from imgcls.augment import functional as AF
from imgcls.augment.base import AugmentContext, register
from imgcls.augment.ops import Fill, FillOp

Geometry = tuple[str, float]  # (fill, fill_value)
PolicyFn = Callable[[torch.Tensor, torch.Tensor, Geometry], torch.Tensor]


def _affine(matrix: Callable[[torch.Tensor], torch.Tensor]) -> PolicyFn:
    return lambda x, m, fill: AF.affine(x, matrix(m.cpu()), None, *fill)


def _translate(axis: int) -> PolicyFn:
    def fn(x: torch.Tensor, m: torch.Tensor, fill: Geometry) -> torch.Tensor:
        zero = torch.zeros(len(m), dtype=torch.long)
        pixels = m.cpu().round().long()
        return AF.shift(x, pixels if axis else zero, zero if axis else pixels, *fill)

    return fn


def _zero(m: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(m)


OPS: dict[str, PolicyFn] = {
    "identity": lambda x, m, fill: x,
    "shear_x": _affine(lambda m: AF.shear_matrix(m, _zero(m))),
    "shear_y": _affine(lambda m: AF.shear_matrix(_zero(m), m)),
    "translate_x": _translate(0),
    "translate_y": _translate(1),
    "rotate": _affine(AF.rotation_matrix),
    "brightness": lambda x, m, fill: AF.brightness(x, 1 + m),
    "color": lambda x, m, fill: AF.saturation(x, 1 + m),
    "contrast": lambda x, m, fill: AF.contrast(x, 1 + m),
    "sharpness": lambda x, m, fill: AF.sharpness(x, 1 + m),
    "posterize": lambda x, m, fill: AF.posterize(x, m),
    "solarize": lambda x, m, fill: AF.solarize(x, m / 255),
    "autocontrast": lambda x, m, fill: AF.autocontrast(x),
    "equalize": lambda x, m, fill: AF.equalize(x),
    "invert": lambda x, m, fill: AF.invert(x),
}
RAND_OPS = list(OPS)[:-1]  # RandAugment's and TrivialAugment's 14: all but invert
SIGNED = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness",
          "color", "contrast", "sharpness"}


def magnitudes(bins: int, size: int, wide: bool) -> dict[str, torch.Tensor]:
    """Each op's magnitude per bin (torchvision's tables; `wide` = TrivialAugmentWide's)."""
    def ramp(top: float) -> torch.Tensor:
        return torch.linspace(0.0, top, bins)

    levels = torch.arange(bins) / ((bins - 1) / (6 if wide else 4))
    table = {
        "shear_x": ramp(0.99 if wide else 0.3),
        "translate_x": ramp(32.0 if wide else 150.0 / 331.0 * size),
        "rotate": ramp(135.0 if wide else 30.0),
        "brightness": ramp(0.99 if wide else 0.9),
        "posterize": 8 - levels.round(),
        "solarize": torch.linspace(255.0, 0.0, bins),
    }
    table["shear_y"], table["translate_y"] = table["shear_x"], table["translate_x"]
    for name in ("color", "contrast", "sharpness"):
        table[name] = table["brightness"]
    return {name: table.get(name, torch.zeros(bins)) for name in OPS}


def apply_steps(x: torch.Tensor, names: list[str], choice: torch.Tensor,
                magnitude: torch.Tensor, fill: Geometry) -> torch.Tensor:
    """Image i gets op names[choice[i]] at magnitude[i]; choice -1 leaves it alone."""
    out = x
    for k, name in enumerate(names):
        index = (choice == k).nonzero().squeeze(1)
        if len(index) == 0 or name == "identity":
            continue
        if out is x:
            out = x.clone()
        device_index = AF.to_device(index, x.device)
        out[device_index] = OPS[name](x[device_index], magnitude[index], fill)
    return out


def signed_magnitudes(table: dict[str, torch.Tensor], names: list[str], choice: torch.Tensor,
                      bins: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The magnitude of each image's op at its bin, with a random sign for signed ops."""
    stacked = torch.stack([table[name] for name in names])  # (ops, bins)
    value = stacked[choice.clamp(min=0), bins]
    sign_ok = torch.tensor([name in SIGNED for name in names])[choice.clamp(min=0)]
    return torch.where(sign_ok, AF.signed(value, generator), value)


class PolicyOp(FillOp):
    """Geometric steps fill with fill_value (0.5: mid-gray, near the data mean, as timm)."""

    fill: Fill = "constant"
    fill_value: float = Field(0.5, ge=0.0, le=1.0)

    @property
    def geometry(self) -> Geometry:
        return self.fill, self.fill_value


@register("randaugment", "num_ops random ops per image at one magnitude (RandAugment)")
class RandAugment(PolicyOp):
    """Cubuk et al.: each image applies num_ops ops drawn uniformly (with repeats) from 14,
    at `magnitude` out of bins - 1 (torchvision's scale: 9 of 30 is a third of the range).
    Every image draws its own ops and signs."""

    num_ops: int = Field(2, ge=1, le=10)
    magnitude: int = Field(9, ge=0)
    bins: int = Field(31, ge=2)

    @model_validator(mode="after")
    def _magnitude_in_range(self) -> RandAugment:
        if self.magnitude >= self.bins:
            raise ValueError(f"magnitude {self.magnitude} must be below bins ({self.bins}): "
                             f"0 is no change, {self.bins - 1} the largest")
        return self

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        table = magnitudes(self.bins, x.shape[-1], wide=False)
        n, g = len(x), ctx.generator
        for _ in range(self.num_ops):
            choice = torch.randint(0, len(RAND_OPS), (n,), generator=g)
            bins = torch.full((n,), self.magnitude)
            x = apply_steps(x, RAND_OPS, choice,
                            signed_magnitudes(table, RAND_OPS, choice, bins, g), self.geometry)
        return x


@register("trivialaugment", "one random op at a random magnitude per image "
                            "(TrivialAugmentWide)")
class TrivialAugment(PolicyOp):
    """Müller & Hutter's TrivialAugmentWide: one op of 14 and one magnitude bin, both
    uniform, per image, on the wide ranges (rotations to 135 degrees, 32-px shifts)."""

    bins: int = Field(31, ge=2)

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        table = magnitudes(self.bins, x.shape[-1], wide=True)
        n, g = len(x), ctx.generator
        choice = torch.randint(0, len(RAND_OPS), (n,), generator=g)
        bins = torch.randint(0, self.bins, (n,), generator=g)
        return apply_steps(x, RAND_OPS, choice,
                           signed_magnitudes(table, RAND_OPS, choice, bins, g), self.geometry)


# AutoAugment's CIFAR-10 policy (Cubuk et al. 2019, table of the paper): 25 sub-policies of
# two (op, probability, magnitude bin of 10) steps.
CIFAR10_POLICY = [
    (("invert", 0.1, 0), ("contrast", 0.2, 6)),
    (("rotate", 0.7, 2), ("translate_x", 0.3, 9)),
    (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)),
    (("shear_y", 0.5, 8), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.5, 0), ("equalize", 0.9, 0)),
    (("shear_y", 0.2, 7), ("posterize", 0.3, 7)),
    (("color", 0.4, 3), ("brightness", 0.6, 7)),
    (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
    (("equalize", 0.6, 0), ("equalize", 0.5, 0)),
    (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
    (("color", 0.7, 7), ("translate_x", 0.5, 8)),
    (("equalize", 0.3, 0), ("autocontrast", 0.4, 0)),
    (("translate_y", 0.4, 3), ("sharpness", 0.2, 6)),
    (("brightness", 0.9, 6), ("color", 0.2, 8)),
    (("solarize", 0.5, 2), ("invert", 0.0, 0)),
    (("equalize", 0.2, 0), ("autocontrast", 0.6, 0)),
    (("equalize", 0.2, 0), ("equalize", 0.6, 0)),
    (("color", 0.9, 9), ("equalize", 0.6, 0)),
    (("autocontrast", 0.8, 0), ("solarize", 0.2, 8)),
    (("brightness", 0.1, 3), ("color", 0.7, 0)),
    (("solarize", 0.4, 5), ("autocontrast", 0.9, 0)),
    (("translate_y", 0.9, 9), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.9, 0), ("solarize", 0.2, 3)),
    (("equalize", 0.8, 0), ("invert", 0.1, 0)),
    (("translate_y", 0.7, 9), ("autocontrast", 0.9, 0)),
]
POLICIES = {"cifar10": CIFAR10_POLICY}


@register("autoaugment", "a learned sub-policy of two ops per image (AutoAugment)")
class AutoAugment(PolicyOp):
    """Each image draws one of the policy's sub-policies and applies its two steps, each
    with the step's own probability and magnitude (10 bins, torchvision's ranges)."""

    policy: Literal["cifar10"] = "cifar10"

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        policy = POLICIES[self.policy]
        table = magnitudes(10, x.shape[-1], wide=False)
        names = list(OPS)
        n, g = len(x), ctx.generator
        chosen = torch.randint(0, len(policy), (n,), generator=g)
        for step in range(2):
            op = torch.tensor([names.index(sub[step][0]) for sub in policy])[chosen]
            prob = torch.tensor([sub[step][1] for sub in policy])[chosen]
            bins = torch.tensor([sub[step][2] for sub in policy])[chosen]
            apply = torch.rand(n, generator=g) < prob
            choice = torch.where(apply, op, torch.full_like(op, -1))
            x = apply_steps(x, names, choice,
                            signed_magnitudes(table, names, choice, bins, g), self.geometry)
        return x
