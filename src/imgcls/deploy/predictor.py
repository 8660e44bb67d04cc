"""Using a trained run: `imgcls.load(RUN_DIR).predict(images)`.

Images go through exactly the preprocessing of the run's training data: decoded with Pillow,
fitted to `data.image_size` by the run's `data.resize` rule, resized to the network's input
size, normalized with the run's mean and std."""

from __future__ import annotations

import csv
import glob
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from imgcls.data.images import as_hwc, decode_many, fit_image
from imgcls.data.loader import BatchLoader
from imgcls.tracking.run import Preprocessing
from imgcls.train.evaluate import tta_logits

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Prediction:
    source: str  # file path, or "#i" for in-memory images
    classes: list[str]  # top-k, most likely first
    probabilities: list[float]

    def as_dict(self) -> dict[str, Any]:
        return {"image": self.source,
                "top": [{"class": c, "probability": p}
                        for c, p in zip(self.classes, self.probabilities, strict=True)]}


@dataclass
class Predictions:
    items: list[Prediction] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "path: reason" of unreadable files

    def to_json(self) -> str:
        """One record per image: {"image", "top": [{"class", "probability"}, ...]}."""
        return json.dumps([p.as_dict() for p in self.items], indent=1)

    def to_csv(self) -> str:
        """One row per image and rank (image, rank, class, probability): long format, so any
        top-k fits the same four columns."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["image", "rank", "class", "probability"])
        for p in self.items:
            for rank, (c, prob) in enumerate(zip(p.classes, p.probabilities, strict=True), 1):
                writer.writerow([p.source, rank, c, f"{prob:.6f}"])
        return out.getvalue()


def expand_images(specs: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """Files, folders (searched recursively for images) and glob patterns -> files, plus a
    'spec: reason' entry for each spec that matches nothing."""
    files, missing = [], []
    for spec in map(str, specs):
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not found:
            missing.append(f"{spec}: no such file, or no images in it")
        files += found
    return files, missing


class Predictor:
    """A run's model with its preprocessing, ready to classify images."""

    def __init__(self, model: torch.nn.Module, preprocess: Preprocessing, resize: str,
                 channels_last: bool = True, device: str | torch.device = "cpu"):
        self.model = model.eval()
        self.classes: list[str] = preprocess.classes
        self.image_size: int = preprocess.image_size
        self.input_size: int = preprocess.input_size
        self.resize = resize
        self.device = torch.device(device)
        self.mean = torch.tensor(preprocess.mean)
        self.std = torch.tensor(preprocess.std)
        self.interpolation = preprocess.interpolation
        self.channels = preprocess.channels  # 1: the model sees grayscale images
        self.channels_last = channels_last

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str = "best",
                 device: str | torch.device = "cpu") -> Predictor:
        from imgcls.train import load_model

        model, pre, cfg = load_model(run_dir, checkpoint, device)
        return cls(model, pre, cfg.data.resize, cfg.train.channels_last, device)

    # -- preprocessing --------------------------------------------------------------------------
    def to_array(self, images: Iterable[Image.Image | np.ndarray]) -> np.ndarray:
        """PIL images or uint8 HWC arrays (RGB or gray) of any size -> uint8 NHWC at the
        data size, with the model's channel count."""
        out = []
        for image in images:
            if isinstance(image, np.ndarray):
                image = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1
                                        else image)
            out.append(as_hwc(fit_image(image, self.image_size, self.resize, self.channels)))
        return np.stack(out) if out else np.zeros(
            (0, self.image_size, self.image_size, self.channels), np.uint8)

    def read(self, paths: Sequence[Path]) -> tuple[np.ndarray, list[Path], list[str]]:
        """Decode files; unreadable ones are left out and reported as 'path: reason'."""
        arrays, problems = decode_many(list(paths), self.image_size, self.resize, self.channels)
        kept = [p for p, a in zip(paths, arrays, strict=True) if a is not None]
        images = [a for a in arrays if a is not None]
        stacked = np.stack(images) if images else self.to_array([])
        return stacked, kept, problems

    def batches(self, images: np.ndarray, batch_size: int) -> BatchLoader:
        from imgcls.data.base import ImageSet

        data = ImageSet(images, np.zeros(len(images), dtype=np.int64))
        return BatchLoader(data, batch_size, self.mean, self.std, self.device,
                           channels_last=self.channels_last, in_memory=True,
                           size=self.input_size, interpolation=self.interpolation)

    # -- prediction -----------------------------------------------------------------------------
    @torch.no_grad()
    def probabilities(self, images: np.ndarray, tta: str = "none",
                      batch_size: int = 256) -> torch.Tensor:
        """Class probabilities (N x classes) of uint8 NHWC images at the data size."""
        if len(images) == 0:
            return torch.zeros(0, len(self.classes))
        out = [tta_logits(self.model, x, tta).float().softmax(1).cpu()
               for x, _ in self.batches(images, batch_size).epoch(0)]
        return torch.cat(out)

    def predict(self, images: Sequence[str | Path | Image.Image | np.ndarray], top_k: int = 5,
                tta: str = "none", batch_size: int = 256) -> Predictions:
        """Top-k classes of each image: file paths, folders, globs, PIL images or arrays.
        Unreadable files are skipped and listed in `.skipped`."""
        paths = [i for i in images if isinstance(i, str | Path)]
        in_memory = [i for i in images if not isinstance(i, str | Path)]
        files, skipped = expand_images(paths)
        arrays, kept, problems = self.read(files)
        sources = [str(p) for p in kept] + [f"#{i}" for i in range(len(in_memory))]
        if in_memory:
            arrays = np.concatenate([arrays, self.to_array(in_memory)])
        probs = self.probabilities(arrays, tta, batch_size)
        k = min(top_k, len(self.classes))
        top = probs.topk(k, dim=1) if len(probs) else None
        items = [Prediction(source, [self.classes[j] for j in top.indices[i].tolist()],
                            top.values[i].tolist())
                 for i, source in enumerate(sources)] if top is not None else []
        return Predictions(items, skipped + problems)

    def explain(self, images: np.ndarray, batch_size: int = 32
                ) -> tuple[np.ndarray, np.ndarray]:
        """Grad-CAM overlays (uint8 NHWC at the data size) of uint8 NHWC images at the data
        size, and the class each explains (the predicted one)."""
        from imgcls.models.cam import grad_cam, overlay

        overlays, explained = [], []
        start = 0
        for x, _ in self.batches(images, batch_size).epoch(0):
            cams, classes = grad_cam(self.model, x)
            for k, cam in enumerate(cams.cpu().numpy()):
                overlays.append(overlay(images[start + k], cam))
            explained += classes.cpu().tolist()
            start += len(x)
        return np.stack(overlays), np.array(explained)

    def explain_files(self, images: Sequence[str | Path], out: str | Path,
                      batch_size: int = 32) -> tuple[list[Path], list[str]]:
        """Write `out`/<file stem>-<i>-<class>.png (`i`: its place among the readable
        images, so equal stems from two folders do not collide), the Grad-CAM overlay of
        each image for its predicted class; returns the files written and the unreadable
        inputs."""
        files, skipped = expand_images(images)
        arrays, kept, problems = self.read(files)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        if len(arrays):
            overlays, classes = self.explain(arrays, batch_size)
            for i, (path, image) in enumerate(zip(kept, overlays, strict=True)):
                label = re.sub(r"[^\w.-]+", "_", self.classes[classes[i]])
                target = out / f"{path.stem}-{i}-{label}.png"
                Image.fromarray(image).save(target)
                written.append(target)
        return written, skipped + problems


def load(run_dir: str | Path, checkpoint: str = "best",
         device: str | torch.device = "cpu") -> Predictor:
    """The trained model of a run, ready to predict: `imgcls.load('runs/x').predict([...])`."""
    return Predictor.from_run(run_dir, checkpoint, device)
