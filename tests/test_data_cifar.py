import io
import pickle
import tarfile

import numpy as np
import pytest

from conftest import make_cifar10_archive, make_cifar100_archive, sha256
from imgcls.config import DataConfig
from imgcls.data import DataError, load_data, load_source


def cfg(**kw) -> DataConfig:
    return DataConfig(**{"val_fraction": 0.1, **kw})


def test_cifar10_from_local_archive(tmp_path):
    archive = make_cifar10_archive(tmp_path / "cifar-10-python.tar.gz")
    splits = load_data(cfg(source="cifar10", path=str(archive), sha256=sha256(archive)))
    assert splits.classes == [f"class{i}" for i in range(10)]
    assert len(splits.train) + len(splits.val) == 200 and len(splits.test) == 100
    assert splits.train.images.shape[1:] == (32, 32, 3)
    assert splits.train.images.dtype == np.uint8
    assert splits.counts()["val"] == [2] * 10  # stratified: 10% of each class


def test_pixels_are_decoded_in_official_chw_order(tmp_path):
    archive = make_cifar10_archive(tmp_path / "c.tar.gz")
    data, _ = load_source(cfg(source="cifar10", path=str(archive), sha256=sha256(archive)))
    with tarfile.open(archive) as tar:
        raw = pickle.loads(tar.extractfile("cifar-10-batches-py/data_batch_1").read(),
                           encoding="latin1")
    first = raw["data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(data.train.images[0], first)
    assert data.train.labels[0] == raw["labels"][0]


def test_wrong_checksum_fails_before_unpickling(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:  # would create `marker` if the archive were ever unpickled
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = pickle.dumps(Exploit())
    with tarfile.open(tmp_path / "evil.tar.gz", "w:gz") as tar:
        for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                     "data_batch_5", "test_batch", "batches.meta"):
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    # without data.sha256, the official md5 applies; with a wrong one, it applies too
    for extra in ({}, {"sha256": "0" * 64}):
        with pytest.raises(DataError, match="checksum mismatch"):
            load_data(cfg(source="cifar10", path=str(tmp_path / "evil.tar.gz"), **extra))
    assert not marker.exists()


def test_extracted_folder_refuses_code_in_pickles(tmp_path):
    archive = make_cifar10_archive(tmp_path / "c.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    folder = tmp_path / "cifar-10-batches-py"
    assert len(load_data(cfg(source="cifar10", path=str(tmp_path))).test) == 100
    (folder / "data_batch_3").write_bytes(pickle.dumps(print))  # a global that isn't data
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load_data(cfg(source="cifar10", path=str(folder)))


def test_download_from_file_url(tmp_path):
    archive = make_cifar10_archive(tmp_path / "mirror.tar.gz")
    target = tmp_path / "downloads"
    target.mkdir()
    data = load_data(cfg(source="cifar10", path=str(target), url=archive.as_uri(),
                         sha256=sha256(archive)))
    assert (target / "cifar-10-python.tar.gz").is_file()
    assert len(data.test) == 100
    assert not list(target.glob(".*tmp"))  # no partial files left behind


def test_missing_data_offline_explains(tmp_path):
    with pytest.raises(DataError, match="data.download is false"):
        load_data(cfg(source="cifar10", path=str(tmp_path / "nothing"), download=False))
    with pytest.raises(DataError, match="could not download"):
        load_data(cfg(source="cifar10", path=str(tmp_path / "x"),
                      url=(tmp_path / "absent.tar.gz").as_uri()))


@pytest.mark.parametrize("labels,count", [("fine", 100), ("coarse", 20)])
def test_cifar100_fine_and_coarse(tmp_path, labels, count):
    archive = make_cifar100_archive(tmp_path / "cifar-100-python.tar.gz")
    splits = load_data(cfg(source="cifar100", path=str(archive), sha256=sha256(archive),
                           labels=labels, val_fraction=0.0))
    assert len(splits.classes) == count
    assert splits.classes[0] == f"{labels}0"
    assert splits.train.labels.max() == count - 1


def test_cifar_resized_for_larger_inputs(tmp_path):
    archive = make_cifar10_archive(tmp_path / "c.tar.gz")
    splits = load_data(cfg(source="cifar10", path=str(archive), sha256=sha256(archive),
                           image_size=72))
    assert splits.test.images.shape[1:] == (72, 72, 3)
