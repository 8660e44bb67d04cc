"""The csv, hf and torchvision:<Name> sources, on tiny files written in each real format."""

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import pattern_images, tiny_config
from imgcls.cli import app
from imgcls.config import DataConfig
from imgcls.configure import ConfigError, validate
from imgcls.data import DataError, check_source, get_source, load_data
from imgcls.data.hf import MISSING
from imgcls.train import train

try:
    import datasets
except ImportError:  # the optional [hf] extra
    datasets = None
needs_datasets = pytest.mark.skipif(datasets is None, reason="pip install -e '.[hf]'")

CLASSES = ["cat", "dog", "fox"]


def pictures(labels, size=12, gray=False, seed=0):
    images = pattern_images(np.asarray(labels), size, seed)
    return [Image.fromarray(i).convert("L") if gray else Image.fromarray(i) for i in images]


def cfg(source, path, **kw) -> DataConfig:
    return DataConfig(**{"source": source, "path": str(path), "val_fraction": 0.0, **kw})


def trains(tmp_path, source, path, n_train, n_test, **data):
    """Train 1 epoch on the source; check the run's summary."""
    config = tiny_config(data={"source": source, "path": str(path), "image_size": 16,
                               "val_fraction": 0.25, **data},
                         model={"name": "baseline_cnn", "args": {}},
                         train={"epochs": 1, "batch_size": 16})
    run, summary = train(config, tmp_path / "run")
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    images = summary["images"]
    assert images["test"] == n_test and images["train"] + images["val"] == n_train
    assert (run.path / "summary.json").is_file()
    return summary


# -- csv ------------------------------------------------------------------------------------
def write_table(root: Path, n=24, gray=False, split=True, sep=",", name="labels.csv",
                header=("filename", "label", "split")) -> Path:
    labels = [i % 3 for i in range(n)]
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = [sep.join(header[:3] if split else header[:2])]
    for i, (label, picture) in enumerate(zip(labels, pictures(labels, gray=gray), strict=True)):
        file = f"img/{i:03d}.{'png' if i % 2 else 'jpg'}"
        picture.save(root / file)
        part = "test" if i % 4 == 3 else ("train" if i % 8 else "Train")
        lines.append(sep.join([file, CLASSES[label]] + ([part] if split else [])))
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_loads_with_split_column(tmp_path):
    path = write_table(tmp_path)
    splits = load_data(cfg("csv", path))
    assert splits.classes == CLASSES
    assert sum(splits.counts()["train"]) == 18 and sum(splits.counts()["test"]) == 6
    assert splits.train.images.shape[1:] == (12, 12, 3) and splits.train.images.dtype == np.uint8
    assert splits.train.labels.dtype == np.int64 and not splits.skipped


def test_csv_tsv_grayscale_numeric_labels_and_mixed_sizes(tmp_path):
    (tmp_path / "a").mkdir()
    lines = ["Image\tTarget"]
    for i in range(18):
        label = [2, 10, 1][i % 3]
        picture = pictures([i % 3], gray=True, seed=i)[0]
        if i % 3 == 0:
            picture = picture.resize((20, 14))
        picture.save(tmp_path / "a" / f"{i}.png")
        where = tmp_path / "a" / f"{i}.png" if i == 0 else f"a/{i}.png"  # absolute works too
        lines.append(f"{where}\t{label}")
    (tmp_path / "t.tsv").write_text("\n".join(lines))
    splits = load_data(cfg("csv", tmp_path / "t.tsv", test_fraction=0.34))
    assert splits.classes == ["1", "2", "10"]  # integers sort numerically
    assert splits.channels == 1  # every image is grayscale: auto stores one channel
    assert splits.chosen_size == 16 and splits.image_size == 16
    assert sum(splits.counts()["train"]) + sum(splits.counts()["test"]) == 18


def test_csv_named_columns_semicolons(tmp_path):
    path = write_table(tmp_path, sep=";", header=("pic", "kind", "part"))
    splits = load_data(cfg("csv", path, image_column="pic", label_column="kind",
                           split_column="part"))
    assert sum(splits.counts()["test"]) == 6


def test_csv_missing_column_lists_columns(tmp_path):
    path = write_table(tmp_path, header=("picture", "label", "split"))
    with pytest.raises(DataError, match=r"no image path column .*its columns: picture, "
                                        r"label, split; set data.image_column"):
        load_data(cfg("csv", path))
    with pytest.raises(DataError, match=r"data.label_column = 'kind': .* no such column; "
                                        r"its columns: picture, label, split"):
        load_data(cfg("csv", path, image_column="picture", label_column="kind"))


