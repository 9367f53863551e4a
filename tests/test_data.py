"""Readers, the HDF5 patch set (writer/reader round trip, atomic write), grids and the sample."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from medgan_fast.data.grid import make_grid, save_grid
from medgan_fast.data.images import DataError, find_pairs, list_images, read_image, read_mask
from medgan_fast.data.patchset import (
    FORMAT_VERSION, META_DTYPE, AtomicPath, PatchSetWriter, make_meta, read_patch_set,
)
from medgan_fast.data.sample import sample_image_and_mask

RNG = np.random.default_rng(0)


def _grey(h=12, w=10, dtype=np.uint8):
    return RNG.integers(0, np.iinfo(dtype).max, (h, w), dtype=dtype, endpoint=True)


# ---------------------------------------------------------------------------------------
# read_image

def test_read_png_grey_8_and_16_bit(tmp_path):
    grey8, grey16 = _grey(), _grey(dtype=np.uint16)
    Image.fromarray(grey8).save(tmp_path / "a.png")
    Image.fromarray(grey16).save(tmp_path / "b.png")   # Pillow writes mode I;16
    image8, image16 = read_image(tmp_path / "a.png"), read_image(tmp_path / "b.png")
    assert image8.dtype == np.uint8 and image8.shape == (1, 12, 10)
    assert image16.dtype == np.uint16
    np.testing.assert_array_equal(image8[0], grey8)
    np.testing.assert_array_equal(image16[0], grey16)


def test_read_png_rgb_and_rgba_drops_alpha(tmp_path):
    rgba = RNG.integers(0, 256, (8, 9, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rgb.png")
    for name in ("rgba.png", "rgb.png"):
        image = read_image(tmp_path / name)
        assert image.shape == (3, 8, 9)
        np.testing.assert_array_equal(image, np.moveaxis(rgba[..., :3], -1, 0))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_read_tiff(tmp_path, dtype):
    array = (RNG.random((16, 20)) * 1000).astype(dtype)
    tifffile.imwrite(tmp_path / "a.tif", array)
    image = read_image(tmp_path / "a.tif")
    assert image.dtype == dtype and image.shape == (1, 16, 20)
    np.testing.assert_array_equal(image[0], array)


def test_read_tiff_rgb_contiguous_and_planar(tmp_path):
    rgb = RNG.integers(0, 65536, (10, 12, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "contig.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    for name in ("contig.tif", "planar.tif"):
        np.testing.assert_array_equal(read_image(tmp_path / name), np.moveaxis(rgb, -1, 0))


def test_read_tiff_stack_is_an_error(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    with pytest.raises(DataError, match=r"stack\.tif: holds a stack"):
        read_image(tmp_path / "stack.tif")


def test_read_npy_dtypes(tmp_path):
    np.save(tmp_path / "f64.npy", RNG.random((5, 6)))
    np.save(tmp_path / "i32.npy", np.arange(30, dtype=np.int32).reshape(5, 6) * 1000)
    np.save(tmp_path / "neg.npy", -np.ones((5, 6), np.int32))
    assert read_image(tmp_path / "f64.npy").dtype == np.float32
    image = read_image(tmp_path / "i32.npy")
    assert image.dtype == np.uint16 and image.max() == 29000
    with pytest.raises(DataError, match=r"neg\.npy: expected 8- or 16-bit"):
        read_image(tmp_path / "neg.npy")


@pytest.mark.parametrize("content", [b"not an image", b"truncated"])
def test_unreadable_or_truncated_file_names_it(tmp_path, content):
    Image.fromarray(_grey(200, 200)).save(tmp_path / "good.png")
    data = (tmp_path / "good.png").read_bytes()
    bad = tmp_path / "bad.png"
    bad.write_bytes(content if content != b"truncated" else data[:len(data) // 2])
    with pytest.raises(DataError, match=r"bad\.png: cannot read"):
        read_image(bad)


def test_truncated_tiff_and_npy(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _grey(100, 100))
    np.save(tmp_path / "a.npy", _grey(100, 100))
    for name in ("a.tif", "a.npy"):
        path = tmp_path / name
        path.write_bytes(path.read_bytes()[:300])
        with pytest.raises(DataError, match=rf"{name.replace('.', '[.]')}: cannot read"):
            read_image(path)


# ---------------------------------------------------------------------------------------
# read_mask

def test_read_mask_keeps_16_bit_instance_ids(tmp_path):
    ids = np.zeros((20, 20), np.uint16)
    ids[2:5, 2:5], ids[10:15, 10:12] = 300, 65535
    Image.fromarray(ids).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), ids)


def test_read_mask_rgb_with_equal_channels_is_grey(tmp_path):
    grey = (RNG.random((9, 7)) > 0.5).astype(np.uint8) * 255
    rgba = np.dstack([grey, grey, grey, RNG.integers(0, 256, (9, 7), dtype=np.uint8)])  # alpha ignored
    Image.fromarray(rgba).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    assert mask.shape == (9, 7)
    np.testing.assert_array_equal(mask, grey)


def test_read_mask_rgb_with_different_channels_is_an_error(tmp_path):
    rgb = np.zeros((9, 7, 3), np.uint8)
    rgb[3, 3] = (255, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match=r"colour\.png: mask has 3 colour channels that differ"):
        read_mask(tmp_path / "colour.png")


def test_read_mask_palette_keeps_indices(tmp_path):
    indices = np.zeros((6, 6), np.uint8)
    indices[1:3, 1:3], indices[4, 4] = 1, 2
    image = Image.fromarray(indices, mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    image.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), indices)


# ---------------------------------------------------------------------------------------
# folders

def _touch_images(folder, names):
    folder.mkdir(exist_ok=True)
    for name in names:
        if name.endswith(".npy"):
            np.save(folder / name, np.zeros((2, 2), np.uint8))
        else:
            Image.fromarray(np.zeros((2, 2), np.uint8)).save(folder / name)


def test_find_pairs_matches_stems_across_formats(tmp_path):
    _touch_images(tmp_path / "images", ["001.png", "002.png", ".hidden.png"])
    _touch_images(tmp_path / "masks", ["001.tif", "002.npy"])
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    pairs = find_pairs(tmp_path / "images", tmp_path / "masks")
    assert [(i.name, m.name) for i, m in pairs] == [("001.png", "001.tif"), ("002.png", "002.npy")]


@pytest.mark.parametrize("images, masks, message", [
    (["001.png", "002.png"], ["001.png"], r"002\.png: no mask with stem '002'"),
    (["001.png"], ["001.png", "003.png"], r"003\.png: no image with stem '003'"),
    (["001.png", "001.tif"], ["001.png"], r"two files with stem '001'"),
    ([], ["001.png"], r"--images .*: no images"),
])
def test_find_pairs_errors(tmp_path, images, masks, message):
    _touch_images(tmp_path / "images", images)
    _touch_images(tmp_path / "masks", masks)
    with pytest.raises(DataError, match=message):
        find_pairs(tmp_path / "images", tmp_path / "masks")


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"--images .*nowhere: no such folder"):
        list_images(tmp_path / "nowhere", "--images")


# ---------------------------------------------------------------------------------------
# patch set

def _patches(k, c=1, size=8, dtype=np.uint8):
    images = (RNG.random((k, c, size, size)) * 200).astype(dtype)
    masks = RNG.random((k, 1, size, size)) > 0.5
    return images, masks


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_patch_set_round_trip(tmp_path, dtype):
    path = tmp_path / "set.h5"
    first, second = _patches(3, 3, dtype=dtype), _patches(2, 3, dtype=dtype)
    with PatchSetWriter(path, 8, {"mode": "full", "size": 8, "command": "test"}) as writer:
        writer.append(*first, make_meta(3, "µm-é.png", -1, [1, 2, 3], [[0, 0, 4, 4]] * 3, [5, 6, 7], 0))
        writer.append(*_patches(0, 3, dtype=dtype), make_meta(0, "empty.png", -1, [], np.zeros((0, 4)), [], 0))
        writer.append(*second, make_meta(2, "b.png", 4, [9, 10], [[1, 2, 3, 4], [5, 6, 7, 8]], [11, 12], 5))
    patch_set = read_patch_set(path)
    assert len(patch_set) == 5
    assert patch_set.images.dtype == dtype and patch_set.images.shape == (5, 3, 8, 8)
    np.testing.assert_array_equal(patch_set.images, np.concatenate([first[0], second[0]]))
    assert patch_set.masks.dtype == np.uint8
    np.testing.assert_array_equal(patch_set.masks, np.concatenate([first[1], second[1]]).astype(np.uint8))
    assert patch_set.meta["source"].tolist() == ["µm-é.png"] * 3 + ["b.png"] * 2
    assert patch_set.meta["slice"].tolist() == [-1, -1, -1, 4, 4]
    assert patch_set.meta["component"].tolist() == [1, 2, 3, 9, 10]
    assert patch_set.meta["bbox"].tolist()[3:] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert patch_set.meta["area"].tolist() == [5, 6, 7, 11, 12]
    assert patch_set.meta["dilation"].tolist() == [0, 0, 0, 5, 5]
    assert patch_set.attrs["format_version"] == FORMAT_VERSION and patch_set.attrs["command"] == "test"
    assert "package_version" in patch_set.attrs
    with h5py.File(path) as file:   # the on-disk types, as DESIGN.md's format says
        assert file["meta"].dtype == META_DTYPE
        assert file["images"].maxshape[0] is None and file["images"].chunks is not None


def test_patch_set_with_no_patches(tmp_path):
    path = tmp_path / "empty.h5"
    with PatchSetWriter(path, 16) as writer:
        writer.append(*_patches(0, 3, size=16), make_meta(0, "a.png", -1, [], np.zeros((0, 4)), [], 0))
    patch_set = read_patch_set(path)
    assert patch_set.images.shape == (0, 3, 16, 16) and patch_set.masks.shape == (0, 1, 16, 16)
    assert len(patch_set.meta["source"]) == 0
    with PatchSetWriter(path, 16):   # nothing appended at all: an empty grey set
        pass
    assert read_patch_set(path).images.shape == (0, 1, 16, 16)


def test_patch_set_refuses_other_layouts(tmp_path):
    with pytest.raises(ValueError, match="like the earlier ones"):
        with PatchSetWriter(tmp_path / "set.h5", 8) as writer:
            writer.append(*_patches(1, 1), make_meta(1, "a", -1, 1, [0, 0, 1, 1], 1, 0))
            writer.append(*_patches(1, 3), make_meta(1, "b", -1, 1, [0, 0, 1, 1], 1, 0))
    assert list(tmp_path.iterdir()) == []


def test_patch_set_write_is_atomic(tmp_path):
    path = tmp_path / "set.h5"
    with PatchSetWriter(path, 8) as writer:   # an earlier, complete set
        writer.append(*_patches(1), make_meta(1, "old.png", -1, 1, [0, 0, 1, 1], 1, 0))
    with pytest.raises(RuntimeError, match="mid-write"):
        with PatchSetWriter(path, 8) as writer:
            writer.append(*_patches(4), make_meta(4, "new.png", -1, 1, [0, 0, 1, 1], 1, 0))
            assert len(list(tmp_path.iterdir())) == 2   # set.h5 and the temporary file
            raise RuntimeError("mid-write")
    assert list(tmp_path.iterdir()) == [path]    # temp gone, the old set untouched
    assert read_patch_set(path).meta["source"].tolist() == ["old.png"]


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with AtomicPath(tmp_path / "a.png") as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_read_patch_set_refuses_other_files(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as file:
        file["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a patch set"):
        read_patch_set(tmp_path / "other.h5")


# ---------------------------------------------------------------------------------------
# grid and sample

def test_make_grid_shapes_and_scaling():
    grey = make_grid(np.full((5, 1, 4, 6), 7, np.uint8), columns=3, padding=1)
    assert grey.shape == (2 * 5 + 1, 3 * 7 + 1) and grey[1, 1] == 7
    rgb = make_grid(np.zeros((4, 3, 4, 4), np.float32))
    assert rgb.shape == (2 * 6 + 2, 2 * 6 + 2, 3)
    wide = make_grid(np.array([0, 1000], np.uint16).reshape(2, 1, 1, 1), padding=0)
    assert wide.tolist() == [[0, 255]]


def test_save_grid_writes_png(tmp_path):
    path = save_grid(np.zeros((3, 1, 5, 5), np.uint8), tmp_path / "grid.png")
    assert Image.open(path).size == (2 * 7 + 2, 2 * 7 + 2)
    assert list(tmp_path.iterdir()) == [path]


def test_sample_image_and_mask():
    image, mask = sample_image_and_mask()
    assert image.shape == (3, 512, 512) and image.dtype == np.uint8
    assert mask.shape == (512, 512) and mask.dtype == bool
    assert 0.05 < mask.mean() < 0.4   # nuclei, not the whole tissue
