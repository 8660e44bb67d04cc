"""Exporting a run's model for use outside imgcls (ONNX, TorchScript), verified on real
images before it is kept.

The exported model takes what an image library hands out: uint8 pixels, NHWC
(batch, height, width, channels): RGB, or one gray channel for a model trained on
grayscale images, at the network's input size, any batch size. Normalization is
inside the model. It returns `logits` and `probabilities` (softmax), one row per image.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imgcls.data.images import resize_array
from imgcls.deploy import ExportFormat
from imgcls.tracking.io import atomic_write_json

FORMATS: dict[ExportFormat, str] = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
RTOL, ATOL = 1e-3, 1e-4  # logits: |exported - pytorch| <= ATOL + RTOL * |pytorch|


class ExportError(RuntimeError):
    pass


class Deployable(nn.Module):
    """uint8 NHWC RGB -> (logits, probabilities): the network with its normalization."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.model = model.eval()
        std_t = torch.tensor(std).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", -torch.tensor(mean).view(1, -1, 1, 1) / std_t)
        self.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.permute(0, 3, 1, 2).float() * self.scale + self.shift
        logits = self.model(x)
        return logits, logits.softmax(1)


@dataclass
class Verification:
    images: int
    max_abs_logit_diff: float
    outside_tolerance: int  # logits with |exported - pytorch| > atol + rtol * |pytorch|
    top1_agreement: float
    disagreements: int  # images whose top-1 class differs (near-ties, when within tolerance)
    rtol: float = RTOL
    atol: float = ATOL

    @property
    def passed(self) -> bool:
        return self.outside_tolerance == 0


def run_exported(path: Path, fmt: ExportFormat) -> Callable[[np.ndarray], np.ndarray]:
    """A function uint8 NHWC -> logits, running the exported file the way users will."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda batch: session.run(["logits"], {"images": batch})[0]
    with warnings.catch_warnings():  # torch marks TorchScript deprecated; it still works
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    return lambda batch: module(torch.from_numpy(batch))[0].detach().numpy()


def verify(reference: nn.Module, exported: Callable[[np.ndarray], np.ndarray],
           images: np.ndarray, batch_size: int = 250) -> Verification:
    """Compare the exported model's logits with PyTorch's on `images` (uint8 NHWC)."""
    worst, outside, disagree = 0.0, 0, 0
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        with torch.no_grad():
            ref = reference(torch.from_numpy(batch))[0].numpy()
        got = exported(batch)
        diff = np.abs(got - ref)
        worst = max(worst, float(diff.max()))
        outside += int((diff > ATOL + RTOL * np.abs(ref)).sum())
        disagree += int((got.argmax(1) != ref.argmax(1)).sum())
    n = len(images)
    return Verification(n, worst, outside, 1.0 - disagree / max(n, 1), disagree)


def export_model(deployable: Deployable, input_size: int, fmt: ExportFormat, out: Path,
                 channels: int = 3) -> None:
    """Write the exported file atomically (a temporary name, then rename)."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: valid: {', '.join(FORMATS)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    example = torch.zeros(4, input_size, input_size, channels, dtype=torch.uint8)
    try:
        if fmt == "onnx":
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(deployable, (example,), str(tmp), input_names=["images"],
                              output_names=["logits", "probabilities"],
                              dynamic_shapes={"images": {0: batch}}, dynamo=True,
                              external_data=False, verbose=False)
        else:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                traced = torch.jit.trace(deployable, example, check_trace=False)
            traced.save(str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def export_run(run_dir: str | Path, fmt: ExportFormat, out: str | Path | None = None,
               checkpoint: str = "best", verify_images: int | None = 256,
               images: np.ndarray | None = None) -> tuple[Path, dict[str, Any]]:
    """Export a run's model, verify it against PyTorch on real images (the run's test split
    unless `images` are given; `verify_images` None = all of them) and write the file and
    its JSON description. Raises ExportError, leaving no file, when verification fails."""
    from imgcls.train import load_model

    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: valid: {', '.join(FORMATS)}")
    model, pre, cfg = load_model(run_dir, checkpoint)
    input_size = pre.input_size
    deployable = Deployable(model.to(memory_format=torch.contiguous_format), pre.mean,
                            pre.std)
    out = Path(out) if out else Path(run_dir) / "export" / f"model{FORMATS[fmt]}"
    if images is None:
        from imgcls.data import load_data

        images = load_data(cfg.data).with_channels(pre.channels).test.images
    images = np.array(images[:verify_images] if verify_images else images)  # a writable copy
    images = resize_array(images, input_size, cfg.data.resize)
    start = time.perf_counter()
    export_model(deployable, input_size, fmt, out, pre.channels)
    seconds = time.perf_counter() - start
    check = verify(deployable, run_exported(out, fmt), images)
    if not check.passed:
        out.unlink(missing_ok=True)
        raise ExportError(
            f"{fmt} export of {run_dir} does not match PyTorch on {check.images} test images: "
            f"{check.outside_tolerance} logits differ by more than {ATOL} + {RTOL} x |logit| "
            f"(max {check.max_abs_logit_diff:.3g}; {check.disagreements} top-1 changes); "
            "the file was not kept")
    info = {
        "format": fmt, "file": out.name, "run": str(run_dir), "checkpoint": checkpoint,
        "classes": pre.classes,
        "input": {"name": "images", "dtype": "uint8", "layout": "NHWC",
                  "color": "RGB" if pre.channels == 3 else "L (grayscale)",
                  "shape": ["batch", input_size, input_size, pre.channels]},
        "outputs": {"logits": ["batch", len(pre.classes)],
                    "probabilities": ["batch", len(pre.classes)]},
        "preprocessing": {"resize": cfg.data.resize, "size": input_size,
                          "normalization": "inside the model", "mean": pre.mean,
                          "std": pre.std},
        "verification": {**asdict(check), "passed": check.passed},
        "export_seconds": seconds, "torch": torch.__version__,
    }
    atomic_write_json(out.with_name(out.name + ".json"), info)
    return out, info
