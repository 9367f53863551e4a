"""Image metrics during training: log.jsonl records, metrics.json, metrics.png, the config key,
and that they leave the training RNG streams (and so exact resume) alone."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from medgan_fast.data.datasets import SampleDataset
from medgan_fast.metrics.comparison import TRAIN_DEFAULT_METRICS
from medgan_fast.training.config import ConfigError, TrainConfig, load_config
from medgan_fast.training.loop import train
from medgan_fast.training.run_files import fixed_real_images
from medgan_fast.training.plots import plot_metrics
from medgan_fast.training.telemetry import read_log

from .conftest import tiny_config


def _metric_records(run_dir):
    return [record for record in read_log(run_dir / "log.jsonl") if record.get("event") == "metrics"]


def test_metrics_are_logged_written_and_plotted(tmp_path):
    summary = train(tiny_config(tmp_path, num_epochs=2))
    run = summary.run_dir
    records = _metric_records(run)
    assert [(record["epoch"], record["step"]) for record in records] == [(1, 2), (2, 4)]
    for record in records:
        assert set(TRAIN_DEFAULT_METRICS) <= set(record) and record["metrics_seconds"] >= 0
        assert all(math.isfinite(record[name]) for name in TRAIN_DEFAULT_METRICS)
        assert 0 <= record["ssim"] <= 1 and 0 <= record["haarpsi"] <= 1 and record["swd"] >= 0
    latest = json.loads((run / "metrics.json").read_text())
    assert latest["epoch"] == 2 and latest["step"] == 4
    assert {name: value["value"] for name, value in latest["metrics"].items()} == \
        {name: records[-1][name] for name in TRAIN_DEFAULT_METRICS}
    assert latest["metrics"]["ssim"]["direction"] == "higher is better"
    assert latest["metrics"]["swd"]["direction"] == "lower is better"
    assert latest["fake_images"] == latest["real_images"] == 4 and latest["skipped"] == {}
    with Image.open(run / "metrics.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 400
    assert "metrics.png, metrics.json (last: ssim" in str(summary)
    assert summary.metrics == {name: records[-1][name] for name in TRAIN_DEFAULT_METRICS}
    assert not list(run.glob(".*tmp"))   # written atomically
    # The step records are unchanged: the loss plot and the step fields do not see the metrics.
    assert [record["step"] for record in read_log(run / "log.jsonl") if "loss_d" in record] == [1, 2, 3, 4]


def test_metrics_follow_sample_every(tmp_path):
    summary = train(tiny_config(tmp_path, num_epochs=3, sample_every=2, metrics="psnr,ms_gmsd"))
    records = _metric_records(summary.run_dir)
    assert [record["epoch"] for record in records] == [2, 3]   # with the sample grids
    assert set(records[0]) == {"step", "epoch", "event", "psnr", "ms_gmsd", "metrics_seconds"}


def test_empty_metrics_disable_them(tmp_path):
    summary = train(tiny_config(tmp_path, metrics=""))
    run = summary.run_dir
    assert _metric_records(run) == []
    assert not (run / "metrics.png").exists() and not (run / "metrics.json").exists()
    assert (run / "samples" / "epoch_0001.png").is_file() and "metrics.png" not in str(summary)


def test_metrics_too_small_for_the_images_are_skipped_once(tmp_path, capsys):
    summary = train(tiny_config(tmp_path, num_epochs=2, metrics="ms_ssim,gmsd"))
    records = _metric_records(summary.run_dir)
    assert [set(record) & {"ms_ssim", "gmsd"} for record in records] == [{"gmsd"}, {"gmsd"}]
    latest = json.loads((summary.run_dir / "metrics.json").read_text())
    assert "161x161" in latest["skipped"]["ms_ssim"]
    assert capsys.readouterr().err.count("metrics: ms_ssim skipped") == 1


def test_metrics_do_not_touch_the_rng_streams(tmp_path):
    from medgan_fast.training.run_files import RunWriter

    config = tiny_config(tmp_path, metrics="ssim,swd,ms_ssim_diversity")
    (tmp_path / "tiny").mkdir()
    writer = RunWriter(config, task=None)
    writer.start(0, [], None)
    dataset = SampleDataset(64, 3, crops=8)
    images = torch.rand(4, 3, 64, 64) * 2 - 1
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    writer.measure(images, dataset, 0, 2, torch.device("cpu"))
    writer.close()
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    assert set(_metric_records(tmp_path / "tiny")[0]) >= {"ssim", "swd", "ms_ssim_diversity"}


def test_fixed_real_images_are_evenly_spaced_items_of_epoch_0():
    dataset = SampleDataset(64, 1, crops=10)
    real = fixed_real_images(dataset, 4)
    assert real.shape == (4, 1, 64, 64) and 0 <= real.min() and real.max() <= 1
    for row, index in enumerate((0, 3, 6, 9)):
        torch.testing.assert_close(real[row], dataset[(0, index)].add(1).div(2))
    assert fixed_real_images(dataset, 64).shape[0] == 10   # at most the dataset
    torch.testing.assert_close(fixed_real_images(dataset, 4), real)


def test_plot_metrics_without_records(tmp_path):
    assert plot_metrics([{"step": 1, "loss_d": 1.0}], tmp_path / "metrics.png") is None
    assert not (tmp_path / "metrics.png").exists()


# ---------------------------------------------------------------------------------------
# The config key


def test_metrics_key_forms(tmp_path):
    assert TrainConfig().metric_names == TRAIN_DEFAULT_METRICS
    assert TrainConfig(metrics=["SSIM", "ms-gmsd", "ssim"]).metrics == "ssim,ms_gmsd"
    assert TrainConfig(metrics=None).metric_names == () and TrainConfig(metrics=[]).metric_names == ()
    assert load_config(None, ["metrics="]).metric_names == ()
    assert load_config(None, ["metrics=psnr, swd"]).metric_names == ("psnr", "swd")
    (tmp_path / "c.yaml").write_text("metrics: [haarpsi, ms_ssim_diversity]\n")
    config = load_config(tmp_path / "c.yaml")
    assert config.metric_names == ("haarpsi", "ms_ssim_diversity")
    assert TrainConfig(**yaml.safe_load(config.to_yaml())) == config   # config.yaml round trip


@pytest.mark.parametrize("value, pattern", [
    ("ssim,ssmi", r"metrics: expected one of psnr, ssim, .*, got 'ssmi'; did you mean 'ssim'\?"),
    ("fid", r"metrics: fid needs Inception-v3 weights .* python -m medgan_fast.evaluate --inception"),
    ("kid", r"metrics: kid needs Inception-v3 weights"),
])
def test_bad_metrics_are_refused(value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [f"metrics={value}"])
