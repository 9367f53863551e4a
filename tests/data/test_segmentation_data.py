"""Segmentation data (medgan_fast.data.segmentation): pairing by stem and by split file,
the validation split, SegmentationDataset's items (shapes, dtypes, ranges; binary, class
and instance masks; grey and RGB) and its refusals, the classical augmentation (a pure
function of the key, image and mask moved together), PatchPairDataset, and 3 real EMPS
pairs."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from medgan_fast.data.patchset import PatchSetWriter, make_meta
from medgan_fast.data.segmentation import (
    PatchPairDataset,
    SegmentationDataset,
    augment_pair,
    segmentation_pairs,
    validation_split,
)
from medgan_fast.errors import DataError

EMPS = Path("/work/shared/data/emps")


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def disk(height: int, width: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    rows, columns = np.mgrid[0:height, 0:width]
    return (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 <= radius ** 2


def folders(tmp_path: Path, stems: list[str], mask_stems: list[str] | None = None, size: tuple[int, int] = (24, 32),
            seed: int = 0) -> tuple[Path, Path]:
    """images/<stem>.png (8-bit grey noise) and masks/<stem>.png (0/255 disks)."""
    rng = np.random.default_rng(seed)
    for stem in stems:
        save_png(tmp_path / "images" / f"{stem}.png", rng.integers(0, 256, size, dtype=np.uint8))
    for stem in stems if mask_stems is None else mask_stems:
        mask = disk(*size, (size[0] / 2, size[1] / 2), min(size) / 3)
        save_png(tmp_path / "masks" / f"{stem}.png", mask.astype(np.uint8) * 255)
    return tmp_path / "images", tmp_path / "masks"


# ---------------------------------------------------------------------------------------
# Pairs and splits

def test_pairs_by_stem(tmp_path: Path) -> None:
    images, masks = folders(tmp_path, ["c", "a", "b"])
    pairs = segmentation_pairs(images, masks)
    assert [(i.name, m.name) for i, m in pairs] == [("a.png", "a.png"), ("b.png", "b.png"), ("c.png", "c.png")]
    assert all(i.parent == images and m.parent == masks for i, m in pairs)


def test_pairs_without_split_need_every_mask(tmp_path: Path) -> None:
    images, masks = folders(tmp_path, ["a", "b"], mask_stems=["a"])
    with pytest.raises(DataError, match="no mask with stem 'b'"):
        segmentation_pairs(images, masks)


def test_pairs_by_split_keep_its_order(tmp_path: Path) -> None:
    # "d" has no mask but is outside the split: fine.
    images, masks = folders(tmp_path, ["a", "b", "c", "d"], mask_stems=["a", "b", "c"])
    split = tmp_path / "split.csv"
    split.write_text("id\nc\n\n  b.png , 0.5\na\n")
    pairs = segmentation_pairs(images, masks, split)
    assert [(i.stem, m.stem) for i, m in pairs] == [("c", "c"), ("b", "b"), ("a", "a")]


def test_split_first_line_is_an_id_when_it_names_an_image(tmp_path: Path) -> None:
    images, masks = folders(tmp_path, ["id", "x"])
    split = tmp_path / "split.txt"
    split.write_text("id\nx\n")
    assert [i.stem for i, _ in segmentation_pairs(images, masks, split)] == ["id", "x"]


def test_split_missing_ids_are_counted(tmp_path: Path) -> None:
    images, masks = folders(tmp_path, ["a", "b", "c"], mask_stems=["a", "c"])
    split = tmp_path / "split.csv"
    split.write_text("a\nb\nzz\nc\n")
    with pytest.raises(DataError) as error:
        segmentation_pairs(images, masks, split)
    message = str(error.value)
    assert message.startswith(f"--split {split}:")
    assert "2 of 4 image ids" in message and "'b'" in message and f"no mask in {masks}" in message


def test_split_refusals(tmp_path: Path) -> None:
    images, masks = folders(tmp_path, ["a", "b"])
    with pytest.raises(DataError, match="no such file"):
        segmentation_pairs(images, masks, tmp_path / "absent.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("filename\n\n  \n")
    with pytest.raises(DataError, match=r"^--split .*empty\.csv: no image ids in it$"):
        segmentation_pairs(images, masks, empty)
    twice = tmp_path / "twice.csv"
    twice.write_text("a\nb\na.png\n")
    with pytest.raises(DataError, match=r"'a' is listed twice \(lines 1 and 3\)"):
        segmentation_pairs(images, masks, twice)


# ---------------------------------------------------------------------------------------
# Validation split

def test_validation_split_sizes_order_and_determinism() -> None:
    pairs = [(f"i{n}", f"m{n}") for n in range(20)]
    training, validation = validation_split(pairs, 0.25, seed=3)
    assert len(validation) == 5 and len(training) == 15
    assert set(training).isdisjoint(validation) and set(training) | set(validation) == set(pairs)
    assert training == sorted(training, key=pairs.index) and validation == sorted(validation, key=pairs.index)
    assert validation_split(pairs, 0.25, seed=3) == (training, validation)
    assert validation_split(pairs, 0.25, seed=4) != (training, validation)
    assert validation_split(pairs, 0.0) == (pairs, [])
    assert len(validation_split(pairs[:2], 0.01)[1]) == 1       # at least one when fraction > 0
    assert validation_split(pairs[:1], 0.3) == (pairs[:1], [])  # one pair: none to spare


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan"), "0.1", True])
def test_validation_split_bad_fraction(fraction) -> None:
    with pytest.raises(ValueError, match="--val-fraction"):
        validation_split([("a", "a"), ("b", "b")], fraction)


def test_validation_split_needs_training_images() -> None:
    with pytest.raises(DataError, match="leaves no images for training"):
        validation_split([("a", "a")], 0.9)
    with pytest.raises(DataError, match="leaves no images for training"):
        validation_split([], 0.1)


# ---------------------------------------------------------------------------------------
# SegmentationDataset

def test_binary_grey_items(tmp_path: Path) -> None:
    images, masks = folders(tmp_path, ["a", "b", "c"], size=(40, 56))
    pairs = segmentation_pairs(images, masks)
    dataset = SegmentationDataset(pairs, image_size=16)
    assert len(dataset) == 3 and dataset.files == pairs
    assert (dataset.image_size, dataset.channels, dataset.num_classes) == (16, 1, 1)
    assert repr(dataset) == "segmentation set of 3 images (16x16, binary)"
    item = dataset[1]
    assert item["image"].shape == (1, 16, 16) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (1, 16, 16) and item["mask"].dtype == torch.float32
    assert -1 <= item["image"].min() < item["image"].max() <= 1
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert torch.equal(dataset[(0, 1)]["image"], item["image"]) and torch.equal(dataset[(7, 1)]["mask"], item["mask"])
    with pytest.raises(IndexError):
        dataset[3]


def test_items_do_not_share_the_cache(tmp_path: Path) -> None:
    dataset = SegmentationDataset(segmentation_pairs(*folders(tmp_path, ["a"])), image_size=8)
    item = dataset[0]
    item["image"].fill_(5)
    item["mask"].fill_(5)
    assert dataset[0]["image"].max() <= 1 and dataset[0]["mask"].max() <= 1


def test_full_size_image_scaling_is_exact(tmp_path: Path) -> None:
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    image = save_png(tmp_path / "image.png", pixels)
    mask = save_png(tmp_path / "mask.png", np.eye(8, dtype=np.uint8))
    item = SegmentationDataset([(image, mask)], image_size=8)[0]
    torch.testing.assert_close(item["image"][0], torch.from_numpy(pixels / 255 * 2 - 1).float())
    assert torch.equal(item["mask"][0], torch.eye(8))


def test_rgb_and_class_maps(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    classes = np.zeros((30, 20), np.uint8)
    classes[5:15, 2:12], classes[18:28, 8:18] = 1, 2
    rgb = save_png(tmp_path / "rgb.png", rng.integers(0, 256, (30, 20, 3), dtype=np.uint8))
    grey = save_png(tmp_path / "grey.png", rng.integers(0, 256, (30, 20), dtype=np.uint8))
    mask = save_png(tmp_path / "classes.png", classes)
    dataset = SegmentationDataset([(rgb, mask), (grey, mask)], image_size=12, channels=3, num_classes=3)
    assert repr(dataset) == "segmentation set of 2 images (12x12, 3 classes)"
    for index in range(2):
        item = dataset[index]
        assert item["image"].shape == (3, 12, 12) and item["image"].dtype == torch.float32
        assert item["mask"].shape == (12, 12) and item["mask"].dtype == torch.int64
        assert set(item["mask"].unique().tolist()) == {0, 1, 2}
    grey_item = dataset[1]["image"]
    assert torch.equal(grey_item[0], grey_item[1]) and torch.equal(grey_item[0], grey_item[2])
    as_grey = SegmentationDataset([(rgb, mask)], image_size=12, channels=1)[0]["image"]
    torch.testing.assert_close(as_grey, dataset[0]["image"].mean(0, keepdim=True), atol=1e-5, rtol=0)


def test_instance_map_is_binarised(tmp_path: Path) -> None:
    ids = np.zeros((32, 32), np.uint16)
    for n in range(1, 6):
        ids[4 * n:4 * n + 3, 2:30] = n + 1000 * (n == 5)   # ids 1..4 and 1005
    mask = tmp_path / "ids.tif"
    tifffile.imwrite(mask, ids)
    image = save_png(tmp_path / "image.png", np.zeros((32, 32), np.uint8))
    item = SegmentationDataset([(image, mask)], image_size=32)[0]
    assert torch.equal(item["mask"][0], torch.from_numpy(ids > 0).float())


def test_grey_image_as_mask_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    grey[0, 0] = 255
    image = save_png(tmp_path / "image.png", grey)
    mask = save_png(tmp_path / "mask.png", grey)
    with pytest.raises(DataError, match=r"mask\.png: an 8-bit mask with \d+ grey levels looks like an image"):
        SegmentationDataset([(image, mask)], image_size=16)
    item = SegmentationDataset([(image, mask)], image_size=16, threshold=128)[0]
    assert torch.equal(item["mask"][0], torch.from_numpy(grey >= 128).float())
    labels = save_png(tmp_path / "labels.png", (grey % 7).astype(np.uint8))   # small ids: instance labels
    assert SegmentationDataset([(image, labels)], image_size=16)[0]["mask"].sum() > 0


def test_class_id_beyond_num_classes_is_refused(tmp_path: Path) -> None:
    classes = np.zeros((10, 10), np.uint8)
    classes[2:5, 2:5] = 3
    image = save_png(tmp_path / "image.png", np.zeros((10, 10), np.uint8))
    mask = save_png(tmp_path / "mask.png", classes)
    with pytest.raises(DataError, match=r"mask\.png: mask value 3 is not a class id for num_classes 3"):
        SegmentationDataset([(image, mask)], image_size=10, num_classes=3)
    binary = save_png(tmp_path / "binary.png", classes * 85)   # 0/255
    with pytest.raises(DataError, match="wants num_classes 1"):
        SegmentationDataset([(image, binary)], image_size=10, num_classes=2)


def test_image_and_mask_size_mismatch_is_refused(tmp_path: Path) -> None:
    image = save_png(tmp_path / "image.png", np.zeros((20, 30), np.uint8))
    mask = save_png(tmp_path / "mask.png", np.zeros((20, 31), np.uint8))
    with pytest.raises(DataError) as error:
        SegmentationDataset([(image, mask)], image_size=8)
    message = str(error.value)
    assert str(mask) in message and str(image) in message and "31x20" in message and "30x20" in message


def test_argument_refusals(tmp_path: Path) -> None:
    pairs = segmentation_pairs(*folders(tmp_path, ["a"]))
    with pytest.raises(ValueError, match="augment: expected one of none, classical, got 'strong'"):
        SegmentationDataset(pairs, image_size=8, augment="strong")
    with pytest.raises(ValueError, match="channels"):
        SegmentationDataset(pairs, image_size=8, channels=2)
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationDataset(pairs, image_size=8, num_classes=0)
    with pytest.raises(DataError, match="no .image, mask. pairs"):
        SegmentationDataset([], image_size=8)


def test_from_arrays() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (3, 20, 20), dtype=np.uint8)
    dataset = SegmentationDataset.from_arrays([(image, disk(20, 20, (10, 10), 6))], image_size=20, channels=1)
    assert dataset.files == [("image array 0", "mask array 0")]
    assert torch.equal(dataset[0]["mask"][0], torch.from_numpy(disk(20, 20, (10, 10), 6)).float())
    with pytest.raises(DataError, match="mask array 0: mask is 19x20"):
        SegmentationDataset.from_arrays([(image, np.zeros((20, 19), bool))], image_size=20)


# ---------------------------------------------------------------------------------------
# Classical augmentation

@pytest.fixture
def disk_dataset(tmp_path: Path) -> SegmentationDataset:
    """An off-centre disk, with image = 2 * mask - 1: the image shows where the mask is."""
    mask = disk(48, 48, (14, 30), 9)
    image = save_png(tmp_path / "image.png", mask.astype(np.uint8) * 255)
    mask_file = save_png(tmp_path / "mask.png", mask.astype(np.uint8))
    return SegmentationDataset([(image, mask_file)], image_size=48, augment="classical", seed=5)


def test_augmentation_is_a_function_of_the_key(disk_dataset: SegmentationDataset) -> None:
    first = disk_dataset[(3, 0)]
    again = disk_dataset[(3, 0)]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["mask"], again["mask"])
    others = [disk_dataset[(epoch, 0)]["image"] for epoch in range(8)]
    assert sum(not torch.equal(others[0], other) for other in others[1:]) >= 5


def test_augmentation_moves_image_and_mask_together(disk_dataset: SegmentationDataset) -> None:
    original = disk_dataset._masks[0]
    rigid = [torch.rot90(flipped, k, (-2, -1)) for flipped in (original, original.flip(-1)) for k in range(4)]
    warped = 0
    for epoch in range(24):
        item = disk_dataset[(epoch, 0)]
        warped += not any(torch.equal(item["mask"], moved) for moved in rigid)
        assert item["image"].shape == (1, 48, 48) and item["mask"].shape == (1, 48, 48)
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        agreement = ((item["image"] > 0) == (item["mask"] > 0.5)).float().mean()
        assert agreement >= 0.99, (epoch, float(agreement))
        assert abs(float(item["mask"].sum() - original.sum())) <= 0.15 * float(original.sum())
    assert 4 <= warped <= 20   # the elastic deformation ran on about half of them


def test_flips_and_turns_are_exact() -> None:
    mask = torch.from_numpy(disk(20, 20, (5, 13), 4)).float()[None]
    image = torch.cat([mask * 2 - 1, -mask])
    seen = set()
    for seed in range(16):
        rng = np.random.default_rng(seed)
        new_image, new_mask = augment_pair(image, mask, rng, elastic=False)
        assert torch.equal(new_image[0], new_mask[0] * 2 - 1) and torch.equal(new_image[1], -new_mask[0])
        seen.add(tuple(new_mask[0].nonzero().float().mean(0).round().tolist()))   # where the disk went
    assert len(seen) >= 4
    classes = torch.arange(400).reshape(20, 20)
    _, turned = augment_pair(image, classes, np.random.default_rng(0))
    assert turned.dtype == torch.int64 and turned.shape == (20, 20)


# ---------------------------------------------------------------------------------------
# PatchPairDataset

def write_patches(path: Path, images: np.ndarray, masks: np.ndarray) -> Path:
    with PatchSetWriter(path, images.shape[-1]) as writer:
        writer.append(images, masks, make_meta(len(images), "source.png", -1, np.arange(len(images)), 0, 1, 0))
    return path


def test_patch_pairs_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (5, 1, 16, 16), dtype=np.uint8)
    masks = rng.random((5, 1, 16, 16)) < 0.3
    path = write_patches(tmp_path / "patches.h5", images, masks)
    dataset = PatchPairDataset(path, image_size=16, channels=1)
    assert len(dataset) == 5 and repr(dataset) == f"patch pairs {path} (5 patches, 16x16, binary)"
    item = dataset[2]
    torch.testing.assert_close(item["image"], torch.from_numpy(images[2] / 255 * 2 - 1).float())
    assert item["mask"].dtype == torch.float32 and torch.equal(item["mask"], torch.from_numpy(masks[2]).float())
    augmented = PatchPairDataset(path, image_size=16, channels=1, augment="classical", seed=1)
    assert torch.equal(augmented[(2, 4)]["image"], augmented[(2, 4)]["image"])
    assert augmented[(2, 4)]["mask"].shape == (1, 16, 16)


def test_patch_pairs_refusals(tmp_path: Path) -> None:
    images = np.zeros((2, 1, 16, 16), np.uint8)
    path = write_patches(tmp_path / "patches.h5", images, np.zeros_like(images))
    with pytest.raises(DataError, match=r"patches\.h5: patches are 16x16 with 1 channel\(s\); this training uses "
                                        r"32x32 with 1$"):
        PatchPairDataset(path, image_size=32, channels=1)
    with pytest.raises(DataError, match="patches are 16x16 with 1 channel.*16x16 with 3"):
        PatchPairDataset(path, image_size=16, channels=3)
    with pytest.raises(DataError, match="absent.h5: no such file"):
        PatchPairDataset(tmp_path / "absent.h5", image_size=16, channels=1)
    text = tmp_path / "text.h5"
    text.write_text("not HDF5")
    with pytest.raises(DataError, match="text.h5: cannot read as HDF5"):
        PatchPairDataset(text, image_size=16, channels=1)
    generated = tmp_path / "generated.h5"
    with h5py.File(generated, "w") as file:
        file["images"] = images
    with pytest.raises(DataError, match="generated.h5: not an .image, mask. patch set .no dataset 'masks'"):
        PatchPairDataset(generated, image_size=16, channels=1)


# ---------------------------------------------------------------------------------------
# Real data

@pytest.mark.skipif(not (EMPS / "train.csv").is_file(), reason=f"needs the EMPS data set in {EMPS}")
def test_emps_pairs(tmp_path: Path) -> None:
    ids = [line.strip() for line in (EMPS / "train.csv").read_text().splitlines() if line.strip()][:3]
    split = tmp_path / "split.csv"
    split.write_text("\n".join(ids) + "\n")
    pairs = segmentation_pairs(EMPS / "images", EMPS / "segmaps", split)
    assert [image.stem for image, _ in pairs] == ids
    dataset = SegmentationDataset(pairs, image_size=128, augment="classical")
    for index in range(3):
        item = dataset[(1, index)]
        assert item["image"].shape == (1, 128, 128) and -1 <= item["image"].min() < item["image"].max() <= 1
        mask = item["mask"]
        assert mask.shape == (1, 128, 128) and set(mask.unique().tolist()) == {0.0, 1.0}
        assert 0.005 < float(mask.mean()) < 0.9
