"""Batched image transforms with one parameter per image.

Every function takes an NCHW batch, either uint8 (0-255) or float (0-1), plus per-image
parameter tensors of length N, and returns a batch of the same shape, dtype and range.
Geometric transforms are one `grid_sample` (or one gather for whole-pixel shifts); color
transforms are blends in float. The ops and policies are thin samplers over these.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_GRID_PADDING = {"reflect": "reflection", "edge": "border", "wrap": "border",
                 "constant": "zeros"}
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L")


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def to_uint8(y: torch.Tensor) -> torch.Tensor:
    """A float (0-1) batch as uint8 values, rounded and clipped."""
    return y.mul(255).round_().clamp_(0, 255).to(torch.uint8)


def like(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`y` (float, 0-1) back in the dtype of `x`, rounded and clipped."""
    return to_uint8(y) if x.dtype == torch.uint8 else y.clamp(0, 1).to(x.dtype)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A tensor drawn on the CPU (where the seeded generators live) on the batch's device,
    without making the host wait: a blocking copy to a GPU first waits for every kernel
    queued before it, while a non-blocking one from ordinary memory is staged at once."""
    return t.to(device, non_blocking=True)


def per_image(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """An (N,) parameter as an (N,1,1,1) float tensor on the batch's device."""
    return to_device(values, x.device).float().view(-1, 1, 1, 1)


# -- geometry -------------------------------------------------------------------------------
def affine(x: torch.Tensor, matrix: torch.Tensor, shift: torch.Tensor | None = None,
           fill: str = "reflect", fill_value: float = 0.0,
           interpolation: str = "bilinear") -> torch.Tensor:
    """Resample every image through its own affine map. `matrix` (N,2,2) and `shift` (N,2)
    map output pixel coordinates (x, y, origin at the image center) to input coordinates,
    so the map is exact for any aspect ratio."""
    n, c, h, w = x.shape
    half = torch.tensor([w / 2, h / 2])
    theta = torch.empty(n, 2, 3)
    theta[:, :, :2] = matrix * half[None, :] / half[:, None]  # D^-1 A D in normalized units
    theta[:, :, 2] = 0.0 if shift is None else shift / half
    grid = F.affine_grid(to_device(theta, x.device), [n, c, h, w], align_corners=False)
    if fill == "wrap":
        grid = torch.remainder(grid + 1, 2) - 1
    xf = to_float(x)
    if fill == "constant":
        xf = xf - fill_value  # sampled zeros outside become fill_value after the shift back
    out = F.grid_sample(xf, grid, mode=interpolation, padding_mode=_GRID_PADDING[fill],
                        align_corners=False)
    return like(out + fill_value if fill == "constant" else out, x)


