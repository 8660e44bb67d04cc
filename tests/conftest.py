"""Fixtures that build small datasets in the official formats, and the real CIFAR-10 subset."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgcls.config import Config
from imgcls.configure import validate
from imgcls.train.callbacks import Callback


def _shared_datasets() -> Path:
    """The offline archives: $IMGCLS_DATASETS, ../shared/datasets next to the checkout, or
    the development machines' /work/shared/datasets (CI may clone elsewhere)."""
    candidates = [os.environ.get("IMGCLS_DATASETS"),
                  Path(__file__).resolve().parents[2] / "shared" / "datasets",
                  "/work/shared/datasets"]
    found = [Path(c) for c in candidates if c and (Path(c) / "cifar10-jpeg.tar.gz").is_file()]
    return found[0] if found else Path(candidates[1])


CIFAR10_JPEG = _shared_datasets() / "cifar10-jpeg.tar.gz"
FLOWERS5 = _shared_datasets() / "flowers5-128.tar.gz"


# -- learning tests: a seed to vary, and asserts that record their margin ---------------------
LEARN_SEED = int(os.environ.get("IMGCLS_TEST_SEED", "0"))
"""Learning tests (train, then assert on a result) fold this into their run seed and the
seed of their generated images: `IMGCLS_TEST_SEED=3 pytest ...` reruns them on other data
and other initial weights, to measure how far each bound sits from what it bounds."""


@pytest.fixture(scope="session")
def learn_seed() -> int:
    return LEARN_SEED


def _record_margin(what: str, value: float, bound: float, margin: float,
                   count: int | None) -> None:
    """With $IMGCLS_MARGINS naming a file, append one JSON line per checked bound."""
    path = os.environ.get("IMGCLS_MARGINS")
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]
    record = {"test": test, "what": what, "value": float(value), "bound": float(bound),
              "margin": float(margin), "seed": LEARN_SEED}
    if count is not None:  # value is a fraction of `count` items: the margin in items
        record["count"] = count
        record["margin_items"] = round(float(margin) * count, 3)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def at_least(value: float, bound: float, what: str, count: int | None = None) -> None:
    """assert value >= bound, recording the margin; `count`: value is a fraction of that
    many test images (the margin is then also given in images)."""
    _record_margin(what, value, bound, value - bound, count)
    assert value >= bound, f"{what}: {value} < {bound} (IMGCLS_TEST_SEED={LEARN_SEED})"


def at_most(value: float, bound: float, what: str, count: int | None = None) -> None:
    """assert value <= bound, recording the margin."""
    _record_margin(what, value, bound, bound - value, count)
    assert value <= bound, f"{what}: {value} > {bound} (IMGCLS_TEST_SEED={LEARN_SEED})"


