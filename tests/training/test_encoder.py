"""arch Encoder: the izi_f encoder trains on a frozen StyleGAN2, its loss falls, its grid is
written, and a checkpoint of another kind or size is refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medgan_fast.training.checkpoint import CheckpointError, load_checkpoint
from medgan_fast.training.config import ConfigError
from medgan_fast.training.loop import train

from .conftest import run_module, tiny_config
from .test_stylegan2 import TINY_STYLEGAN2


@pytest.fixture(scope="module")
def stylegan2_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("stylegan2")
    return train(tiny_config(out, **{**TINY_STYLEGAN2, "num_epochs": 1})).checkpoint


def encoder_config(out, checkpoint, **changes):
    return tiny_config(out, **{"arch": "Encoder", "image_size": 64, "sample_crops": 16, "num_epochs": 3,
                               "metrics": "", "learning_rate": 0.002,
                               "options": {"generator_checkpoint": str(checkpoint), "kappa": 1.0}, **changes})


def test_the_encoder_trains_on_the_frozen_generator(stylegan2_checkpoint, tmp_path):
    result = train(encoder_config(tmp_path, stylegan2_checkpoint))
    run = result.checkpoint.parents[1]
    losses = [row["loss"] for row in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in row]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])
    assert (run / "samples" / "reconstructions_epoch_0003.png").is_file()
    state = load_checkpoint(result.checkpoint)
    assert set(state["models"]) == {"encoder"}   # G and D stay in their own checkpoint
    gan = load_checkpoint(stylegan2_checkpoint)["models"]["generator_ema"]
    torch.testing.assert_close(state["models"]["encoder"]["w_avg"], gan["mapping.w_avg"])


def test_other_checkpoints_and_sizes_are_refused(stylegan2_checkpoint, trained_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="must be a checkpoint of an arch StyleGAN2 run, got arch 'DCGAN'"):
        train(encoder_config(tmp_path / "a", trained_checkpoint))
    with pytest.raises(ConfigError, match="the generator makes 64 px images with 3 channel"):
        train(encoder_config(tmp_path / "b", stylegan2_checkpoint, number_channels=1))
    with pytest.raises(ConfigError, match="generator_checkpoint: arch Encoder needs"):
        train(encoder_config(tmp_path / "c", "", options={}))


def test_the_anomaly_command_trains_an_encoder(stylegan2_checkpoint, tmp_path):
    process = run_module("-m", "medgan_fast.anomaly", "train-encoder", "--checkpoint", str(stylegan2_checkpoint),
                         "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path), "--set", "sample_crops=8",
                         "--no-progress", cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    assert (tmp_path / "encoder_sample" / "checkpoints" / "last.pt").is_file()
    missing = run_module("-m", "medgan_fast.anomaly", "train-encoder", cwd=tmp_path)
    assert missing.returncode == 2 and "--checkpoint FILE is required" in missing.stderr
    wrong = run_module("-m", "medgan_fast.anomaly", "train-encoder", "--checkpoint", str(tmp_path / "none.pt"),
                       cwd=tmp_path)
    assert wrong.returncode == 1 and "none.pt" in wrong.stderr.strip().splitlines()[-1]


def test_reconstruct_writes_one_png_per_image_and_a_grid(stylegan2_checkpoint, trained_checkpoint, tmp_path):
    from PIL import Image

    from medgan_fast.errors import OutputError
    from medgan_fast.jobs.anomaly import ReconstructConfig, load_encoder, reconstruct_folder as reconstruct

    encoder = train(encoder_config(tmp_path / "runs", stylegan2_checkpoint, num_epochs=1)).checkpoint
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    out = reconstruct(ReconstructConfig(encoder, folder, tmp_path / "rebuilt", batch_size=2, progress=False))
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png", "c.png", "grid.png"]
    assert np.asarray(Image.open(out / "a.png")).shape == (64, 64, 3)
    assert np.asarray(Image.open(out / "grid.png")).shape[1] == 3 * 66 + 2   # 3 images a row, 2 px padding
    with pytest.raises(OutputError, match="already holds 4"):
        reconstruct(ReconstructConfig(encoder, folder, out, progress=False))
    reconstruct(ReconstructConfig(encoder, folder, out, progress=False, overwrite=True))
    with pytest.raises(CheckpointError, match="must be a checkpoint of anomaly train-encoder"):
        load_encoder(trained_checkpoint)
    # the same images as the training run's encoder gives
    model = load_encoder(encoder)
    assert torch.equal(model.encoder.w_avg, load_checkpoint(encoder)["models"]["encoder"]["w_avg"])


def test_score_writes_the_report_and_chooses_the_threshold_on_validation(stylegan2_checkpoint, tmp_path):
    from PIL import Image

    from medgan_fast.errors import DataError, OutputError
    from medgan_fast.jobs.anomaly_score import ScoreConfig, score

    encoder = train(encoder_config(tmp_path / "runs", stylegan2_checkpoint, num_epochs=1)).checkpoint
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = ["isic_id,diagnosis"]
    for k in range(16):
        anomalous = k % 2 == 1
        pixels = rng.integers(0, 255, (64, 64, 3)) if anomalous else np.full((64, 64, 3), 90 + k)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"img{k}.png")
        rows.append(f"img{k},{'melanoma' if anomalous else 'nevus'}")
    rows.append("not_an_image,nevus")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    config = dict(encoder=encoder, data=folder, labels=tmp_path / "labels.csv", out=tmp_path / "scored",
                  label_column="diagnosis", anomaly="melanoma", bootstrap=50, progress=False)
    out = score(ScoreConfig(**config))
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "report.json", "roc.png", "scores.csv",
                                                      "tsne.png", "violin.png"]
    report = json.loads((out / "report.json").read_text())
    assert report["threshold_chosen_on"] == "validation"
    assert report["counts"] == {"validation": {"normal": 2, "anomaly": 2}, "test": {"normal": 6, "anomaly": 6}}
    assert 0 <= report["test"]["roc_auc"]["low"] <= report["test"]["roc_auc"]["auc"] <= report["test"]["roc_auc"]["high"]
    assert sum(map(sum, report["test"]["confusion_matrix"])) == 12
    lines = (out / "scores.csv").read_text().splitlines()
    assert lines[0] == "file,score,label,part" and len(lines) == 17
    with pytest.raises(OutputError):
        score(ScoreConfig(**config))
    with pytest.raises(DataError, match="no column 'label'"):
        score(ScoreConfig(**{**config, "label_column": "label", "out": tmp_path / "x"}))
    with pytest.raises(DataError, match="every scored image is in class 0"):
        score(ScoreConfig(**{**config, "anomaly": "basal", "out": tmp_path / "y"}))
