"""The augment job and command: synthetic pairs from a mask GAN and a Mask2Image GAN, the
same set for the same seed, a patch set that segment train --extra reads, clear refusals."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from medgan_fast import cli
from medgan_fast.data.segmentation import PatchPairDataset
from medgan_fast.errors import DataError
from medgan_fast.jobs.augmentation import AugmentConfig, _component_areas, synthesize_pairs
from medgan_fast.outputs import OutputError
from medgan_fast.training import CheckpointError, ConfigError, load_config, train

from .conftest import TINY_MASK2IMAGE, run_module, tiny_config


@pytest.fixture(scope="module")
def stages(pairs, tmp_path_factory):
    """(mask GAN, image GAN) checkpoints: a tiny grey DCGAN-64 on the pairs' images, a tiny
    Mask2Image on the pairs."""
    out = tmp_path_factory.mktemp("stages")
    mask_gan = train(tiny_config(out, run="masks", data=str(pairs), number_channels=1)).checkpoint
    image_gan = train(load_config(None, [*TINY_MASK2IMAGE, f"data={pairs}", f"out={out}", "run=images",
                                         "num_epochs=1"])).checkpoint
    return mask_gan, image_gan


def _config(stages, out, **changes):
    return AugmentConfig(*stages, **{"quantity": 10, "out": out, "batch_size": 4, "progress": False,
                                     "device": "cpu", **changes})


def test_pairs_are_written_the_same_for_the_same_seed_and_read_by_segment(stages, tmp_path):
    summary = synthesize_pairs(_config(stages, tmp_path / "a.h5"))
    synthesize_pairs(_config(stages, tmp_path / "b.h5"))
    synthesize_pairs(_config(stages, tmp_path / "c.h5", seed=1))
    assert summary.sheet == tmp_path / "a_contact_sheet.png" and summary.sheet.is_file()
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b, h5py.File(tmp_path / "c.h5") as c:
        assert a["images"].shape == a["masks"].shape == (10, 1, 64, 64) and set(np.unique(a["masks"])) <= {0, 1}
        assert np.array_equal(a["images"][...], b["images"][...]) and np.array_equal(a["masks"][...], b["masks"][...])
        assert not np.array_equal(a["images"][...], c["images"][...])
        assert a.attrs["mode"] == "synthetic"
    assert len(PatchPairDataset(tmp_path / "a.h5", image_size=64, channels=1)) == 10
    with pytest.raises(OutputError, match="already exists; give --overwrite"):
        synthesize_pairs(_config(stages, tmp_path / "a.h5"))


def test_real_areas_refuses_when_no_drawn_mask_fits(stages, tmp_path):
    # An untrained mask GAN draws speckle: no mask has all its components in 113..529 px.
    with pytest.raises(DataError, match=r"--real-areas: only 0 of 40 masks drawn had every component within the "
                                        r"real area range 113\.\.529 px"):
        synthesize_pairs(_config(stages, tmp_path / "kept.h5", quantity=2, real_areas=True))
    assert not list(tmp_path.iterdir())


def test_component_areas_per_mask():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :2, :2] = masks[0, 5:, 5:] = True
    assert _component_areas(masks) == [[4, 9], []]


def test_swapped_and_bad_inputs_are_one_clear_line(stages, trained_checkpoint, tmp_path):
    mask_gan, image_gan = stages
    with pytest.raises(CheckpointError, match="is not a mask -> image GAN; --image-gan takes checkpoints of arch"):
        synthesize_pairs(_config((mask_gan, mask_gan), tmp_path / "x.h5"))
    with pytest.raises(CheckpointError, match="--mask-gan .*'Mask2Image' checkpoint has no generator"):
        synthesize_pairs(_config((image_gan, image_gan), tmp_path / "x.h5"))
    with pytest.raises(CheckpointError, match="a generator of 3-channel images; a mask GAN makes grey"):
        synthesize_pairs(_config((trained_checkpoint, image_gan), tmp_path / "x.h5"))
    with pytest.raises(ConfigError, match="--quantity: expected an integer >= 1, got 0"):
        _config(stages, tmp_path / "x.h5", quantity=0)
    with pytest.raises(OutputError, match="expected a file name ending in .h5"):
        synthesize_pairs(_config(stages, tmp_path / "x.png"))
    assert not list(tmp_path.iterdir())


def test_patch_sizes_must_match(stages, tmp_path):
    other = train(load_config(None, [*TINY_MASK2IMAGE, "data=sample", "image_size=128", "num_epochs=1",
                                     "max_images=4", f"out={tmp_path}", "run=big"])).checkpoint
    with pytest.raises(CheckpointError, match="makes 64 px masks but --image-gan .* paints 128 px images"):
        synthesize_pairs(_config((stages[0], other), tmp_path / "x.h5"))


def test_the_command_says_what_is_missing_and_writes(stages, tmp_path):
    missing = run_module("-m", "medgan_fast.augment", "--quantity", "3", cwd=tmp_path)
    assert missing.returncode == cli.EXIT_USAGE and "--mask-gan, --image-gan, --out required" in missing.stderr
    done = run_module("-m", "medgan_fast.augment", "--mask-gan", str(stages[0]), "--image-gan", str(stages[1]),
                      "--quantity", "3", "--out", "s.h5", "--device", "cpu", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "augment: writing 3 pairs to s.h5" in done.stderr and "wrote 3 synthetic 64x64" in done.stdout
