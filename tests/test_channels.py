"""Grayscale and RGB images: stored with the channels they have, every model built for the
data's channel count, fastnet's whitening safe on rank-deficient (identical) channels, and
a size chosen for images of mixed sizes."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import LEARN_SEED, at_least, pattern_images, tiny_config
from imgcls.config import DataConfig
from imgcls.data import DataError, load_data
from imgcls.data.images import choose_size, decode, stack_images, to_channels
from imgcls.deploy.predictor import Predictor
from imgcls.models import MODELS, create_model
from imgcls.models.fastnet import fastnet94
from imgcls.models.pretrained import apply_state_dict
from imgcls.train import train


def gray_folder(root: Path, classes: int = 3, per_class: int = 24, size: int = 24,
                seed: int = 0, mode: str = "L") -> Path:
    """Class folders of learnable images saved in `mode` (L: grayscale PNGs; RGB: the same
    gray pixels in three identical channels)."""
    labels = np.repeat(np.arange(classes), per_class)
    images = to_channels(pattern_images(labels, size, seed), 1)[..., 0]
    for i, (label, image) in enumerate(zip(labels, images, strict=True)):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").convert(mode).save(folder / f"{i:03d}.png")
    return root


def test_channel_conversions():
    rgb = pattern_images(np.arange(4), 8)
    gray = to_channels(rgb, 1)
    assert gray.shape == (4, 8, 8, 1) and gray.dtype == np.uint8
    pil = np.asarray(Image.fromarray(rgb[0]).convert("L"))  # Pillow's luma, within rounding
    assert np.abs(gray[0, ..., 0].astype(int) - pil).max() <= 1
    assert to_channels(gray, 3).shape == (4, 8, 8, 3)
    assert to_channels(np.repeat(gray, 3, -1), "auto").shape[-1] == 1  # identical channels
    assert to_channels(rgb, "auto").shape[-1] == 3
    mixed = stack_images([gray[0], rgb[1]], "auto", 8)  # one colour image makes all colour
    assert mixed.shape == (2, 8, 8, 3) and (mixed[0] == gray[0]).all()


def test_size_chosen_for_mixed_sizes():
    assert choose_size([(32, 32)] * 3) is None  # one square size: kept as it is
    assert choose_size([(100, 60), (64, 80), (300, 200)]) == 64  # median short side
    assert choose_size([(2000, 1500)] * 2) == 256  # capped
    assert choose_size([None, None]) is None


def test_grayscale_folder_is_stored_as_one_channel(tmp_path):
    root = gray_folder(tmp_path / "gray")
    common = {"source": "folder", "path": str(root), "image_size": 16}
    assert load_data(DataConfig(**common)).train.images.shape[1:] == (16, 16, 1)
    as_rgb = load_data(DataConfig(**common, channels=3)).train.images
    assert as_rgb.shape[1:] == (16, 16, 3) and (as_rgb[..., 0] == as_rgb[..., 2]).all()
    rgb_files = gray_folder(tmp_path / "rgb-files", mode="RGB")  # gray content, RGB files
    assert load_data(DataConfig(**{**common, "path": str(rgb_files)})).channels == 1


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_takes_one_channel(name):
    model = create_model(name, num_classes=4, image_size=32, in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 4)


def test_timm_model_takes_one_channel():
    model = create_model("timm:resnet10t", 3, in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 3)


def test_rgb_weights_load_into_a_grayscale_model():
    rgb, gray = create_model("resnet18_cifar", 5), create_model("resnet18_cifar", 5, in_chans=1)
    report = apply_state_dict(gray, rgb.state_dict(), "rgb.pt", keep_head=True)
    stem = next(iter(gray.state_dict()))  # the first conv's weight
    assert report.adapted == [stem] and not report.new
    assert torch.allclose(gray.state_dict()[stem], rgb.state_dict()[stem].sum(1, keepdim=True))
    image = torch.rand(1, 1, 32, 32)  # a gray image: the same logits as RGB copies of it
    rgb.eval(), gray.eval()
    with torch.no_grad():
        assert torch.allclose(rgb(image.expand(-1, 3, -1, -1)), gray(image), atol=1e-4)


def whitening(channels: int, images: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Per-filter std of fastnet's whitening output (no bias), initialized on `images`,
    and the number of distinct filters."""
    model = fastnet94(in_chans=channels)
    x = (images - images.mean((0, 2, 3), keepdim=True)) / images.std((0, 2, 3), keepdim=True)
    model.init_from_data(x)
    weight = model.whiten.weight.flatten(1)
    with torch.no_grad():
        stds = torch.nn.functional.conv2d(x, model.whiten.weight).std((0, 2, 3))
    return stds, len(torch.unique(weight, dim=0))


