"""Training datasets (folders, 16-bit TIFF, channel conversion, patch sets, the sample) and
the loader order: every item a function of (seed, epoch, index), resumable mid-epoch."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from medgan_fast.data.datasets import (
    FolderDataset,
    PatchSetDataset,
    SampleDataset,
    convert_channels,
    resize_and_crop,
    to_unit_float,
)
from medgan_fast.data.images import DataError
from medgan_fast.data.patchset import PatchSetWriter, make_meta
from medgan_fast.training.data import EpochSampler, build_dataset, build_loader
from medgan_fast.training.config import ConfigError

from .conftest import tiny_config

RNG = np.random.default_rng(0)


def _rgb(h=80, w=96):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_flat_folder_and_image_folder(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("a.png", "b.jpg", "c.tif"):
        Image.fromarray(_rgb()).save(flat / name)
    (flat / "notes.txt").write_text("not an image")
    (flat / ".hidden.png").write_bytes(b"")
    assert len(FolderDataset(flat, 64, 3)) == 3
    classes = tmp_path / "classes"   # a torchvision ImageFolder root
    for label, count in (("benign", 2), ("malignant", 3)):
        (classes / label).mkdir(parents=True)
        for k in range(count):
            Image.fromarray(_rgb()).save(classes / label / f"{k}.png")
    dataset = FolderDataset(classes, 64, 3)
    assert len(dataset) == 5
    image = dataset[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert -1 <= image.min() and image.max() <= 1


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        FolderDataset(tmp_path / "missing", 64, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        FolderDataset(tmp_path / "empty", 64, 3)


def test_16_bit_tiff_is_scaled_by_its_range(tmp_path):
    grey = np.full((64, 64), 65535, np.uint16)
    grey[:, :32] = 0
    tifffile.imwrite(tmp_path / "a.tif", grey)
    image = FolderDataset(tmp_path, 64, 1)[0]
    assert image.shape == (1, 64, 64)
    assert torch.all(image[:, :, :32] == -1) and torch.all(image[:, :, 32:] == 1)
    assert to_unit_float(np.array([[[32768]]], np.uint16)).item() == pytest.approx(32768 / 65535)


def test_grey_to_rgb_and_rgb_to_grey(tmp_path):
    grey = RNG.integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    rgb = _rgb(64, 64)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    dataset = FolderDataset(tmp_path, 64, 3)
    as_rgb = dataset[0]   # grey.png
    assert as_rgb.shape == (3, 64, 64) and torch.equal(as_rgb[0], as_rgb[2])
    torch.testing.assert_close(as_rgb[0], torch.from_numpy(grey).float() / 127.5 - 1)
    as_grey = FolderDataset(tmp_path, 64, 1)[1]   # rgb.png, as Pillow's convert("L") (which rounds)
    pillow = np.asarray(Image.fromarray(rgb).convert("L"), np.float32)
    torch.testing.assert_close(as_grey[0], torch.from_numpy(pillow) / 127.5 - 1, atol=1 / 127.5, rtol=0)


def test_resize_shorter_side_and_centre_crop():
    image = torch.zeros(1, 100, 200)
    image[:, :, 50:150] = 1   # the centre square
    out = resize_and_crop(image, 64)
    assert out.shape == (1, 64, 64)
    assert torch.allclose(out[..., 1:-1], torch.ones(1), atol=1e-5) and torch.all(out > 0.5)   # antialiased edges
    tall = resize_and_crop(torch.rand(3, 300, 128), 64)
    assert tall.shape == (3, 64, 64)
    assert torch.equal(resize_and_crop(image[:, :64, :64], 64), image[:, :64, :64])
    assert convert_channels(torch.ones(3, 2, 2), 1).allclose(torch.ones(1, 2, 2))


def test_patch_set(tmp_path):
    images = RNG.integers(0, 256, (5, 3, 48, 48), dtype=np.uint8)
    with PatchSetWriter(tmp_path / "set.h5", 48) as writer:
        writer.append(images, np.ones((5, 1, 48, 48), bool), make_meta(5, "x.png", -1, np.arange(1, 6), 0, 1, 0))
    config = tiny_config(tmp_path, data=str(tmp_path / "set.h5"))
    dataset = build_dataset(config)
    assert isinstance(dataset, PatchSetDataset) and len(dataset) == 5
    expected = resize_and_crop(torch.from_numpy(images[2]).float() / 255, 64) * 2 - 1
    torch.testing.assert_close(dataset[2], expected)
    # Lazily opened per process: workers read it too.
    loader, _, steps = build_loader(dataset, tiny_config(tmp_path, loader_workers=2, batch_size=2))
    assert steps == 3 and sum(len(batch) for batch in loader) == 5


def test_patch_set_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        PatchSetDataset(tmp_path / "none.h5", 64, 3)
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="cannot read as HDF5"):
        PatchSetDataset(tmp_path / "bad.h5", 64, 3)


def test_sample_crops():
    dataset = SampleDataset(64, 1, crops=10, seed=3)
    assert len(dataset) == 10
    item = dataset[(0, 4)]
    assert item.shape == (1, 64, 64) and -1 <= item.min() and item.max() <= 1
    assert isinstance(build_dataset(tiny_config("out")), SampleDataset)


def test_items_are_a_function_of_seed_epoch_and_index():
    dataset = SampleDataset(64, 3, crops=8, flip=True, seed=1)
    assert torch.equal(dataset[(2, 5)], SampleDataset(64, 3, crops=8, flip=True, seed=1)[(2, 5)])
    assert not torch.equal(dataset[(2, 5)], dataset[(3, 5)])
    assert not torch.equal(dataset[(2, 5)], dataset[(2, 6)])
    assert not torch.equal(dataset[(2, 5)], SampleDataset(64, 3, crops=8, flip=True, seed=2)[(2, 5)])
    torch.manual_seed(123)   # global RNGs play no part
    np.random.seed(123)
    assert torch.equal(dataset[(2, 5)], SampleDataset(64, 3, crops=8, flip=True, seed=1)[(2, 5)])


def test_sampler_order_is_seeded_by_epoch_and_shards_by_rank():
    dataset = list(range(10))
    sampler = EpochSampler(dataset, seed=0)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert sorted(index for _, index in first) == dataset and list(sampler) != first
    sampler.set_epoch(0, start=4)
    assert list(sampler) == first[4:] and len(sampler) == 6
    shards = [EpochSampler(dataset, 2, rank, seed=0) for rank in (0, 1)]
    for shard in shards:
        shard.set_epoch(0)
    indices = [index for shard in shards for _, index in shard]
    assert sorted(indices) == dataset


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_resumed_mid_epoch_gives_the_same_batches(tmp_path, workers):
    config = tiny_config(tmp_path, sample_crops=12, batch_size=3, loader_workers=workers, flip=True)
    dataset = build_dataset(config)
    loader, sampler, steps = build_loader(dataset, config)
    assert steps == 4
    sampler.set_epoch(1)
    full = list(loader)
    torch.manual_seed(999)   # a different global RNG state must not matter
    sampler.set_epoch(1, start=2 * config.batch_size)
    tail = list(loader)
    assert len(tail) == 2
    for a, b in zip(full[2:], tail):
        assert torch.equal(a, b)


def test_full_batches_drop_the_last_partial_batch_also_when_resumed(tmp_path):
    config = tiny_config(tmp_path, sample_crops=11, batch_size=3)
    dataset = build_dataset(config)
    assert build_loader(dataset, config)[2] == 4
    loader, sampler, steps = build_loader(dataset, config, full_batches=True)
    assert steps == 3
    sampler.set_epoch(1)
    full = list(loader)
    assert [len(batch) for batch in full] == [3, 3, 3]
    sampler.set_epoch(1, start=config.batch_size)
    assert all(torch.equal(a, b) for a, b in zip(full[1:], list(loader), strict=True))
    with pytest.raises(ConfigError, match="batch_size 12: more than the 11 training images"):
        build_loader(dataset, tiny_config(tmp_path, sample_crops=11, batch_size=12), full_batches=True)


def test_max_images_keeps_the_first_items_and_says_so(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(5):
        Image.fromarray(_rgb()).save(folder / f"{k}.png")
    whole = build_dataset(tiny_config(tmp_path, data=str(folder)))
    first = build_dataset(tiny_config(tmp_path, data=str(folder), max_images=3))
    assert len(whole) == 5 and len(first) == 3
    assert "the first 3 of 5 images" in repr(first) and "(5 images)" in repr(whole)
    assert torch.equal(first[(1, 2)], whole[(1, 2)])
    with pytest.raises(IndexError):
        first[(0, 3)]
    _, _, steps = build_loader(first, tiny_config(tmp_path, max_images=3, batch_size=2))
    assert steps == 2
    assert len(build_dataset(tiny_config(tmp_path, data=str(folder), max_images=9))) == 5
