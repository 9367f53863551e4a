"""The mask -> image GAN through the framework (arch Mask2Image): training on a patch set
writes the grids and validation metrics, resume is exact, bad settings are one clear line."""

from __future__ import annotations

import json

import pytest
import torch

from medgan_fast.training import ConfigError, load_config, train
from medgan_fast.training.checkpoint import load_checkpoint

from .conftest import TINY_MASK2IMAGE as TINY


def _config(path, out, *more):
    return load_config(None, [*TINY, f"data={path}", f"out={out}", "run=m2i", *more])


def test_training_writes_grids_and_validation_and_resumes_exactly(pairs, tmp_path):
    summary = train(_config(pairs, tmp_path / "a"))
    run = summary.run_dir
    assert sorted(p.name for p in (run / "samples").iterdir()) == sorted(
        f"{grid}_epoch_000{e}.png" for grid in ("pairs", "noise") for e in (1, 2))
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss_d" in r]
    assert steps and {"loss_g", "l1", "feature_matching", "spread"} <= set(steps[-1])
    validation = [r for r in records if r.get("event") == "validation"]
    assert len(validation) == 2
    last = validation[-1]
    assert 0 < last["val_l1"] < 2 and last["val_psnr"] > 0 and -1 <= last["val_ssim"] <= 1
    assert last["val_pair_ssim"] < 0.999   # two noise draws differ
    train(_config(pairs, tmp_path / "b", "num_epochs=1"))
    resumed = train(_config(pairs, tmp_path / "b", "resume=true"))
    a, b = (load_checkpoint(s.run_dir / "checkpoints" / "last.pt") for s in (summary, resumed))
    for model in ("generator", "discriminator"):
        for key, value in a["models"][model].items():
            assert torch.equal(value, b["models"][model][key]), (model, key)


def test_spade_and_the_sample_train(tmp_path):
    summary = train(load_config(None, [*TINY, "data=sample", "generator=spade", "diversity_weight=0",
                                       "num_epochs=1", f"out={tmp_path}"]))
    assert "val_pair_ssim" in summary.validation


def test_bad_settings_are_one_clear_line(pairs, tmp_path):
    with pytest.raises(ConfigError, match=r"data: arch Mask2Image trains on an \(image, mask\) patch set"):
        train(_config(tmp_path, tmp_path))
    with pytest.raises(ConfigError, match="dis_scales 3: expected 1 to 3, and at most 2 at image_size 64"):
        train(_config(pairs, tmp_path, "dis_scales=3"))
    with pytest.raises(ConfigError, match="image_size 64: a generator of gen_depth 7 needs a multiple of 128"):
        train(_config(pairs, tmp_path, "gen_depth=7"))
    with pytest.raises(ConfigError, match="generator: expected one of unet, spade"):
        _config(pairs, tmp_path, "generator=pix2pix")
