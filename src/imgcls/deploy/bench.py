"""Inference speed of a run's model: PyTorch eager against its ONNX (onnxruntime) and
TorchScript exports, on the same uint8 batches, on this machine."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgcls.data.images import resize_array
from imgcls.deploy.export import Deployable, export_model, run_exported
from imgcls.deploy.predictor import Predictor, expand_images


def images_per_second(run: Callable[[np.ndarray], Any], images: np.ndarray, batch_size: int,
                      repeats: int = 5) -> float:
    """Median over `repeats` passes over `images` (after one warm-up pass)."""
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    rates = []
    for r in range(repeats + 1):
        start = time.perf_counter()
        for batch in batches:
            run(batch)
        if r:  # the first pass warms up caches and allocators
            rates.append(len(images) / (time.perf_counter() - start))
    return statistics.median(rates)


def inference_speed(predictor: Predictor, images: list[str], batch_size: int,
                    repeats: int = 5) -> list[dict[str, Any]]:
    if images:
        files, _ = expand_images(images)
        pixels, _, _ = predictor.read(files)
    else:
        rng = np.random.default_rng(0)
        size = predictor.image_size
        pixels = rng.integers(0, 256, (max(4 * batch_size, 512), size, size, predictor.channels),
                              dtype=np.uint8)
    pixels = resize_array(pixels, predictor.input_size, predictor.resize)
    deployable = Deployable(predictor.model, predictor.mean.tolist(), predictor.std.tolist())

    @torch.no_grad()
    def eager(batch: np.ndarray) -> Any:
        return deployable(torch.from_numpy(batch))

    rows = [("pytorch", eager)]
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
            path = Path(tmp) / f"model{suffix}"
            export_model(deployable, predictor.input_size, fmt, path)
            rows.append((fmt, run_exported(path, fmt)))
        return [{"engine": name, "images": len(pixels), "repeats": repeats,
                 "images_per_second": images_per_second(fn, pixels, batch_size, repeats)}
                for name, fn in rows]
