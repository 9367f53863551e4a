"""The translate command: folders and single large images through a CycleGAN generator,
tile boundaries no more visible than any other line of the image (and visible without the
thumbnail statistics, so the check can fail), dtypes kept, bad input one clear line."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from medgan_fast.data.sample import sample_image
from medgan_fast.data.tiles import tile_edges
from medgan_fast.errors import DataError, OutputError
from medgan_fast.jobs import translation
from medgan_fast.jobs.checkpoints import load_trained
from medgan_fast.jobs.translation import TranslateConfig, translate
from medgan_fast.metrics.seams import seam_ratio
from medgan_fast.training import CheckpointError, ConfigError, load_config, train
from medgan_fast.training.cyclegan import build_translator

from .conftest import TINY_CYCLEGAN as TINY
from .conftest import run_module


@pytest.fixture(scope="module")
def checkpoint(domains, tmp_path_factory):
    out = tmp_path_factory.mktemp("cyclegan")
    config = load_config(None, [*TINY, f"data_a={domains / 'a'}", f"data_b={domains / 'b'}", f"out={out}",
                                "decay_epochs=0", "checkpoint_every=0"])
    return train(config).checkpoint


def _config(checkpoint, source, out, **changes):
    return TranslateConfig(checkpoint=checkpoint, input=source, out=out,
                           **{"direction": "AtoB", "tile": 128, "overlap": 32, "progress": False, **changes})


def _seam_ratio(image: np.ndarray, tile: int, overlap: int) -> float:
    return seam_ratio(torch.from_numpy(image), *(tile_edges(n, tile, overlap) for n in image.shape[1:]))


def _whole_image(checkpoint, image: np.ndarray) -> np.ndarray:
    """The generator on the whole (C, H, W) uint8 image in one pass: what tiles should add up to."""
    model, _, _ = load_trained(checkpoint, "CycleGAN", "g_ab", lambda c: build_translator(c, "AtoB"), "")
    with torch.no_grad():
        out = model(torch.from_numpy(image).float().div(127.5).sub(1)[None])[0]
    return out.add(1).mul(127.5).numpy()


def test_a_large_image_has_no_seams_and_per_tile_statistics_would_differ(checkpoint, tmp_path, monkeypatch):
    image = sample_image()   # 512 x 512 RGB
    source = tmp_path / "slide.tif"
    tifffile.imwrite(source, np.moveaxis(image, 0, -1), tile=(128, 128))
    summary = translate(_config(checkpoint, source, tmp_path / "out.tif", thumbnail=512))
    assert "translated 1 image(s) AtoB" in summary and "megapixels per second" in summary
    out = np.moveaxis(tifffile.imread(tmp_path / "out.tif"), -1, 0)
    assert out.shape == (3, 512, 512) and out.dtype == np.uint8
    # The measure: steps across tile edges no larger than across other lines.
    assert _seam_ratio(out, 128, 32) < 1.1
    # With the whole image as its own thumbnail, every tile is normalised as in one pass
    # over the whole image; per-tile statistics (the reference's tiling) are not.
    whole = _whole_image(checkpoint, image)
    seamless = np.abs(out - whole).mean()
    monkeypatch.setattr(translation, "reuse_statistics", lambda model: contextlib.nullcontext())
    translate(_config(checkpoint, source, tmp_path / "per_tile.tif", thumbnail=512))
    per_tile = np.abs(np.moveaxis(tifffile.imread(tmp_path / "per_tile.tif"), -1, 0) - whole).mean()
    assert seamless < 0.3 * per_tile, (seamless, per_tile)


def test_a_folder_keeps_names_sizes_and_16_bit(checkpoint, domains, tmp_path):
    translate(_config(checkpoint, domains / "b", tmp_path / "out", direction="BtoA"))
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [f"b{i}.tif" for i in range(5)]
    image = tifffile.imread(tmp_path / "out" / "b0.tif")
    assert image.shape == (70, 70, 3) and image.dtype == np.uint16
    with pytest.raises(OutputError, match="already holds 5"):
        translate(_config(checkpoint, domains / "b", tmp_path / "out", direction="BtoA"))
    translate(_config(checkpoint, domains / "a", tmp_path / "png"))
    with Image.open(tmp_path / "png" / "a0.png") as png:
        assert png.size == (80, 72) and png.mode == "RGB"


def test_the_command_and_its_errors(checkpoint, domains, tmp_path, trained_checkpoint):
    result = run_module("-m", "medgan_fast.translate", "--checkpoint", str(checkpoint), "--direction", "AtoB",
                        "--input", str(domains / "a" / "a1.png"), "--out", str(tmp_path / "a1.png"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a1.png").is_file()
    with pytest.raises(CheckpointError, match="a 'DCGAN' checkpoint cannot be translated with; translate needs a "
                                              "CycleGAN checkpoint"):
        translate(_config(trained_checkpoint, domains / "a", tmp_path / "x"))
    with pytest.raises(ConfigError, match="--tile 130: netG resnet_6blocks needs a multiple of 4"):
        translate(_config(checkpoint, domains / "a", tmp_path / "x", tile=130))
    with pytest.raises(ConfigError, match=r"--overlap 128: must be smaller than --tile \(128\)"):
        translate(_config(checkpoint, domains / "a", tmp_path / "x", overlap=128))
    with pytest.raises(DataError, match="--input .*nowhere: no such file or folder"):
        translate(_config(checkpoint, tmp_path / "nowhere", tmp_path / "x"))
    with pytest.raises(OutputError, match="--out .*a1.png: already exists"):
        translate(_config(checkpoint, domains / "a" / "a1.png", tmp_path / "a1.png"))
    grey = tmp_path / "grey.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(grey)
    with pytest.raises(DataError, match="grey.png: has 1 channel.*takes 3"):
        translate(_config(checkpoint, grey, tmp_path / "grey_out.png"))
    assert not (tmp_path / "grey_out.png").exists() and not (tmp_path / "x").exists()
    assert torch.get_num_threads() >= 1