def test_csv_bad_split_value_names_the_line(tmp_path):
    path = write_table(tmp_path)
    path.write_text(path.read_text().replace("img/005.png,fox,train", "img/005.png,fox,dev"))
    with pytest.raises(DataError, match=r"line 7: split = 'dev'; valid: train, test"):
        load_data(cfg("csv", path))


def test_csv_missing_and_broken_files_skipped_and_listed(tmp_path):
    path = write_table(tmp_path)
    (tmp_path / "img" / "004.jpg").unlink()
    (tmp_path / "img" / "006.jpg").write_bytes(b"not an image")
    splits = load_data(cfg("csv", path))
    assert len(splits.skipped) == 2
    assert any("004.jpg: file not found" in s for s in splits.skipped)
    assert any("006.jpg" in s for s in splits.skipped)
    assert sum(sum(c) for c in splits.counts().values()) == 22
    with pytest.raises(DataError, match=r"(?s)missing.*004\.jpg"):
        load_data(cfg("csv", path, on_corrupt="error"))


def test_csv_fingerprint_follows_the_images(tmp_path):
    path = write_table(tmp_path)
    source = get_source("csv")
    before = source.fingerprint(cfg("csv", path))
    assert source.fingerprint(cfg("csv", path)) == before
    pictures([0], seed=5)[0].save(tmp_path / "img" / "001.png")
    assert source.fingerprint(cfg("csv", path)) != before


def test_csv_in_data_info(tmp_path):
    path = write_table(tmp_path)
    (tmp_path / "img" / "004.jpg").unlink()
    info = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["data", "info", "--set", "data.source=csv", "--set", f"data.path={path}",
              "--set", "data.val_fraction=0"])
    assert info.exit_code == 0, info.output
    assert "3 classes, 12x12 px, RGB" in info.output and "fox" in info.output
    assert "skipped 1 unreadable" in info.output and "004.jpg: file not found" in info.output


def test_csv_trains(tmp_path):
    trains(tmp_path, "csv", write_table(tmp_path, n=48), 36, 12)


# -- hf -------------------------------------------------------------------------------------
def hf_dataset(n, gray=False, seed=0, with_classlabel=True):
    features = datasets.Features({
        "img": datasets.Image(),
        "label": (datasets.ClassLabel(names=CLASSES) if with_classlabel
                  else datasets.Value("string"))})
    labels = [i % 3 for i in range(n)]
    return datasets.Dataset.from_dict(
        {"img": pictures(labels, gray=gray, seed=seed),
         "label": labels if with_classlabel else [CLASSES[i] for i in labels]},
        features=features)


@needs_datasets
def test_hf_save_to_disk_dataset_dict(tmp_path):
    datasets.DatasetDict({"train": hf_dataset(24), "test": hf_dataset(9, seed=1)}).save_to_disk(
        tmp_path / "dd")
    splits = load_data(cfg("hf", tmp_path / "dd"))
    assert splits.classes == CLASSES
    assert splits.counts() == {"train": [8, 8, 8], "test": [3, 3, 3]}
    assert splits.train.images.shape[1:] == (12, 12, 3)
    assert load_data(cfg("hf", tmp_path / "dd")).cache_hit  # the fingerprint is stable


@needs_datasets
def test_hf_grayscale_parquet_string_labels(tmp_path):
    hf_dataset(18, gray=True, with_classlabel=False).to_parquet(tmp_path / "one.parquet")
    splits = load_data(cfg("hf", tmp_path / "one.parquet", test_fraction=0.34))
    assert splits.classes == CLASSES and splits.channels == 1
    assert sum(splits.counts()["train"]) + sum(splits.counts()["test"]) == 18


@needs_datasets
def test_hf_parquet_folder_splits_and_dataset_on_disk(tmp_path):
    (tmp_path / "pq").mkdir()
    hf_dataset(15).to_parquet(tmp_path / "pq" / "train-00000-of-00001.parquet")
    hf_dataset(6).to_parquet(tmp_path / "pq" / "test-00000-of-00001.parquet")
    splits = load_data(cfg("hf", tmp_path / "pq"))
    assert sum(splits.counts()["train"]) == 15 and sum(splits.counts()["test"]) == 6
    hf_dataset(12).save_to_disk(tmp_path / "single")  # a Dataset: train only
    splits = load_data(cfg("hf", tmp_path / "single", test_fraction=0.25))
    assert sum(splits.counts()["test"]) == 3