def rotation_matrix(degrees: torch.Tensor) -> torch.Tensor:
    """Input coordinates of a content rotation by `degrees` (counter-clockwise)."""
    a = torch.deg2rad(degrees.float())
    cos, sin = torch.cos(a), torch.sin(a)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def scale_matrix(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros_like(sx, dtype=torch.float32)
    return torch.stack([torch.stack([sx.float(), zero], -1),
                        torch.stack([zero, sy.float()], -1)], -2)


def shear_matrix(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    one = torch.ones_like(sx, dtype=torch.float32)
    return torch.stack([torch.stack([one, sx.float()], -1),
                        torch.stack([sy.float(), one], -1)], -2)


def _source_index(index: torch.Tensor, size: int, fill: str) -> torch.Tensor:
    """Map out-of-range pixel indices to the pixel that fills them."""
    if fill == "reflect":  # mirror without repeating the edge pixel: c b | a b c | b a
        period = 2 * (size - 1) if size > 1 else 1
        index = torch.remainder(index, period)
        return torch.where(index >= size, period - index, index)
    if fill == "wrap":
        return torch.remainder(index, size)
    return index.clamp(0, size - 1)  # edge; constant masks these afterwards


def shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, fill: str = "reflect",
          fill_value: float = 0.0) -> torch.Tensor:
    """Move image i by (dy[i], dx[i]) whole pixels: a single gather, no interpolation."""
    n, _, h, w = x.shape
    rows = torch.arange(h)[None] - dy.long()[:, None]
    cols = torch.arange(w)[None] - dx.long()[:, None]
    device = x.device
    sample = torch.arange(n, device=device)[:, None, None]
    r = to_device(_source_index(rows, h, fill), device)[:, :, None]
    k = to_device(_source_index(cols, w, fill), device)[:, None, :]
    out = x.permute(0, 2, 3, 1)[sample, r, k].permute(0, 3, 1, 2)  # stays channels_last
    if fill == "constant":
        inside = to_device(((rows >= 0) & (rows < h))[:, :, None]
                           & ((cols >= 0) & (cols < w))[:, None, :], device)[:, None]
        out = torch.where(inside, out, like(torch.tensor(fill_value), x))
    return out


def box_mask(shape: torch.Size, top: torch.Tensor, left: torch.Tensor,
             height: torch.Tensor, width: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N,1,H,W) boolean masks of one axis-aligned box per image (boxes may leave the image)."""
    h, w = shape[-2:]
    rows = torch.arange(h)[None]
    cols = torch.arange(w)[None]
    inside_r = (rows >= top[:, None]) & (rows < (top + height)[:, None])
    inside_c = (cols >= left[:, None]) & (cols < (left + width)[:, None])
    return to_device((inside_r[:, :, None] & inside_c[:, None, :])[:, None], device)


def erase(x: torch.Tensor, mask: torch.Tensor, value: float | str,
          generator: torch.Generator) -> torch.Tensor:
    """Fill the masked pixels with a gray level (0-1) or, for 'random', uniform noise."""
    if value == "random":
        noise = to_device(torch.rand(x.shape, generator=generator), x.device)
        return torch.where(mask, like(noise, x), x)
    return torch.where(mask, like(torch.full((), float(value)), x), x)


# -- color ----------------------------------------------------------------------------------
def grayscale(xf: torch.Tensor) -> torch.Tensor:
    """Luma of a float RGB batch, (N,1,H,W); a grayscale batch is its own luma."""
    if xf.shape[1] == 1:
        return xf
    r, g, b = xf.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def blend(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance rule: factor 0 gives `degenerate`, 1 the image, >1 extrapolates."""
    xf = to_float(x)
    return like(degenerate + per_image(factor, x) * (xf - degenerate), x)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(x, torch.zeros((), device=x.device), factor)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(x, grayscale(to_float(x)), factor)


def contrast(x: torch.Tensor, factor: torch.Tensor, per_channel: bool = False) -> torch.Tensor:
    """Scale the distance from the mean: the mean of each channel (Keras RandomContrast) or
    of the image's luma (PIL, torchvision, the policies)."""
    xf = to_float(x)
    mean = xf.mean((2, 3), keepdim=True) if per_channel else grayscale(xf).mean(
        (1, 2, 3), keepdim=True)
    return blend(x, mean, factor)


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with PIL's SMOOTH-filtered image (its border pixels kept unfiltered)."""
    xf = to_float(x)
    kernel = torch.ones(3, 3, device=x.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(xf.shape[1], 1, 3, 3)
    smooth = xf.clone()
    smooth[..., 1:-1, 1:-1] = F.conv2d(xf, kernel, groups=xf.shape[1])
    return blend(x, smooth, factor)


def hue(x: torch.Tensor, shift_turns: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of image i by shift_turns[i] of a full turn (via HSV); grayscale
    images have no hue and stay as they are."""
    if x.shape[1] == 1:
        return x
    xf = to_float(x)
    top, argmax = xf.max(1)
    chroma = top - xf.min(1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    r, g, b = xf.unbind(1)
    h = torch.where(argmax == 0, ((g - b) / safe) % 6,
                    torch.where(argmax == 1, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    h = (h + to_device(shift_turns, x.device).float().view(-1, 1, 1)) % 1.0
    # back to RGB: each channel from its offset on the hue circle
    k = (torch.tensor([5.0, 3.0, 1.0], device=x.device).view(1, 3, 1, 1)
         + h.unsqueeze(1) * 6) % 6
    weight = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    out = top.unsqueeze(1) - chroma.unsqueeze(1) * weight
    return like(out, x)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    return like(grayscale(to_float(x)).expand_as(x), x)


def invert(x: torch.Tensor) -> torch.Tensor:
    return 255 - x if x.dtype == torch.uint8 else 1 - x


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert every pixel at or above threshold[i] (0-1 of the range)."""
    level = per_image(threshold, x) * (255 if x.dtype == torch.uint8 else 1)
    return torch.where(x >= level, invert(x), x)


def _as_uint8(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.uint8 else to_uint8(x)


def _from_uint8(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return y if x.dtype == torch.uint8 else y.to(x.dtype).div_(255)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top bits[i] bits of every 8-bit value."""
    shift_by = to_device(8 - bits.long().clamp(0, 8), x.device).view(-1, 1, 1, 1)
    mask = (255 >> shift_by << shift_by).to(torch.uint8)
    return _from_uint8(_as_uint8(x) & mask, x)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch every channel of every image to the full range (flat channels kept)."""
    xf = to_float(x)
    low = xf.amin((2, 3), keepdim=True)
    high = xf.amax((2, 3), keepdim=True)
    span = high - low
    out = torch.where(span > 0, (xf - low) / torch.where(span > 0, span, 1), xf)
    return like(out, x)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL's histogram equalization, per channel of every image, as one batched lookup."""
    u = _as_uint8(x)
    n, c = u.shape[:2]
    flat = u.reshape(n * c, -1).long()
    hist = torch.zeros(n * c, 256, device=x.device).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float32))
    last = hist.gather(1, (hist > 0).float().cumsum(1).argmax(1, keepdim=True))
    step = torch.div(hist.sum(1, keepdim=True) - last, 255, rounding_mode="floor")
    lut = torch.div(hist.cumsum(1) + torch.div(step, 2, rounding_mode="floor"),
                    step.clamp(min=1), rounding_mode="floor")
    lut = F.pad(lut, (1, 0))[:, :-1].clamp(0, 255)
    identity = torch.arange(256.0, device=x.device).expand_as(lut)
    lut = torch.where(step > 0, lut, identity)
    out = lut.gather(1, flat).to(torch.uint8).reshape(u.shape)
    return _from_uint8(out, x)


def uniform(low: float, high: float, n: int, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def signed(values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip the sign of each value with probability 1/2."""
    return torch.where(torch.rand(len(values), generator=generator) < 0.5, -values, values)


def log_uniform(low: float, high: float, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.exp(uniform(math.log(low), math.log(high), n, generator))
