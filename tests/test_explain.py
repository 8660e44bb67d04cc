"""Grad-CAM: on images whose class is the colour of a patch at a random place, a trained
model's map lies on the patch; it works for the zoo's and timm's networks; `imgcls predict
--explain` writes overlays and the run report shows them."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import LEARN_SEED, SMALL_CNN, at_least, tiny_config
from imgcls.cli import app
from imgcls.deploy.predictor import load
from imgcls.models import create_model
from imgcls.models.cam import grad_cam, last_spatial_module, overlay
from imgcls.train import train

SIZE, PATCH = 48, 16
COLOURS = [(230, 40, 40), (40, 60, 230), (40, 200, 60), (230, 210, 40)]


def patch_images(root: Path, per_class: int, seed: int) -> dict[str, tuple[int, int]]:
    """Gray noise with one coloured square (the class's colour: four classes, so the
    evidence is a colour's presence, not another's absence) at a random place; returns
    each file's square corner."""
    rng = np.random.default_rng(seed)
    corners = {}
    for c, colour in enumerate(COLOURS):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = np.repeat(rng.integers(60, 140, (SIZE, SIZE, 1)), 3, -1).astype(np.uint8)
            y, x = rng.integers(0, SIZE - PATCH + 1, 2)
            image[y:y + PATCH, x:x + PATCH] = colour
            name = f"class_{c}/{i:03d}.png"
            Image.fromarray(image).save(root / name)
            corners[name] = (int(y), int(x))
    return corners


@pytest.fixture(scope="module")
def patched(tmp_path_factory):
    root = tmp_path_factory.mktemp("cam") / "images"
    corners = patch_images(root, 40, LEARN_SEED)
    cfg = tiny_config(seed=LEARN_SEED, data={"path": str(root), "image_size": SIZE},
                      model=SMALL_CNN, train={"epochs": 4})
    run, summary = train(cfg, tmp_path_factory.mktemp("runs") / "run")
    at_least(summary["test_accuracy"], 0.9, "test accuracy", summary["images"]["test"])
    return run.path, root, corners


def test_the_map_lies_on_the_evidence(patched):
    run_dir, root, corners = patched
    predictor = load(run_dir)
    names = sorted(corners)[::4]
    images, _, _ = predictor.read([root / n for n in names])
    x = next(iter(predictor.batches(images, len(images)).epoch(0)))[0]
    cams, classes = grad_cam(predictor.model, x)
    on_patch = 0
    for cam, name in zip(cams.numpy(), names, strict=True):
        y0, x0 = corners[name]
        inside = np.zeros_like(cam, dtype=bool)
        inside[y0:y0 + PATCH, x0:x0 + PATCH] = True
        on_patch += cam[inside].mean() > 1.5 * cam[~inside].mean()
    at_least(on_patch / len(names), 0.8, "share of maps on the patch", len(names))
    assert cams.min() >= 0 and cams.max() <= 1 and cams.shape == (len(names), SIZE, SIZE)


@pytest.mark.parametrize("name, size", [("timm:tf_efficientnet_lite0", 64),
                                        ("fastnet94", 32), ("resnet18_cifar", 32)])
def test_grad_cam_finds_a_map_in_zoo_and_timm_networks(name, size):
    torch.manual_seed(0)
    model = create_model(name, 3, size)
    x = torch.randn(2, 3, size, size)
    layer = last_spatial_module(model.eval(), x)
    cams, classes = grad_cam(model, x)
    assert cams.shape == (2, size, size) and classes.shape == (2,)
    assert torch.isfinite(cams).all() and float(cams.max()) == pytest.approx(1.0)
    assert layer is not model


def test_overlay_keeps_the_image_size_and_colours_the_map():
    image = np.full((20, 30, 1), 100, np.uint8)
    cam = np.zeros((5, 5), np.float32)
    cam[2, 2] = 1.0
    out = overlay(image, cam)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert out[10, 15, 0] > out[0, 0, 0]  # red (jet's top) where the map peaks


def test_predict_explain_writes_overlays_and_the_report_shows_them(patched, tmp_path):
    from imgcls.report import create_report

    run_dir, root, corners = patched
    files = [str(root / n) for n in sorted(corners)[:3]]
    result = CliRunner().invoke(app, ["predict", str(run_dir), *files, "--explain",
                                      str(tmp_path / "why")])
    assert result.exit_code == 0, result.output
    written = sorted((tmp_path / "why").glob("*.png"))
    assert len(written) == 3 and Image.open(written[0]).size == (SIZE, SIZE)
    page = Path(create_report(run_dir)).read_text()
    assert "why the model decided" in page
