"""Each image's name and pixel digest: kept by the cache, the names `data.exclude` and
`data.relabel` take, and the exact duplicates across splits that every run reports."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import make_cifar10_archive, make_image_folder, sha256, tiny_config
from imgcls.cli import app
from imgcls.data import DataError, load_data
from imgcls.train import train


def split_folder(root: Path) -> Path:
    """train/ and test/ class folders of 24 px images, with two training images copied
    into test/ under other names (and one of them into train/ again)."""
    make_image_folder(root / "train", classes=2, per_class=12, size=24, mixed_sizes=False)
    make_image_folder(root / "test", classes=2, per_class=4, size=24, mixed_sizes=False,
                      seed=1)
    shutil.copy(root / "train/class_0/img_000.jpg", root / "test/class_0/copy_a.jpg")
    shutil.copy(root / "train/class_1/img_013.png", root / "test/class_1/copy_b.png")
    shutil.copy(root / "train/class_0/img_000.jpg", root / "train/class_0/again.jpg")
    return root


def data_config(path: Path, **data):
    return tiny_config(data={"path": str(path), "image_size": 24, **data}).data


def test_images_are_named_by_their_path_and_keep_names_and_digests_in_the_cache(tmp_path):
    root = make_image_folder(tmp_path / "images", classes=3, per_class=6, size=24,
                             mixed_sizes=False)
    cfg = data_config(root)
    first, again = load_data(cfg), load_data(cfg)
    assert not first.cache_hit and again.cache_hit
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.*"))
    for splits in (first, again):
        names = [n for s in (splits.train, splits.val, splits.test) for n in s.names]
        assert sorted(names) == files
        digests = np.concatenate([s.digests for s in (splits.train, splits.val, splits.test)])
        assert len(set(digests.tolist())) == len(files)  # generated images all differ
        assert splits.overlap.leaks is False and splits.overlap.warning() is None
    assert np.array_equal(first.test.digests, again.test.digests)


def test_a_cache_of_the_format_before_names_is_decoded_again(tmp_path):
    root = make_image_folder(tmp_path / "images", classes=2, per_class=4, size=24,
                             mixed_sizes=False)
    cfg = data_config(root, cache_dir=str(tmp_path / "cache"))
    load_data(cfg)
    (meta,) = (tmp_path / "cache" / "arrays").glob("*/meta.json")
    old = json.loads(meta.read_text())
    meta.write_text(json.dumps({**old, "format": 1}))
    for leftover in [*meta.parent.glob("*_names.npy"), *meta.parent.glob("*_digests.npy")]:
        leftover.unlink()
    again = load_data(cfg)
    assert not again.cache_hit and len(again.train.names) == len(again.train)
    assert load_data(cfg).cache_hit


def test_array_sources_name_images_by_split_and_index(tmp_path):
    archive = make_cifar10_archive(tmp_path / "cifar-10-python.tar.gz", per_class=10)
    splits = load_data(tiny_config(data={"source": "cifar10", "path": str(archive),
                                         "sha256": sha256(archive)}).data)
    names = [str(n) for s in (splits.train, splits.val) for n in s.names]
    assert sorted(names, key=lambda n: int(n.split("/")[1])) == [f"train/{i}" for i in
                                                                  range(len(names))]
    assert all(n.startswith("test/") for n in splits.test.names)


def test_pixel_identical_images_across_splits_are_counted_named_and_reported_by_a_run(
        tmp_path, caplog):
    root = split_folder(tmp_path / "images")
    splits = load_data(data_config(root, val_fraction=0.0))
    overlap = splits.overlap
    assert (overlap.test_in_train, overlap.val_in_train, overlap.repeated_in_train) == (2, 0, 1)
    assert overlap.test_images == 10
    assert "test/class_0/copy_a.jpg = train/class_0/" in " ".join(overlap.examples)
    assert "2 of 10 test images (20.0%) are also in the training split" in overlap.warning()

    cfg = tiny_config(data={"path": str(root), "image_size": 24, "val_fraction": 0.0},
                      train={"epochs": 1})
    with caplog.at_level(logging.WARNING, logger="imgcls"):
        run, summary = train(cfg, tmp_path / "run")
    assert "pixel-identical images across the splits" in caplog.text
    saved = json.loads((run.path / "summary.json").read_text())
    assert saved["exact_duplicates"]["test_in_train"] == 2
    assert saved["exact_duplicates"]["repeated_in_train"] == 1


def test_exclude_and_relabel_apply_by_name_before_the_splits_and_are_recorded(tmp_path):
    root = split_folder(tmp_path / "images")
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("# the copies\ntest/class_0/copy_a.jpg\n./test/class_1/copy_b.png\n\n"
                       "train/class_0/again.jpg\n")
    relabel = tmp_path / "relabel.csv"
    relabel.write_text("path,label\ntrain/class_0/img_001.png,class_1\n"
                       "test/class_1/copy_b.png,class_0\n")  # excluded too: not counted
    splits = load_data(data_config(root, val_fraction=0.0, exclude=str(exclude),
                                   relabel=str(relabel)))
    assert (len(splits.train), len(splits.test)) == (24, 8)
    assert splits.overlap.leaks is False and splits.overlap.repeated_in_train == 0
    moved = list(splits.train.names).index("train/class_0/img_001.png")
    assert splits.classes[splits.train.labels[moved]] == "class_1"
    assert (splits.edits.excluded, splits.edits.relabeled) == (3, 1)
    assert set(splits.edits.files) == {str(exclude), str(relabel)}

    cfg = tiny_config(data={"path": str(root), "image_size": 24, "val_fraction": 0.0,
                            "exclude": str(exclude)}, train={"epochs": 1})
    run, _ = train(cfg, tmp_path / "run")
    edits = json.loads((run.path / "summary.json").read_text())["data_edits"]
    assert edits["excluded"] == 3 and len(edits["files"][str(exclude)]) == 64


@pytest.mark.parametrize("key, text, message", [
    ("exclude", "train/class_0/img_000.jpg\ntrain/class_0/agian.jpg\n",
     "exclude.txt, line 2: 'train/class_0/agian.jpg' is not an image of data.path"),
    ("relabel", "train/class_0/img_000.jpg,class_9\n",
     "relabel.txt, line 1: class 'class_9' is not one of the data's classes"),
    ("relabel", "train/class_0/img_000.jpg\n", "line 1: expected `path,class`"),
])
def test_a_wrong_name_or_class_is_an_error_naming_the_file_and_line(tmp_path, key, text,
                                                                    message):
    root = split_folder(tmp_path / "images")
    listed = tmp_path / f"{key}.txt"
    listed.write_text(text)
    with pytest.raises(DataError) as err:
        load_data(data_config(root, **{key: str(listed)}))
    assert message in str(err.value)
    if "agian" in text:
        assert "did you mean 'train/class_0/again.jpg'" in str(err.value)


def test_data_info_lists_names_and_says_what_leaks(tmp_path):
    root = split_folder(tmp_path / "images")
    result = CliRunner().invoke(app, ["data", "info", "--set", "data.source=folder",
                                      "--set", f"data.path={root}", "--set",
                                      "data.image_size=24", "--names"])
    assert result.exit_code == 0, result.output
    assert "pixel-identical images across the splits" in result.output
    assert "test\tclass_0\ttest/class_0/copy_a.jpg" in result.output
