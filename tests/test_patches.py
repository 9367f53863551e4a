"""The `patches` command and extract_patches, end to end on a few EMPS images."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.ndimage as ndi
import tifffile
import torch
from PIL import Image

import medgan_fast
from medgan_fast import cli
from medgan_fast import patches as patches_command
from medgan_fast.data.images import DataError
from medgan_fast.errors import MedganFastError
from medgan_fast.data.patches import PatchesConfig, contact_sheet_path, extract_patches
from medgan_fast.data.patchset import META_DTYPE, read_patch_set

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EMPS = DATA / "emps"
# Small EMPS images whose particles touch (fewer connected components than instances).
EMPS_STEMS = ("9928dad0ac", "2242820128", "d722a3a383")


@pytest.fixture
def emps(tmp_path) -> Path:
    """tmp_path/images and tmp_path/masks holding a few EMPS pairs, and an empty tmp_path/out."""
    if not EMPS.is_dir():
        pytest.skip(f"EMPS data not found at {EMPS} (the repo must sit beside shared/)")
    for folder in ("images", "masks", "out"):
        (tmp_path / folder).mkdir()
    for stem in EMPS_STEMS:
        shutil.copy(EMPS / "images" / f"{stem}.png", tmp_path / "images")
        shutil.copy(EMPS / "segmaps" / f"{stem}.png", tmp_path / "masks")
    return tmp_path


def _config(root: Path, **changes) -> PatchesConfig:
    # overwrite: these tests write one output several times (tests/test_cli.py checks the refusal)
    settings = dict(images=root / "images", masks=root / "masks", out=root / "out" / "set.h5", progress=False,
                    overwrite=True)
    return PatchesConfig(**{**settings, **changes})


def _run(*args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "medgan_fast.patches", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _segmaps(root: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(path)) for path in sorted((root / "masks").iterdir())]


# ---------------------------------------------------------------------------------------
# Counts

@pytest.mark.parametrize("connectivity", [1, 2])
def test_patch_count_equals_scipy_components_above_min_area(emps, connectivity):
    min_area = 7000
    structure = ndi.generate_binary_structure(2, connectivity)
    found = kept = 0
    for ids in _segmaps(emps):
        labels, count = ndi.label(ids > 0, structure)
        areas = np.bincount(labels.ravel())[1:]
        found, kept = found + count, kept + int((areas >= min_area).sum())
    assert 0 < kept < found   # the setting drops some: the test sees both sides

    summary = extract_patches(_config(emps, min_area=min_area, connectivity=connectivity))
    assert (summary.images, summary.components, summary.patches, summary.dropped_min_area) == \
        (3, found, kept, found - kept)
    patch_set = read_patch_set(emps / "out" / "set.h5")
    assert len(patch_set) == kept and (patch_set.meta["area"] >= min_area).all()


def test_instances_count_distinct_ids_above_min_area(emps):
    min_area = 7000
    areas = [np.bincount(ids.ravel())[1:] for ids in _segmaps(emps)]
    found = sum(int((a > 0).sum()) for a in areas)
    kept = sum(int((a >= min_area).sum()) for a in areas)
    binary = sum(ndi.label(ids > 0, np.ones((3, 3)))[1] for ids in _segmaps(emps))
    assert 0 < kept < found and binary < found   # touching particles: ids, not components, are counted

    summary = extract_patches(_config(emps, instances=True, min_area=min_area))
    assert (summary.components, summary.patches) == (found, kept)
    patch_set = read_patch_set(emps / "out" / "set.h5")
    # Each patch is one instance: its id, its area and its pixels.
    for source, component, area in zip(patch_set.meta["source"], patch_set.meta["component"], patch_set.meta["area"]):
        ids = np.asarray(Image.open(emps / "masks" / source))
        assert area == (ids == component).sum()
    assert patch_set.attrs["instances"] is True


def test_instances_skip_ids_without_pixels(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    ids = np.zeros((40, 40), np.uint16)
    ids[2:6, 2:6], ids[20:30, 20:22], ids[10:12, 30:39] = 7, 3, 1000   # ids 1, 2, 4..6, 8..999 absent
    Image.fromarray(ids).save(tmp_path / "masks" / "a.png")
    Image.fromarray(np.full((40, 40), 9, np.uint8)).save(tmp_path / "images" / "a.png")
    summary = extract_patches(_config(tmp_path, out=tmp_path / "set.h5", instances=True, size=8))
    assert (summary.components, summary.patches) == (3, 3)
    assert read_patch_set(tmp_path / "set.h5").meta["component"].tolist() == [3, 7, 1000]


def test_no_patches_gives_empty_datasets(emps):
    summary = extract_patches(_config(emps, min_area=10**9, mode="full", size=32))
    assert summary.patches == 0 and summary.dropped_min_area == summary.components > 0
    patch_set = read_patch_set(emps / "out" / "set.h5")
    assert patch_set.images.shape == (0, 1, 32, 32) and patch_set.masks.shape == (0, 1, 32, 32)


# ---------------------------------------------------------------------------------------
# Modes, file format

@pytest.mark.parametrize("mode", ["mask", "texture", "full"])
def test_modes_shapes_and_dtypes(emps, mode):
    extract_patches(_config(emps, mode=mode, size=96, dilation=3))
    patch_set = read_patch_set(emps / "out" / "set.h5")
    n = len(patch_set)
    assert n > 0
    assert patch_set.images.shape == (n, 1, 96, 96) and patch_set.images.dtype == np.uint8
    assert patch_set.masks.shape == (n, 1, 96, 96) and patch_set.masks.dtype == np.uint8
    assert set(np.unique(patch_set.masks)) <= {0, 1}
    assert (patch_set.meta["dilation"] == (3 if mode == "texture" else 0)).all()
    images, masks = patch_set.images, patch_set.masks
    if mode == "mask":
        np.testing.assert_array_equal(images, masks * 255)
    elif mode == "texture":
        assert (images[masks == 0] == 0).mean() > 0.5           # outside the dilated component: zero
    else:
        # A full patch is the image window centred on the component's bbox.
        source, (r0, c0, r1, c1) = patch_set.meta["source"][0], patch_set.meta["bbox"][0]
        image = np.asarray(Image.open(emps / "images" / source))
        top, left = (r0 + r1) // 2 - 48, (c0 + c1) // 2 - 48
        padded = np.pad(image, 96)
        np.testing.assert_array_equal(images[0, 0], padded[top + 96:top + 192, left + 96:left + 192])


def test_attributes_and_meta(emps):
    extract_patches(_config(emps, mode="texture", size=64, dilation=2, min_area=10, connectivity=1,
                            command="python -m medgan_fast.patches --test"))
    with h5py.File(emps / "out" / "set.h5") as file:
        attrs = dict(file.attrs)
        assert file["meta"].dtype == META_DTYPE
        assert h5py.check_string_dtype(file["meta"].dtype["source"]).encoding == "utf-8"
    assert attrs["format_version"] == 1 and attrs["package_version"] == medgan_fast.__version__
    assert attrs["command"] == "python -m medgan_fast.patches --test"
    assert (attrs["mode"], attrs["size"], attrs["connectivity"], attrs["min_area"], attrs["instances"]) == \
        ("texture", 64, 1, 10, False)
    meta = read_patch_set(emps / "out" / "set.h5").meta
    assert set(meta["source"]) == {f"{stem}.png" for stem in EMPS_STEMS}
    assert (meta["slice"] == -1).all()
    # Component ids, bboxes and areas are scipy's (raster order of first pixel, as skimage).
    source = f"{EMPS_STEMS[0]}.png"
    rows = meta["source"] == source
    labels, _ = ndi.label(np.asarray(Image.open(emps / "masks" / source)) > 0)
    objects = ndi.find_objects(labels)
    for component, bbox, area in zip(meta["component"][rows], meta["bbox"][rows], meta["area"][rows]):
        rs, cs = objects[component - 1]
        assert bbox.tolist() == [rs.start, cs.start, rs.stop, cs.stop]
        assert area == (labels == component).sum()


def test_rgb_masks_with_equal_channels_are_accepted(emps):
    grey = extract_patches(_config(emps)).patches
    for path in (emps / "masks").iterdir():
        binary = (np.asarray(Image.open(path)) > 0).astype(np.uint8) * 255
        Image.fromarray(np.dstack([binary] * 3)).save(path)
    assert extract_patches(_config(emps)).patches == grey


def test_16_bit_tiff_images(emps):
    for path in list((emps / "images").iterdir()):
        tifffile.imwrite(path.with_suffix(".tif"), np.asarray(Image.open(path)).astype(np.uint16) * 257)
        path.unlink()
    extract_patches(_config(emps, mode="full", size=48))
    patch_set = read_patch_set(emps / "out" / "set.h5")
    assert patch_set.images.dtype == np.uint16 and patch_set.images.max() > 255
    assert (patch_set.images % 257 == 0).all()   # values kept, not rescaled
    assert patch_set.meta["source"][0].endswith(".tif")


def test_volume(tmp_path):
    rng = np.random.default_rng(1)
    masks = np.zeros((3, 50, 60), np.uint8)
    masks[0, 5:10, 5:10] = masks[0, 30:40, 40:45] = 1   # 2 components
    masks[2, 20:25, 20:30] = 255                        # 1 component; slice 1 has none
    images = rng.integers(0, 256, (3, 50, 60, 3), dtype=np.uint8)
    with h5py.File(tmp_path / "stack.h5", "w") as file:
        file["em/raw"], file["em/mito"] = images, masks
    summary = extract_patches(PatchesConfig(volume=tmp_path / "stack.h5", image_key="em/raw", mask_key="em/mito",
                                            out=tmp_path / "set.h5", mode="full", size=16, progress=False))
    assert (summary.images, summary.patches) == (3, 3)
    patch_set = read_patch_set(tmp_path / "set.h5")
    assert patch_set.images.shape == (3, 3, 16, 16)
    assert patch_set.meta["slice"].tolist() == [0, 0, 2]
    assert patch_set.meta["source"].tolist() == ["stack.h5"] * 3
    r0, c0, r1, c1 = patch_set.meta["bbox"][2]
    top, left = (r0 + r1) // 2 - 8, (c0 + c1) // 2 - 8
    np.testing.assert_array_equal(patch_set.images[2], np.moveaxis(images[2, top:top + 16, left:left + 16], -1, 0))


def test_contact_sheet_beside_out_unless_disabled(emps):
    sheet = emps / "out" / "set_contact_sheet.png"
    summary = extract_patches(_config(emps, size=40))
    assert summary.contact_sheet == contact_sheet_path(emps / "out" / "set.h5") == sheet
    assert Image.open(sheet).size[0] > 40
    sheet.unlink()
    assert extract_patches(_config(emps, size=40, contact_sheet=False)).contact_sheet is None
    assert sorted(p.name for p in (emps / "out").iterdir()) == ["set.h5"]


# ---------------------------------------------------------------------------------------
# Bad input: one message naming the file or argument, and nothing left in the output folder

def _add_pair(root: Path, stem: str, image: np.ndarray | None, mask: np.ndarray | None) -> None:
    if image is not None:
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
    if mask is not None:
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")


# Each breaks the emps fixture's input; "zz" sorts last, so most errors come mid-write.

def _image_without_mask(root):
    _add_pair(root, "zz", np.zeros((20, 20), np.uint8), None)


def _mask_without_image(root):
    _add_pair(root, "zz", None, np.zeros((20, 20), np.uint8))


def _size_mismatch(root):
    _add_pair(root, "zz", np.zeros((20, 20), np.uint8), np.zeros((20, 21), np.uint8))


def _truncated_image(root):
    data = (root / "images" / f"{EMPS_STEMS[0]}.png").read_bytes()
    (root / "images" / "zz.png").write_bytes(data[:2000])
    shutil.copy(root / "masks" / f"{EMPS_STEMS[0]}.png", root / "masks" / "zz.png")


def _unreadable_mask(root):
    _add_pair(root, "zz", np.zeros((20, 20), np.uint8), None)
    (root / "masks" / "zz.png").write_text("not a png")


def _empty_images_folder(root):
    for path in (root / "images").iterdir():
        path.unlink()


def _mask_channels_differ(root):
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[5, 5] = (0, 0, 1)
    _add_pair(root, "zz", np.zeros((20, 20), np.uint8), rgb)


def _nothing(root):
    pass


BAD_INPUTS = {
    "image without mask": (_image_without_mask, {}, r"images/zz\.png: no mask with stem 'zz'"),
    "mask without image": (_mask_without_image, {}, r"masks/zz\.png: no image with stem 'zz'"),
    "size mismatch": (_size_mismatch, {}, r"masks/zz\.png: mask is 20x21 but its image .*zz\.png is 20x20"),
    "truncated image": (_truncated_image, {}, r"images/zz\.png: cannot read"),
    "unreadable mask": (_unreadable_mask, {}, r"masks/zz\.png: cannot read"),
    "empty folder": (_empty_images_folder, {}, r"--images .*images: no images"),
    "mask channels differ": (_mask_channels_differ, {}, r"masks/zz\.png: mask has 3 colour channels that differ"),
    "out not hdf5": (_nothing, {"out": "set.png"}, r"--out .*set\.png: expected a file name ending in \.h5 or \.hdf5"),
    "bad size": (_nothing, {"size": 0}, r"--size: expected an integer >= 1, got 0"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_the_problem_and_leaves_nothing(emps, case):
    breaks, changes, message = BAD_INPUTS[case]
    breaks(emps)
    if "out" in changes:
        changes = {"out": emps / "out" / changes["out"]}
    with pytest.raises(MedganFastError, match=message):
        extract_patches(_config(emps, **changes))
    assert list((emps / "out").iterdir()) == []


def test_volume_errors(tmp_path):
    with h5py.File(tmp_path / "stack.h5", "w") as file:
        file["raw"], file["mito"] = np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 9), np.uint8)
    (tmp_path / "out").mkdir()
    config = PatchesConfig(volume=tmp_path / "stack.h5", image_key="raw", mask_key="labels",
                           out=tmp_path / "out" / "set.h5", progress=False)
    with pytest.raises(DataError, match=r"--mask-key 'labels': no such dataset in .*stack\.h5 \(datasets in it: "
                                        r"mito, raw\)"):
        extract_patches(config)
    config.mask_key = "mito"
    with pytest.raises(DataError, match=r"--volume .*stack\.h5: expected images .* same D, H, W"):
        extract_patches(config)
    config.volume = tmp_path / "none.h5"
    with pytest.raises(DataError, match=r"--volume .*none\.h5: no such file"):
        extract_patches(config)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is missing")
def test_cuda_without_cuda(emps):
    with pytest.raises(DataError, match=r"--device cuda: CUDA is not available"):
        extract_patches(_config(emps, device="cuda"))


def test_cuda_matches_cpu(emps, gpu):
    extract_patches(_config(emps, mode="texture", size=64))
    cpu = read_patch_set(emps / "out" / "set.h5")
    with gpu.running():
        extract_patches(_config(emps, mode="texture", size=64, device=gpu.device.type))
    cuda = read_patch_set(emps / "out" / "set.h5")
    np.testing.assert_array_equal(cpu.images, cuda.images)
    np.testing.assert_array_equal(cpu.meta["bbox"], cuda.meta["bbox"])


# ---------------------------------------------------------------------------------------
# The command line

def test_command_end_to_end(emps):
    result = _run("--images", "images", "--masks", "masks", "--out", "out/emps.h5", "--mode", "texture",
                  "--size", "64", "--instances", cwd=emps)
    assert result.returncode == 0, result.stderr
    assert "read 3 images" in result.stdout and "out/emps.h5" in result.stdout
    patch_set = read_patch_set(emps / "out" / "emps.h5")
    assert patch_set.attrs["command"].startswith("python -m medgan_fast.patches --images images")
    assert (emps / "out" / "emps_contact_sheet.png").is_file()
    assert result.stderr.startswith("patches: writing out/emps.h5 and out/emps_contact_sheet.png")
    assert "100%" not in result.stderr   # no progress bar when stderr is not a terminal


def test_command_error_is_one_line_without_traceback(emps):
    _add_pair(emps, "zz", np.zeros((20, 20), np.uint8), None)
    result = _run("--images", "images", "--masks", "masks", "--out", "out/emps.h5", "--no-progress", cwd=emps)
    assert result.returncode != 0
    assert result.stderr.strip() == "patches: error: images/zz.png: no mask with stem 'zz' in masks"
    assert list((emps / "out").iterdir()) == []


def test_command_without_arguments_runs_the_sample(tmp_path):
    result = _run(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "embedded sample" in result.stdout
    patch_set = read_patch_set(tmp_path / "patches.h5")
    assert len(patch_set) > 50 and patch_set.images.shape[1:] == (3, 64, 64)
    assert patch_set.attrs["mode"] == "texture"
    assert Image.open(tmp_path / "patches_contact_sheet.png").mode == "RGB"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["patches.h5", "patches_contact_sheet.png"]


def test_command_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        patches_command.main(["--help"])
    assert exit_info.value.code == 0
    assert "python -m medgan_fast.patches --images" in capsys.readouterr().out


def test_command_config_defaults():
    parser = patches_command.build_parser()

    def config(*argv):
        args = parser.parse_args(argv)
        args.argv = list(argv)
        return patches_command.config_from_args(args)

    sample = config("--size", "32")
    assert sample.is_sample and (sample.size, sample.mode, sample.dilation) == (32, "texture", 5)
    assert sample.out.name == "patches.h5" and sample.command == "python -m medgan_fast.patches --size 32"
    real = config("--images", "a", "--masks", "b", "--out", "c.h5", "--no-contact-sheet")
    assert (real.size, real.mode, real.contact_sheet, real.impl) == (250, "mask", False, "auto")
    with pytest.raises(cli.UsageError, match="--out FILE.h5 is required"):   # exit 2 from cli.main
        config("--images", "a", "--masks", "b")
