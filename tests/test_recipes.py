"""`imgcls train PATH` without a config: the recipe chosen from a peek at the data."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from conftest import make_image_folder
from imgcls.cli import app
from imgcls.data import SOURCES
from imgcls.data.base import DataError
from imgcls.recipes import (
    is_config_file,
    peek_data,
    recipe_for_data,
    scaled_batch,
    scaled_epochs,
)
from imgcls.tracking.run import Run

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("small") / "digits", classes=3,
                             per_class=10, size=16, mixed_sizes=False)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("photos") / "my photos", classes=3,
                             per_class=8, size=100)


def test_small_images_get_the_fast_cifar_recipe(small):
    cfg, lines = recipe_for_data(small)
    assert cfg.model.name == "fastnet94" and cfg.model.input_size is None
    assert cfg.optim.name == "muon" and cfg.train.loss_reduction == "sum"  # cifar10-fast.yaml
    assert cfg.data.source == "folder" and cfg.data.path == str(small)
    assert cfg.data.image_size is None  # one square size: kept as it is (16 px)
    assert cfg.data.channels == "auto" and cfg.data.val_fraction > 0
    assert cfg.train.epochs == 50  # 30 images: many passes
    assert cfg.train.batch_size == 16 and cfg.train.micro_batch_size is None
    assert cfg.name == "digits"
    text = "\n".join(lines)
    assert "30 images in 3 classes" in text and "16 x 16 px" in text and "colour" in text
    assert "fast CIFAR recipe" in text and "because:" in text and "epochs 50" in text


def test_photos_get_the_photo_recipe_and_overrides_apply_on_top(photos):
    cfg, lines = recipe_for_data(photos, ["train.epochs=3", "optim.lr=0.5"])
    assert cfg.model.name == "fastnet94" and cfg.model.input_size == 32
    assert cfg.model.pretrained is False and cfg.stages == []  # flowers-transfer, scratch
    assert cfg.data.image_size == 64 and cfg.data.val_fraction > 0
    assert cfg.train.epochs == 3 and cfg.optim.lr == 0.5
    assert cfg.name == "my-photos"
    text = "\n".join(lines)
    assert "photos" in text and "64 px" in text and "median short side" in text
    assert "--set on top: train.epochs=3 optim.lr=0.5" in text


def test_epochs_and_batches_scale_with_the_data():
    assert scaled_epochs(49_000) == 8 and scaled_epochs(3_100) == 20  # the measured recipes
    assert scaled_epochs(50) == 50 and scaled_epochs(2_000_000) == 4
    assert scaled_epochs(500) > scaled_epochs(5_000) > scaled_epochs(50_000)
    assert scaled_batch(49_000, 2000) == 2000 and scaled_batch(3_100, 250) == 250
    assert scaled_batch(700, 2000) == 64 and scaled_batch(20, 2000) == 16


def test_grayscale_images_are_reported(tmp_path):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "gray" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (28, 28), 40 * i).save(tmp_path / "gray" / c / f"{i}.png")
    peek = peek_data(tmp_path / "gray")
    assert peek.colour == "grayscale" and peek.counts == {"a": 3, "b": 3}
    assert peek.short_side == 28 and peek.one_square_size


def write_table(folder, name, delimiter=","):
    """A table next to `folder`, its paths relative to the table's own folder."""
    path = folder.parent / name
    rows = [(str(p.relative_to(path.parent)), p.parent.name)
            for p in sorted(folder.rglob("*.*"))]
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(["filename", "label"])
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("name,delimiter", [("labels.csv", ","), ("labels.tsv", "\t")])
def test_a_table_is_peeked_as_csv(small, name, delimiter):
    table = write_table(small, name, delimiter)
    peek = peek_data(table)
    assert peek.source == "csv" and peek.images == 30 and len(peek.counts) == 3
    assert peek.sizes and set(peek.sizes) == {(16, 16)}


def test_a_table_trains_with_the_csv_source(small):
    if "csv" not in SOURCES:
        pytest.skip("the csv data source is not registered (yet)")
    cfg, _ = recipe_for_data(write_table(small, "labels.csv"))
    assert cfg.data.source == "csv" and cfg.data.path.endswith("labels.csv")


def test_unusable_paths_are_refused_naming_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "no-such-data"])
    assert result.exit_code == 2, result.output
    assert "no-such-data: no such folder or file" in result.stderr
    assert "Traceback" not in result.output
    (tmp_path / "notes.txt").write_text("hello")
    result = runner.invoke(app, ["train", "notes.txt"])
    assert result.exit_code == 2 and "notes.txt: not a YAML config" in result.stderr
    assert is_config_file("x.yaml") and is_config_file("x.YML") and not is_config_file("x")
    with pytest.raises(DataError, match="expected one sub-folder per class"):
        recipe_for_data(tmp_path)
    assert not (tmp_path / "runs").exists()


def test_train_a_folder_end_to_end(small, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [
        "train", str(small), "--run-dir", "runs/folder", "--set", "train.epochs=1",
        "--set", "train.threads=1", "--set", "train.tensorboard=false",
        "--set", "train.tta=none", "--set", "train.eval_batch_size=64"])
    assert result.exit_code == 0, result.output
    assert "data: " in result.stderr and "recipe: the fast CIFAR recipe" in result.stderr
    assert "because: " in result.stderr and "test accuracy" in result.stdout
    saved = Run(tmp_path / "runs" / "folder").config()  # the resolved config, as always
    assert saved.data.source == "folder" and saved.data.path == str(small)
    assert saved.model.name == "fastnet94" and saved.train.epochs == 1
