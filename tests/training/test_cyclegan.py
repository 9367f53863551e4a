"""CycleGAN through the framework (arch CycleGAN): two unpaired folders train, write both
grids and the metrics; an interrupted-and-resumed run ends with the same weights and pools
as an uninterrupted one; the pool and schedule follow the reference; bad settings are one
clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medgan_fast.data.images import DataError
from medgan_fast.errors import Interrupted
from medgan_fast.training import ConfigError, load_config, train
from medgan_fast.training.checkpoint import load_checkpoint
from medgan_fast.training.cyclegan import CycleGANTask, ImagePool, _decay

from .conftest import TINY_CYCLEGAN as TINY

def _config(domains, out, *more):
    return load_config(None, [*TINY, f"data_a={domains / 'a'}", f"data_b={domains / 'b'}", f"out={out}", "run=cg",
                              *more])


def test_training_writes_grids_metrics_and_every_loss_term(domains, tmp_path):
    summary = train(_config(domains, tmp_path))
    run = summary.run_dir
    assert summary.steps == 2 * 3   # 2 epochs (1 + 1 decay) of 6 items in batches of 2
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == sorted(
        f"{grid}_epoch_000{e}.png" for grid in ("a_to_b", "b_to_a") for e in (1, 2))
    with Image.open(run / "samples" / "a_to_b_epoch_0002.png") as grid:
        assert grid.mode == "RGB" and grid.width > 2.5 * grid.height / 4   # 3 columns, 4 rows
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss_g" in r]
    assert {"loss_d", "adversarial", "cycle_a", "cycle_b", "identity", "loss_d_a", "loss_d_b"} <= set(steps[-1])
    assert [r["lr_g"] for r in steps if r["step"] in (3, 6)] == [pytest.approx(2e-4), pytest.approx(1e-4)]
    validation = [r for r in records if r.get("event") == "validation"][-1]
    for direction in ("a", "b"):
        assert 0 < validation[f"val_cycle_psnr_{direction}"] < 60
        assert -1 <= validation[f"val_cycle_ssim_{direction}"] <= 1
    for direction in ("ab", "ba"):
        assert validation[f"val_swd_{direction}"] > 0
        assert 0 <= validation[f"val_color_mean_{direction}"] <= 1 and 0 <= validation[f"val_color_sd_{direction}"] <= 1
    assert (run / "loss.png").is_file()


def test_an_interrupted_run_resumes_to_the_same_weights_and_pools(domains, tmp_path, monkeypatch):
    whole = load_checkpoint(train(_config(domains, tmp_path / "whole")).checkpoint)

    original = CycleGANTask.train_step

    def stop_at_step_4(self, batch, step):
        if step == 4:   # mid-way through the decay epoch, after 4 checkpoints
            raise KeyboardInterrupt
        return original(self, batch, step)

    monkeypatch.setattr(CycleGANTask, "train_step", stop_at_step_4)
    with pytest.raises(Interrupted):
        train(_config(domains, tmp_path / "split"))
    monkeypatch.setattr(CycleGANTask, "train_step", original)
    resumed = train(_config(domains, tmp_path / "split", "resume=true"))
    assert resumed.resumed_from == 4
    split = load_checkpoint(resumed.checkpoint)
    for name in ("g_ab", "g_ba", "d_a", "d_b"):
        for key, value in whole["models"][name].items():
            assert torch.equal(value, split["models"][name][key]), (name, key)
    for group in ("g", "d"):
        assert whole["optimizers"][group]["state"][0]["exp_avg"].equal(split["optimizers"][group]["state"][0]["exp_avg"])
        assert whole["schedulers"][group] == split["schedulers"][group]
    for domain in "ab":
        pools = whole["extra"]["pools"][domain], split["extra"]["pools"][domain]
        assert torch.equal(pools[0]["images"], pools[1]["images"]) and torch.equal(*(p["generator"] for p in pools))


def test_the_pool_keeps_the_first_fakes_then_swaps_about_half():
    pool = ImagePool(3, seed=0)
    first = torch.arange(3.0).view(3, 1, 1, 1)
    assert torch.equal(pool.query(first), first)
    fresh = torch.arange(100.0, 300.0).view(200, 1, 1, 1)
    later = pool.query(fresh)
    swapped = later != fresh
    assert abs(int(swapped.sum()) - 100) < 30   # each returned from the pool with probability 1/2
    assert set(later[swapped].tolist()) <= {0.0, 1.0, 2.0, *fresh.flatten().tolist()}   # only earlier fakes
    assert torch.equal(ImagePool(0, 0).query(first), first)


def test_the_learning_rate_is_constant_then_falls_as_the_reference():
    factor = _decay(num_epochs=3, decay_epochs=4)
    assert [round(factor(e), 3) for e in range(7)] == [1.0, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2]


def test_the_users_generator_and_discriminator_at_128_px_with_r1_and_ssim(domains, tmp_path):
    summary = train(_config(domains, tmp_path, "image_size=128", "load_size=140", "netG=unet_128", "netD=vgg",
                            "r1_gamma=1", "lambda_ssim=0.5", "gan_mode=hinge", "decay_epochs=0", "max_images=2"))
    last = [json.loads(line) for line in (summary.run_dir / "log.jsonl").read_text().splitlines()
            if '"loss_d"' in line][-1]
    assert summary.steps == 1 and np.isfinite(last["loss_d"]) and np.isfinite(last["loss_g"])


def test_grey_domains_and_conversion(domains, tmp_path):
    with pytest.raises(DataError, match=r"data_b .*b: holds images of 3 channel\(s\), output_nc is 1; set output_nc "
                                        "to match, or convert_channels: true"):
        train(_config(domains, tmp_path, "output_nc=1", "lambda_identity=0"))
    summary = train(_config(domains, tmp_path, "output_nc=1", "lambda_identity=0", "convert_channels=true",
                            "decay_epochs=0", "max_images=2", "run=grey"))
    assert summary.steps == 1


def test_bad_settings_are_one_clear_line(domains, tmp_path):
    with pytest.raises(ConfigError, match="lambda_identity 0.5: the identity loss .* needs input_nc == output_nc"):
        train(_config(domains, tmp_path, "output_nc=1", "convert_channels=true"))
    with pytest.raises(ConfigError, match="data_a: arch CycleGAN needs two domains"):
        train(load_config(None, [*TINY, f"data_b={domains / 'b'}", f"out={tmp_path}"]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"data_b .*empty: no images"):
        train(_config(domains, tmp_path, f"data_b={tmp_path / 'empty'}"))
    with pytest.raises(ConfigError, match="image_size 64: netG unet_128 needs a multiple of 128"):
        train(_config(domains, tmp_path, "netG=unet_128"))
    with pytest.raises(ConfigError, match="netG: expected one of .*did you mean 'unet_256'"):
        load_config(None, [*TINY, "netG=unet256"])
    assert not any((tmp_path).glob("cg*"))   # nothing half-written