SESSION_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory, monkeypatch):
    """Every test shares one session cache (never the user's ~/.cache/imgcls) and starts
    and ends with the session's thread count and determinism setting, which a run's
    `train.threads` changes. Set before the test as well: a module-scoped fixture that
    trained with `threads: 1` ran before this fixture, and a run without `train.threads`
    keeps whatever count it finds (everything after it would run on one core)."""
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.set_num_threads(SESSION_THREADS)
    torch.use_deterministic_algorithms(False)
    yield
    torch.set_num_threads(SESSION_THREADS)
    torch.use_deterministic_algorithms(False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pattern_images(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Learnable images: each class has its own colour and stripe direction, plus noise."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    images = rng.integers(0, 60, (n, size, size, 3)).astype(np.int32)
    grid = np.arange(size)
    for i, label in enumerate(labels):
        colour = np.array([(label * 83) % 256, (label * 151 + 60) % 256, (label * 37 + 120) % 256])
        stripes = ((grid[:, None] if label % 2 else grid[None, :]) // 3 % 2).astype(np.int32)
        images[i] += stripes[..., None] * colour[None, None, :] // 2 + colour // 3
    return np.clip(images, 0, 255).astype(np.uint8)


def cifar_batch(labels: np.ndarray, key: str = "labels", seed: int = 0, **extra) -> bytes:
    """A batch pickled like the official files: a dict with 'data' (N x 3072, CHW order)."""
    images = pattern_images(labels, 32, seed)
    data = images.transpose(0, 3, 1, 2).reshape(len(labels), -1)
    return pickle.dumps({"batch_label": "batch", "data": data, key: labels.tolist(),
                         "filenames": [f"{i}.png" for i in range(len(labels))], **extra},
                        protocol=2)


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def make_cifar10_archive(path: Path, per_class: int = 20) -> Path:
    rng = np.random.default_rng(1)
    with tarfile.open(path, "w:gz") as tar:
        for i in range(1, 6):
            _add(tar, f"cifar-10-batches-py/data_batch_{i}",
                 cifar_batch(rng.permutation(np.repeat(np.arange(10), per_class // 5)), seed=i))
        _add(tar, "cifar-10-batches-py/test_batch",
             cifar_batch(np.repeat(np.arange(10), per_class // 2), seed=9))
        _add(tar, "cifar-10-batches-py/batches.meta", pickle.dumps(
            {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, protocol=2))
    return path


def make_cifar100_archive(path: Path) -> Path:
    fine = np.arange(100).repeat(2)
    coarse = fine // 5
    with tarfile.open(path, "w:gz") as tar:
        for name, seed in (("train", 1), ("test", 2)):
            _add(tar, f"cifar-100-python/{name}", cifar_batch(
                fine, key="fine_labels", seed=seed, coarse_labels=coarse.tolist()))
        _add(tar, "cifar-100-python/meta", pickle.dumps(
            {"fine_label_names": [f"fine{i}" for i in range(100)],
             "coarse_label_names": [f"coarse{i}" for i in range(20)]}, protocol=2))
    return path


def make_image_folder(root: Path, classes: int = 3, per_class: int = 12, size: int = 40,
                      mixed_sizes: bool = True, seed: int = 0) -> Path:
    """A folder per class of JPEG/PNG files of mixed sizes."""
    labels = np.repeat(np.arange(classes), per_class)
    images = pattern_images(labels, size, seed)
    for i, (label, image) in enumerate(zip(labels, images, strict=True)):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(image)
        if mixed_sizes and i % 3 == 1:
            picture = picture.resize((size + 17, size - 5))
        picture.save(folder / f"img_{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


TIMING_KEYS = {"seconds", "images_per_second", "val_seconds"}  # differ between equal runs


def without_timing(metrics: list[dict]) -> list[dict]:
    """metrics.jsonl rows without the wall-clock figures, to compare runs that must agree."""
    return [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in metrics]


# a small CNN with BatchNorm and global pooling: the tests that use a trained model
SMALL_CNN = {"name": "flowers_cnn", "args": {"widths": [16, 16, 16], "batchnorm": True,
                                              "global_pool": True, "hidden": 0}}


def tiny_config(**sections) -> Config:
    """A fast config for tests; sections are merged over the defaults below."""
    raw = {
        "name": "test", "seed": 0,
        "data": {"source": "folder", "val_fraction": 0.2, "test_fraction": 0.25},
        "model": {"name": "flowers_cnn", "args": {"widths": [16, 16, 16], "hidden": 64}},
        "augment": {"ops": ["flip", {"name": "translate", "pixels": 2}]},
        "optim": {"name": "adamw", "lr": 0.01, "weight_decay": 0.0},
        "schedule": {"name": "cosine"},
        # float32 everywhere: train.amp auto would pick bf16 on CPUs with bf16 units, and
        # the learning bounds are measured in float32 (tests/test_speed.py covers auto)
        "train": {"epochs": 3, "batch_size": 16, "eval_batch_size": 64, "tensorboard": False,
                  "deterministic": True, "threads": 1, "amp": "none"},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return validate(raw)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The learning tests' images: 4 classes x 40 generated 24 px images, seeded by
    LEARN_SEED (a module with other needs defines its own `folder`)."""
    return make_image_folder(tmp_path_factory.mktemp("data") / "images", classes=4,
                             per_class=40, size=24, seed=LEARN_SEED)


def learning_config(folder: Path, **sections) -> Config:
    """tiny_config on `folder`'s 24 px images, seeded by LEARN_SEED."""
    return tiny_config(data={"path": str(folder), "image_size": 24}, seed=LEARN_SEED,
                       **sections)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "images")


@pytest.fixture(scope="session")
def cifar10_subset(tmp_path_factory) -> Path:
    """2,000 training images (200 per class) and the full 10,000-image test set of the real
    CIFAR-10 JPEG copy, extracted into a folder with train/ and test/."""
    if not CIFAR10_JPEG.is_file():
        pytest.skip(f"{CIFAR10_JPEG} not found (see ../shared/datasets/README.md)")
    root = tmp_path_factory.mktemp("cifar10-subset")
    taken: dict[str, int] = {}
    with tarfile.open(CIFAR10_JPEG) as tar:
        for member in tar:
            parts = Path(member.name).parts  # cifar10/<split>/<class>/<file>
            if not member.isfile() or len(parts) != 4:
                continue
            _, split, cls, name = parts
            if split == "train":
                if taken.get(cls, 0) >= 200:
                    continue
                taken[cls] = taken.get(cls, 0) + 1
            target = root / split / cls / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    return root


def hub_cache(root, repo: str, state: dict[str, torch.Tensor] | None, config: dict) -> None:
    """A Hugging Face hub cache holding one model repository, laid out as the hub client
    writes it: refs/main names the snapshot that holds the files."""
    from safetensors.torch import save_file

    folder = root / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    (snapshot / "config.json").write_text(json.dumps(config))
    if state is not None:
        save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # read once at import: set them too, or an earlier import reaches for the network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


class StopAt(Callback):
    """Ctrl-C at the end of epoch `epoch`: a run interrupted where a test wants it."""

    key = "stop_at"

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer, metrics) -> None:
        if metrics["epoch"] == self.epoch:
            raise KeyboardInterrupt
