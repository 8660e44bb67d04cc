"""The single ops a config lists under `augment.ops`, each drawing its own parameters per
image. Where an op matches a Keras preprocessing layer the notes used, its main parameter
means what the Keras argument means: `rotate frac=0.2` is RandomRotation(0.2) (up to 0.2 of
a full turn either way), `zoom frac=0.1` is RandomZoom(0.1), `translate frac=0.1` is
RandomTranslation(0.1, 0.1), `contrast factor=0.2` is RandomContrast(0.2).
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
from pydantic import Field, model_validator

from imgcls.augment import functional as AF
from imgcls.augment.base import AugmentContext, AugmentOp, register

Fill = Literal["reflect", "edge", "wrap", "constant"]
Value = float | Literal["random"]


class FillOp(AugmentOp):
    """fill: what appears where the image moved away (reflect = Keras's default, mirrored;
    edge repeats the border pixel; wrap tiles; constant uses fill_value, 0-1 of the range)."""

    fill: Fill = "reflect"
    fill_value: float = Field(0.0, ge=0.0, le=1.0)


class GeometricOp(FillOp):
    """An affine resampling; interpolation bilinear (Keras's default) or nearest."""

    interpolation: Literal["bilinear", "nearest"] = "bilinear"

    def resample(self, x: torch.Tensor, matrix: torch.Tensor,
                 shift: torch.Tensor | None = None) -> torch.Tensor:
        return AF.affine(x, matrix, shift, self.fill, self.fill_value, self.interpolation)


# -- geometry -------------------------------------------------------------------------------
@register("flip", "mirror left-right, top-bottom, or either/both")
class Flip(AugmentOp):
    """mode horizontal: left-right; vertical: top-bottom; both: one of left-right,
    top-bottom or both, chosen evenly (Keras RandomFlip("horizontal_and_vertical") is
    mode both with p 0.75). alternate (horizontal only): each image gets a fixed random
    choice, inverted every other epoch, so it is seen both ways in any two epochs
    (airbench); it flips exactly half the images per epoch, hence p must stay 0.5."""

    p: float = Field(0.5, ge=0.0, le=1.0)
    mode: Literal["horizontal", "vertical", "both"] = "horizontal"
    alternate: bool = False

    @model_validator(mode="after")
    def _alternate(self) -> Flip:
        if self.alternate and (self.mode != "horizontal" or self.p != 0.5):
            raise ValueError("alternate: true flips horizontally, half the images per epoch; "
                             "leave mode horizontal and p 0.5")
        return self

    def __call__(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        if not self.alternate:
            return super().__call__(x, ctx)
        flip = AF.to_device(_base_flips(ctx.seed, ctx.dataset_size)[ctx.ids]
                            ^ bool(ctx.epoch % 2), x.device)
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        if self.mode == "horizontal":
            return x.flip(-1)
        if self.mode == "vertical":
            return x.flip(-2)
        which = AF.to_device(torch.randint(0, 3, (len(x),), generator=ctx.generator), x.device)
        out = torch.where((which != 1).view(-1, 1, 1, 1), x.flip(-1), x)  # 0: h, 1: v, 2: both
        return torch.where((which != 0).view(-1, 1, 1, 1), out.flip(-2), out)


@functools.lru_cache(maxsize=8)
def _base_flips(seed: int, dataset_size: int) -> torch.Tensor:
    """The per-image flip choice of even epochs, drawn once per (seed, dataset)."""
    generator = torch.Generator().manual_seed(seed * 7919 + 17)
    return torch.rand(dataset_size, generator=generator) < 0.5


@register("rotate", "rotate by up to frac of a full turn either way")
class Rotate(GeometricOp):
    """frac: the Keras RandomRotation factor; 0.2 = up to 72 degrees either way."""

    frac: float = Field(0.1, gt=0.0, le=0.5)

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        degrees = AF.uniform(-360 * self.frac, 360 * self.frac, len(x), ctx.generator)
        return self.resample(x, AF.rotation_matrix(degrees))


@register("zoom", "zoom in or out by up to frac of the size")
class Zoom(GeometricOp):
    """frac: the Keras RandomZoom factor; 0.1 shows between 90% and 110% of the image's
    extent (in and out). frac_width: a separate range for the width (stretches the image);
    none keeps the aspect ratio."""

    frac: float = Field(0.1, gt=0.0, lt=1.0)
    frac_width: float | None = Field(None, gt=0.0, lt=1.0)

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        n = len(x)
        sy = 1 + AF.uniform(-self.frac, self.frac, n, ctx.generator)
        sx = sy if self.frac_width is None else 1 + AF.uniform(
            -self.frac_width, self.frac_width, n, ctx.generator)
        return self.resample(x, AF.scale_matrix(sx, sy))


@register("translate", "shift by up to frac of the size (or pixels) each way")
class Translate(FillOp):
    """frac: the Keras RandomTranslation factor, for height and width: 0.1 shifts by up to
    10% of the size either way. pixels: the bound in pixels instead. Shifts are whole
    pixels (one gather, no blur), drawn uniformly and independently per axis."""

    frac: float | None = Field(None, gt=0.0, lt=1.0)
    pixels: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_bound(self) -> Translate:
        if self.frac is not None and self.pixels is not None:
            raise ValueError("give frac or pixels, not both")
        if self.frac is None and self.pixels is None:
            object.__setattr__(self, "frac", 0.1)
        return self

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        h, w = x.shape[-2:]
        by, bx = ((self.pixels, self.pixels) if self.pixels is not None
                  else (round(self.frac * h), round(self.frac * w)))
        return random_shift(x, by, bx, ctx, self.fill, self.fill_value)


@register("crop", "pad by `padding` pixels, then crop back to the size at random")
class Crop(FillOp):
    """The CIFAR random crop (torchvision RandomCrop(size, padding)): a shift of up to
    `padding` pixels each way, filled with black by default. (Keras's RandomCrop to the full
    size, as note 002 used it, leaves training images unchanged.)"""

    padding: int = Field(4, ge=1)
    fill: Fill = "constant"

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        return random_shift(x, self.padding, self.padding, ctx, self.fill, self.fill_value)


def random_shift(x: torch.Tensor, by: int, bx: int, ctx: AugmentContext, fill: str,
                 fill_value: float) -> torch.Tensor:
    """Whole-pixel shifts drawn uniformly from [-by, by] x [-bx, bx] without (0, 0): an
    image the op was applied to always moves, so `p` alone sets the share left alone."""
    if by == bx == 0:
        return x
    cells = (2 * by + 1) * (2 * bx + 1)
    k = torch.randint(0, cells - 1, (len(x),), generator=ctx.generator)
    k = k + (k >= cells // 2).long()  # skip the center cell, the zero shift
    dy, dx = k // (2 * bx + 1) - by, k % (2 * bx + 1) - bx
    return AF.shift(x, dy, dx, fill, fill_value)


@register("resized_crop", "crop a random area and aspect ratio, scaled to the full size")
class ResizedCrop(GeometricOp):
    """The Inception / ImageNet crop for large images: a box of scale (fraction of the area)
    and aspect ratio drawn per image, placed where it fits, resized to the image size.
    Boxes that would not fit are shrunk to fit instead of redrawn."""

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    @model_validator(mode="after")
    def _ranges(self) -> ResizedCrop:
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError("scale needs 0 < low <= high <= 1 (fractions of the area)")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError("ratio needs 0 < low <= high (width / height)")
        return self

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        n, g = len(x), ctx.generator
        area = AF.uniform(*self.scale, n, g)
        aspect = AF.log_uniform(*self.ratio, n, g)
        fw = torch.sqrt(area * aspect).clamp(max=1.0)  # box size as a fraction of the image
        fh = torch.sqrt(area / aspect).clamp(max=1.0)
        h, w = x.shape[-2:]
        cx = (torch.rand(n, generator=g) - 0.5) * (1 - fw) * w  # box center, in pixels
        cy = (torch.rand(n, generator=g) - 0.5) * (1 - fh) * h
        return self.resample(x, AF.scale_matrix(fw, fh), torch.stack([cx, cy], 1))


@register("shear", "slant by up to factor (tan of the angle) along x, y or both")
class Shear(GeometricOp):
    """factor: the Keras RandomShear factor, the largest shear coefficient; axis both draws
    an x and a y shear per image."""

    factor: float = Field(0.2, gt=0.0, le=2.0)
    axis: Literal["x", "y", "both"] = "x"

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        n, zero = len(x), torch.zeros(len(x))
        sx = AF.uniform(-self.factor, self.factor, n, ctx.generator) if self.axis != "y" \
            else zero
        sy = AF.uniform(-self.factor, self.factor, n, ctx.generator) if self.axis != "x" \
            else zero
        return self.resample(x, AF.shear_matrix(sx, sy))


# -- color ----------------------------------------------------------------------------------
class FactorOp(AugmentOp):
    """factor f: an enhancement factor drawn from [1 - f, 1 + f] per image."""

    factor: float = Field(0.2, gt=0.0, le=1.0)

    def factors(self, n: int, ctx: AugmentContext) -> torch.Tensor:
        return AF.uniform(1 - self.factor, 1 + self.factor, n, ctx.generator)


@register("contrast", "scale each channel's distance from its mean by 1 +- factor")
class Contrast(FactorOp):
    """Keras RandomContrast(factor): the mean is per image and channel."""

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        return AF.contrast(x, self.factors(len(x), ctx), per_channel=True)


@register("brightness", "scale pixel values by 1 +- factor")
class Brightness(FactorOp):
    """PIL / torchvision ColorJitter brightness: a blend with black."""

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        return AF.brightness(x, self.factors(len(x), ctx))


@register("saturation", "blend with the grayscale image by 1 +- factor")
class Saturation(FactorOp):
    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        return AF.saturation(x, self.factors(len(x), ctx))


@register("sharpness", "blend with a smoothed image by 1 +- factor")
class Sharpness(FactorOp):
    """Factors above 1 sharpen, below 1 blur (PIL ImageEnhance.Sharpness)."""

    factor: float = Field(0.5, gt=0.0, le=1.0)

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        return AF.sharpness(x, self.factors(len(x), ctx))


@register("hue", "rotate the hue by up to factor of a full turn either way")
class Hue(AugmentOp):
    factor: float = Field(0.1, gt=0.0, le=0.5)

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        return AF.hue(x, AF.uniform(-self.factor, self.factor, len(x), ctx.generator))


@register("grayscale", "replace the colors by the luma")
class Grayscale(AugmentOp):
    p: float = Field(0.2, ge=0.0, le=1.0)

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        return AF.to_grayscale(x)


@register("invert", "negative image")
class Invert(AugmentOp):
    p: float = Field(0.5, ge=0.0, le=1.0)

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        return AF.invert(x)


@register("solarize", "invert the pixels at or above threshold (0-1)")
class Solarize(AugmentOp):
    threshold: float = Field(0.5, ge=0.0, le=1.0)

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        return AF.solarize(x, torch.full((len(x),), self.threshold))


@register("posterize", "keep the top `bits` bits of each value")
class Posterize(AugmentOp):
    bits: int = Field(4, ge=1, le=8)

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        return AF.posterize(x, torch.full((len(x),), self.bits))


@register("equalize", "histogram-equalize each channel")
class Equalize(AugmentOp):
    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        return AF.equalize(x)


@register("autocontrast", "stretch each channel to the full range")
class Autocontrast(AugmentOp):
    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        return AF.autocontrast(x)


# -- occlusion ------------------------------------------------------------------------------
@register("cutout", "blank a square of frac of the side at a random center")
class Cutout(AugmentOp):
    """DeVries & Taylor's cutout: the square's center is anywhere in the image, so it may be
    clipped by the border. value: gray level 0-1, or random noise."""

    frac: float = Field(0.25, gt=0.0, le=1.0)
    value: Value = Field(0.5)

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        n, (h, w) = len(x), x.shape[-2:]
        side_h, side_w = round(self.frac * h), round(self.frac * w)
        cy = torch.randint(0, h, (n,), generator=ctx.generator)
        cx = torch.randint(0, w, (n,), generator=ctx.generator)
        mask = AF.box_mask(x.shape, cy - side_h // 2, cx - side_w // 2,
                           torch.full((n,), side_h), torch.full((n,), side_w), x.device)
        return AF.erase(x, mask, self.value, ctx.generator)


@register("erasing", "blank a random box of random area and aspect (random erasing)")
class Erasing(AugmentOp):
    """Zhong et al.'s random erasing: area a fraction in `scale`, aspect in `ratio`, the box
    inside the image; filled with noise (value random) or a gray level."""

    p: float = Field(0.5, ge=0.0, le=1.0)
    scale: tuple[float, float] = (0.02, 0.33)
    ratio: tuple[float, float] = (0.3, 3.3)
    value: Value = "random"

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        n, g, (h, w) = len(x), ctx.generator, x.shape[-2:]
        area = AF.uniform(*self.scale, n, g) * h * w
        aspect = AF.log_uniform(*self.ratio, n, g)
        bh = torch.sqrt(area / aspect).round().clamp(1, h).long()
        bw = torch.sqrt(area * aspect).round().clamp(1, w).long()
        top = (torch.rand(n, generator=g) * (h - bh + 1)).long()
        left = (torch.rand(n, generator=g) * (w - bw + 1)).long()
        return AF.erase(x, AF.box_mask(x.shape, top, left, bh, bw, x.device), self.value, g)