@needs_datasets
def test_hf_imagefolder(tmp_path):
    for i, picture in enumerate(pictures([i % 3 for i in range(18)], size=10)):
        folder = tmp_path / "imgs" / CLASSES[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        picture.save(folder / f"{i}.png")
    splits = load_data(cfg("hf", tmp_path / "imgs", test_fraction=0.34))
    assert splits.classes == CLASSES and splits.image_size == 10


@needs_datasets
def test_hf_missing_column(tmp_path):
    hf_dataset(9).save_to_disk(tmp_path / "single")
    with pytest.raises(DataError, match=r"data.image_column = 'photo': .*its columns: img, "
                                        r"label"):
        load_data(cfg("hf", tmp_path / "single", image_column="photo"))


def test_hf_without_the_datasets_library(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now fails
    with pytest.raises(DataError) as info:
        load_data(cfg("hf", "someone/tiny-images"))
    assert str(info.value) == MISSING
    assert "needs the Hugging Face datasets library: pip install -e '.[hf]'" in MISSING


@needs_datasets
def test_hf_hub_name_offline_with_an_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    with pytest.raises(DataError, match=r"(?s)'someone/tiny-images'.*cannot be loaded "
                                        r"offline.*not in the local cache.*save_to_disk"):
        load_data(cfg("hf", "someone/tiny-images"))


@needs_datasets
def test_hf_trains(tmp_path):
    datasets.DatasetDict({"train": hf_dataset(36), "test": hf_dataset(12, seed=1)}).save_to_disk(
        tmp_path / "dd")
    trains(tmp_path, "hf", tmp_path / "dd", 36, 12)


# -- torchvision ----------------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    """The big-endian idx-ubyte format of MNIST: magic (0, 0, 8 = ubyte, ndim), dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fashion_mnist(root: Path, n_train=40, n_test=20) -> Path:
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        labels = np.arange(n) % 10
        images = pattern_images(labels, 28, seed)[..., 0]  # one channel, as the real files
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def test_torchvision_fashion_mnist_from_raw_files(tmp_path):
    root = fashion_mnist(tmp_path / "tv")
    splits = load_data(cfg("torchvision:FashionMNIST", root, download=False))
    assert splits.classes[:2] == ["T-shirt/top", "Trouser"] and len(splits.classes) == 10
    assert splits.counts() == {"train": [4] * 10, "test": [2] * 10}
    assert splits.train.images.shape[1:] == (28, 28, 1)  # grayscale: one channel (auto)
    assert load_data(cfg("torchvision:FashionMNIST", root, download=False)).cache_hit
    three = load_data(cfg("torchvision:FashionMNIST", root, download=False, channels=3,
                          image_size=16))
    assert three.train.images.shape[1:] == (16, 16, 3)


def test_torchvision_missing_files_and_unknown_name(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"(?s)empty: torchvision.datasets.FashionMNIST cannot "
                                        r"be read.*data.download is false.*FashionMNIST/raw/"
                                        r"train-images-idx3-ubyte"):
        load_data(cfg("torchvision:FashionMNIST", tmp_path / "empty", download=False))
    with pytest.raises(ValueError, match=r"unknown torchvision dataset 'FashionMnist' \(did "
                                         r"you mean 'FashionMNIST'\?\); valid: any torchvision "
                                         r"classification dataset, e.g. FashionMNIST"):
        check_source("torchvision:FashionMnist")
    with pytest.raises(ConfigError, match=r"data.source = 'torchvision:Cifar10'.*did you mean "
                                          r"'CIFAR10'"):
        validate({"data": {"source": "torchvision:Cifar10"}})


def test_torchvision_trains(tmp_path):
    root = fashion_mnist(tmp_path / "tv", n_train=40, n_test=20)
    trains(tmp_path, "torchvision:FashionMNIST", root, 40, 20, download=False)


def data_info(*sets: str) -> str:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["data", "info", *(a for s in sets for a in ("--set", s))])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # the title may wrap


def test_torchvision_and_hf_in_data_info(tmp_path):
    root = fashion_mnist(tmp_path / "tv")
    out = data_info("data.source=torchvision:FashionMNIST", f"data.path={root}",
                    "data.download=false", "data.val_fraction=0")
    assert "10 classes, 28x28 px, grayscale" in out and "Ankle boot" in out
    assert "total │ 40 │ 20" in out
    if datasets is not None:
        hf_dataset(36).save_to_disk(tmp_path / "ds")
        out = data_info("data.source=hf", f"data.path={tmp_path / 'ds'}",
                        "data.val_fraction=0")
        assert "3 classes, 12x12 px, RGB" in out and "total │ 30 │ 6" in out  # test_fraction
