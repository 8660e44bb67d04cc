import os
import shutil
import tarfile

import numpy as np
import pytest

from conftest import make_image_folder, sha256
from imgcls.config import DataConfig
from imgcls.data import DataError, load_data


def cfg(path, **kw) -> DataConfig:
    return DataConfig(**{"source": "folder", "path": str(path), "image_size": 24,
                         "test_fraction": 0.25, "val_fraction": 0.25, **kw})


def test_folder_split_is_stratified_and_resized(image_folder):
    splits = load_data(cfg(image_folder))
    assert splits.classes == ["class_0", "class_1", "class_2"]
    counts = splits.counts()
    assert counts["test"] == [3, 3, 3] and counts["val"] == [2, 2, 2]
    assert counts["train"] == [7, 7, 7]
    assert splits.train.images.shape[1:] == (24, 24, 3)


def test_split_depends_on_split_seed_only(image_folder):
    a = load_data(cfg(image_folder))
    b = load_data(cfg(image_folder))
    c = load_data(cfg(image_folder, split_seed=1))
    np.testing.assert_array_equal(a.test.images, b.test.images)
    assert not np.array_equal(a.test.images, c.test.images)


@pytest.mark.parametrize("mode", ["center_crop", "squash", "pad"])
def test_resize_modes(image_folder, mode):
    splits = load_data(cfg(image_folder, resize=mode, image_size=16))
    assert splits.train.images.shape[1:] == (16, 16, 3)


def test_corrupt_and_non_image_files_skipped_and_reported(image_folder):
    (image_folder / "class_1" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (image_folder / "class_2" / "notes.txt").write_text("hello")
    splits = load_data(cfg(image_folder))
    assert len(splits.skipped) == 2
    assert any("broken.jpg" in s for s in splits.skipped)
    assert any("notes.txt" in s for s in splits.skipped)
    total = sum(sum(c) for c in splits.counts().values())
    assert total == 36


def test_corrupt_files_fatal_when_asked(image_folder):
    (image_folder / "class_1" / "broken.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"(?s)unreadable image files.*broken\.jpg"):
        load_data(cfg(image_folder, on_corrupt="error"))


def test_empty_class_folder_is_an_error(image_folder):
    (image_folder / "class_9").mkdir()
    with pytest.raises(DataError, match=r"class_9: class folder is empty"):
        load_data(cfg(image_folder))


def test_single_class_is_an_error(tmp_path):
    make_image_folder(tmp_path / "one", classes=1)
    with pytest.raises(DataError, match="one sub-folder per class"):
        load_data(cfg(tmp_path / "one"))


def test_train_test_layout_and_missing_class_in_test(tmp_path):
    make_image_folder(tmp_path / "ds" / "train", classes=3)
    make_image_folder(tmp_path / "ds" / "test", classes=2, per_class=4)
    splits = load_data(cfg(tmp_path / "ds", val_fraction=0.0))
    assert splits.counts()["train"] == [12, 12, 12]
    assert splits.counts()["test"] == [4, 4, 0]  # class_2 has no test images: allowed
    shutil.copytree(tmp_path / "ds" / "train" / "class_0", tmp_path / "ds" / "test" / "extra")
    with pytest.raises(DataError, match=r"\['extra'\] are not in the training classes"):
        load_data(cfg(tmp_path / "ds"))


def test_val_folder_counts_as_test_split(tmp_path):
    make_image_folder(tmp_path / "ds" / "train", classes=2)
    make_image_folder(tmp_path / "ds" / "val", classes=2, per_class=3)
    assert load_data(cfg(tmp_path / "ds")).counts()["test"] == [3, 3]


def test_archive_is_extracted_once_and_checksummed(tmp_path, image_folder):
    archive = tmp_path / "flowers.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(image_folder, arcname="flowers")
    splits = load_data(cfg(archive, sha256=sha256(archive)))
    assert splits.classes == ["class_0", "class_1", "class_2"]
    with pytest.raises(DataError, match="checksum mismatch"):
        load_data(cfg(archive, sha256="1" * 64))


def test_decoded_arrays_are_cached_and_invalidated(image_folder):
    first = load_data(cfg(image_folder))
    second = load_data(cfg(image_folder))
    assert not first.cache_hit and second.cache_hit
    np.testing.assert_array_equal(first.train.images, second.train.images)
    assert isinstance(second.train.images, np.ndarray)
    other_size = load_data(cfg(image_folder, image_size=20))
    assert not other_size.cache_hit  # the resize settings are part of the key
    victim = next((image_folder / "class_0").iterdir())
    os.utime(victim, ns=(1, 1))  # a changed file changes the key
    assert not load_data(cfg(image_folder)).cache_hit


def test_bad_path_is_named(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        load_data(cfg(tmp_path / "nowhere"))


def test_a_cache_saved_twice_at_once_keeps_the_first_copy(tmp_path, monkeypatch):
    """Two runs decoding the same data race to rename their copies into place; the loser
    must keep the winner's folder and clean up, not fail (seen in concurrent sweeps)."""
    import os

    import numpy as np

    from imgcls.data import cache
    from imgcls.data.base import ImageSet, SourceData

    def data(value: int) -> SourceData:
        images = np.full((4, 8, 8, 3), value, np.uint8)
        return SourceData(ImageSet(images, np.arange(4) % 2), None, ["a", "b"])

    folder = tmp_path / "arrays" / "folder-x"
    real_replace = os.replace

    def other_run_renames_first(src, dst):
        monkeypatch.setattr(os, "replace", real_replace)
        cache.save_cached(folder, data(1))  # the competitor lands between check and rename
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", other_run_renames_first)
    cache.save_cached(folder, data(2))
    assert cache.load_cached(folder).train.images.max() == 1
    assert sorted(p.name for p in folder.parent.iterdir()) == ["folder-x"]  # no temp left


def test_an_archive_extracted_twice_at_once_keeps_the_first_copy(tmp_path, monkeypatch):
    import importlib
    import os
    import tarfile

    from imgcls.config import DataConfig

    folder_source = importlib.import_module("imgcls.data.folder")  # the module, not the source

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("x")
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src", arcname="src")
    cfg = DataConfig(source="folder", path=str(archive), cache_dir=str(tmp_path / "cache"))
    real_replace = os.replace

    def other_run_renames_first(src, dst):
        monkeypatch.setattr(os, "replace", real_replace)
        folder_source._extract(archive, cfg)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", other_run_renames_first)
    target = folder_source._extract(archive, cfg)
    assert (target / "src" / "a.txt").read_text() == "x"
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp left