def test_whitening_never_amplifies_a_direction_without_variance():
    labels = np.repeat(np.arange(10), 20)
    rgb = torch.from_numpy(pattern_images(labels, 32, LEARN_SEED)).permute(0, 3, 1, 2).float()
    gray = rgb.mean(1, keepdim=True)
    # three identical channels: a 12-dim patch space of rank 4; 16 of the 24 filters would
    # only scale rounding noise, which BatchNorm then blows up to unit variance
    stds, distinct = whitening(3, gray.expand(-1, 3, -1, -1).contiguous())
    assert distinct == 8 and stds.min() > 0.1  # the 8 real filters (4 and negatives), repeated
    stds, distinct = whitening(1, gray)  # one channel: full rank, 8 filters
    assert distinct == 8 and stds.min() > 0.1
    stds, distinct = whitening(3, rgb)  # colour: every direction has variance
    assert distinct == 24 and stds.min() > 0


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_fastnet_learns_grayscale_and_validation_never_sits_at_chance(tmp_path, mode):
    root = gray_folder(tmp_path / "data", per_class=40, size=16, seed=LEARN_SEED, mode=mode)
    channels = "auto" if mode == "L" else 3
    cfg = tiny_config(seed=LEARN_SEED, data={"path": str(root), "channels": channels},
                      model={"name": "fastnet94", "args": {}},
                      train={"epochs": 4, "batch_size": 12})
    run, summary = train(cfg, tmp_path / "run")
    assert run.preprocessing().channels == (1 if mode == "L" else 3)
    val = [m["val_accuracy"] for m in run.metrics()]
    for epoch, accuracy in enumerate(val[1:], start=2):
        at_least(accuracy, 0.6, f"val accuracy, epoch {epoch}", 24)
    at_least(summary["test_accuracy"], 0.7, "test accuracy", summary["images"]["test"])


def test_mixed_sizes_get_a_size_stated_in_log_and_config(tmp_path, image_folder, caplog):
    cfg = tiny_config(data={"path": str(image_folder)}, train={"epochs": 1})
    with caplog.at_level(logging.INFO, logger="imgcls"):
        run, _ = train(cfg, tmp_path / "run")
    assert run.config().data.image_size == 40  # median short side of 40x40 and 57x35 files
    assert "mixed sizes: storing them at 40 x 40 px" in caplog.text
    assert run.preprocessing().image_size == 40


def test_grayscale_run_predicts_from_files(tmp_path):
    root = gray_folder(tmp_path / "data", size=24)
    cfg = tiny_config(data={"path": str(root)}, train={"epochs": 1})
    run, _ = train(cfg, tmp_path / "run")
    predictor = Predictor.from_run(run.path)
    assert predictor.channels == 1
    files = sorted(root.rglob("*.png"))[:3]
    colour = tmp_path / "colour.png"  # an RGB file is converted to gray for this model
    Image.open(files[0]).convert("RGB").save(colour)
    result = predictor.predict([*files, colour, np.asarray(Image.open(colour))])
    assert len(result.items) == 5 and not result.skipped
    first, *_, from_file, from_array = result.items
    for other in (from_file, from_array):
        assert other.classes == first.classes
        assert np.allclose(other.probabilities, first.probabilities, atol=1e-6)


def test_16_bit_images_scale_the_same_for_gray_and_rgb(tmp_path):
    values = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(values).save(tmp_path / "deep.png")  # mode I;16
    gray = decode(tmp_path / "deep.png", None, "center_crop", "auto")
    rgb = decode(tmp_path / "deep.png", None, "center_crop", 3)
    assert gray.shape == (8, 8, 1) and gray.max() == 255 and gray.min() == 0
    assert (rgb == gray).all()  # three copies of the same 8-bit values


def test_a_run_keeps_its_channel_count_when_auto_resolves_otherwise(tmp_path):
    root = gray_folder(tmp_path / "data", size=24)
    splits = load_data(DataConfig(source="folder", path=str(root)))
    assert splits.channels == 1 and splits.with_channels(1) is splits
    rgb = splits.with_channels(3)  # e.g. a run trained before gray data became 1 channel
    assert rgb.channels == 3 and rgb.test.images.shape[-1] == 3
    assert (rgb.train.images[..., 2] == splits.train.images[..., 0]).all()


def test_one_class_or_an_unreadable_test_split_is_refused(tmp_path):
    one = tmp_path / "one" / "train" / "only"
    one.parent.parent.joinpath("train", "other").mkdir(parents=True)
    gray_folder(tmp_path / "src", classes=2, per_class=3)
    one.mkdir()
    for f in (tmp_path / "src" / "class_0").iterdir():
        (one / f.name).write_bytes(f.read_bytes())
    (one.parent / "other" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"1 class\(es\) \(only\); a classifier needs at least"):
        load_data(DataConfig(source="folder", path=str(tmp_path / "one")))
    test = tmp_path / "two"
    for cls in ("class_0", "class_1"):
        (test / "train" / cls).mkdir(parents=True)
        (test / "test" / cls).mkdir(parents=True)
        for f in (tmp_path / "src" / cls).iterdir():
            (test / "train" / cls / f.name).write_bytes(f.read_bytes())
        (test / "test" / cls / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="its test split has no readable images"):
        load_data(DataConfig(source="folder", path=str(test)))
