import numpy as np
import torch

from imgcls.augment import create_augment
from imgcls.config import AugmentConfig
from imgcls.data import ImageSet
from imgcls.data.loader import BatchLoader


def dataset(n: int = 64, size: int = 8) -> ImageSet:
    rng = np.random.default_rng(0)
    return ImageSet(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                    np.arange(n) % 4)


def loader(data: ImageSet, seed: int = 0, **augment) -> BatchLoader:
    return BatchLoader(data, 16, torch.zeros(3), torch.ones(3) / 255, torch.device("cpu"),
                       shuffle=True, drop_last=True, seed=seed,
                       augment=create_augment(AugmentConfig(**augment)))


def batches(ld: BatchLoader, epoch: int) -> list[torch.Tensor]:
    return [x.clone() for x, _ in ld.epoch(epoch)]


def test_same_seed_same_batches_other_seed_other_batches():
    data = dataset()
    a = batches(loader(data, 0, flip="random", translate=2), 0)
    b = batches(loader(data, 0, flip="random", translate=2), 0)
    c = batches(loader(data, 1, flip="random", translate=2), 0)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    later = batches(loader(data, 0, flip="random", translate=2), 1)
    assert not torch.equal(a[0], later[0])  # a new order and new augmentation per epoch


def test_normalization_and_layout():
    data = dataset()
    ld = BatchLoader(data, 64, torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.5, 1.0]),
                     torch.device("cpu"))
    x, y = next(ld.epoch(0))
    expected = (torch.from_numpy(data.images).float() / 255 - 0.5) / torch.tensor([0.25, 0.5, 1])
    torch.testing.assert_close(x.permute(0, 2, 3, 1), expected)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, torch.from_numpy(data.labels))


def test_every_image_gets_its_own_shift():
    # one image repeated: without per-sample randomness every copy would look the same
    image = np.random.default_rng(3).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    data = ImageSet(np.repeat(image, 64, 0), np.zeros(64, dtype=np.int64))
    x = batches(loader(data, flip="none", translate=2), 0)[0]
    distinct = {tuple(v.flatten().tolist()) for v in x}
    assert len(distinct) > 8
    for v in x:  # every output is the image shifted with reflected borders
        shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                  if torch.equal(v[:, 2:6, 2:6], torch.from_numpy(
                      image[0, 2 + dy:6 + dy, 2 + dx:6 + dx]).permute(2, 0, 1).float())]
        assert shifts


def test_alternate_flip_flips_each_image_on_alternate_epochs():
    data = dataset(n=32)
    ld = BatchLoader(data, 32, torch.zeros(3), torch.ones(3) / 255, torch.device("cpu"),
                     augment=create_augment(AugmentConfig(flip="alternate")))
    e0, e1, e2 = (batches(ld, e)[0] for e in range(3))
    original = torch.from_numpy(data.images).permute(0, 3, 1, 2).float()
    flipped0 = torch.tensor([torch.equal(a, o.flip(-1)) for a, o in
                             zip(e0, original, strict=True)])
    assert 0 < flipped0.sum() < 32  # a random half, roughly
    for i in range(32):
        assert torch.equal(e1[i], e0[i].flip(-1))  # the opposite choice next epoch
        assert torch.equal(e2[i], e0[i])


def test_datasets_too_large_for_memory_stream_from_the_cache_file(tmp_path):
    data = dataset(n=96)
    np.save(tmp_path / "images.npy", data.images)
    mapped = ImageSet(np.load(tmp_path / "images.npy", mmap_mode="r"), data.labels)
    ops = create_augment(AugmentConfig(ops=["flip", "randaugment"]))
    common = dict(mean=torch.zeros(3), std=torch.ones(3) / 255, device=torch.device("cpu"),
                  shuffle=True, augment=ops, seed=3)
    streamed = BatchLoader(mapped, 16, in_memory=False, **common)
    assert isinstance(streamed.images, np.memmap)  # never loaded whole
    in_memory = BatchLoader(data, 16, in_memory=True, **common)
    for (a, ya), (b, yb) in zip(streamed.epoch(2), in_memory.epoch(2), strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)
