"""U-Net segmentation through the framework (arch UNet) and the segment command: training
on image/mask folders writes the run directory with best.pt, resume is exact, evaluate and
predict read its checkpoint, and bad input is one clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medgan_fast import cli
from medgan_fast.errors import DataError
from medgan_fast.jobs.segmentation import PredictConfig, ScoreConfig, evaluate_segmentation, predict_masks
from medgan_fast.training import CheckpointError, ConfigError, load_config, train
from medgan_fast.training.checkpoint import load_checkpoint
from medgan_fast.training.segmentation import segmentation_loss

from .conftest import REPO, run_module

TINY_UNET = ["arch=UNet", "image_size=64", "number_channels=1", "depth=2", "width=4", "batch_size=4",
             "num_epochs=2", "loader_workers=0", "metrics=", "n_gpu=0", "progress=false", "log_every=1",
             "learning_rate=0.01", "val_fraction=0.25", "checkpoint_every=0"]


def _config(root, out, *more):
    return load_config(None, [*TINY_UNET, f"data={root / 'images'}", f"masks={root / 'masks'}",
                              f"split={root / 'train.csv'}", f"out={out}", "run=unet", *more])


def test_losses_of_a_perfect_and_a_wrong_prediction():
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:6, 2:6] = 1
    right, wrong = (mask * 2 - 1) * 20, (1 - mask * 2) * 20
    for kind in ("bce", "dice", "bce+dice"):
        assert segmentation_loss(right, mask, kind) < 0.01 < 0.9 < segmentation_loss(wrong, mask, kind)
    classes = mask[:, 0].long()
    logits = torch.nn.functional.one_hot(classes, 2).permute(0, 3, 1, 2).float() * 20
    assert segmentation_loss(logits, classes, "bce+dice") < 0.01


def test_training_writes_the_run_and_resumes_exactly(disks, tmp_path):
    summary = train(_config(disks, tmp_path / "a", "num_epochs=3", "monitor=val_dice max"))
    run = summary.run_dir
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "loss.png").is_file()
    assert sorted(p.name for p in (run / "samples").iterdir()) == [f"validation_epoch_000{e}.png" for e in (1, 2, 3)]
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    validation = [r for r in records if r.get("event") == "validation"]
    assert len(validation) == 3 and set(validation[0]) >= {"val_loss", "val_dice", "val_iou", "val_accuracy"}
    assert summary.best["metric"] == "val_dice" and summary.best["value"] == max(r["val_dice"] for r in validation)
    assert "6 images" in summary.data   # 8 split ids, 2 held out
    latest = json.loads((run / "metrics.json").read_text())
    assert latest["validation"]["val_dice"] == validation[-1]["val_dice"] and latest["best"] == summary.best
    train(_config(disks, tmp_path / "b", "num_epochs=2", "monitor=val_dice max"))
    resumed = train(_config(disks, tmp_path / "b", "num_epochs=3", "monitor=val_dice max", "resume=true"))
    a, b = (load_checkpoint(s.run_dir / "checkpoints" / "last.pt") for s in (summary, resumed))
    assert a["best"] == b["best"]
    for key, value in a["models"]["unet"].items():
        assert torch.equal(value, b["models"]["unet"][key]), key


def test_evaluate_and_predict_read_the_checkpoint(disks, tmp_path):
    checkpoint = train(_config(disks, tmp_path)).run_dir / "checkpoints" / "best.pt"
    scores = evaluate_segmentation(ScoreConfig(checkpoint, disks / "images", disks / "masks", disks / "test.csv",
                                               out=tmp_path / "scores.json", progress=False, device="cpu"))
    record = json.loads((tmp_path / "scores.json").read_text())
    assert set(record) >= {"iou", "dice", "accuracy"} and record["images"] == 4
    assert sorted(record["dice"]["per_image"]) == ["08", "09", "10", "11"]
    assert record["dice"]["mean"] == pytest.approx(np.mean(list(record["dice"]["per_image"].values())))
    assert "dice" in str(scores)
    for tile in (None, 32):
        out = tmp_path / f"masks_{tile}"
        predict_masks(PredictConfig(checkpoint, disks / "images", out, tile=tile, overlap=8, progress=False,
                                    device="cpu"))
        written = sorted(out.iterdir())
        assert len(written) == 12
        mask = np.asarray(Image.open(written[0]))
        assert mask.shape == (80, 96) and set(np.unique(mask)) <= {0, 255}
    only = tmp_path / "test_masks"
    predict_masks(PredictConfig(checkpoint, disks / "images", only, split=disks / "test.csv", progress=False,
                                device="cpu"))
    assert sorted(path.stem for path in only.iterdir()) == ["08", "09", "10", "11"]


def test_a_checkpoint_of_another_architecture_is_refused(trained_checkpoint, disks, tmp_path):
    with pytest.raises(CheckpointError, match=r"a 'DCGAN' checkpoint is not a segmentation model"):
        predict_masks(PredictConfig(trained_checkpoint, disks / "images", tmp_path / "out", progress=False))
    assert not (tmp_path / "out").exists()


def test_segment_command_trains_on_the_sample_and_errors_are_one_line(tmp_path):
    done = run_module("-m", "medgan_fast.segment", "train", "--epochs", "1", "--set", "width=4", "--set", "depth=2",
                      "--out", str(tmp_path), cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "unet_sample" / "checkpoints" / "best.pt").is_file()
    refused = run_module("-m", "medgan_fast.segment", "train", "--images", str(tmp_path), cwd=tmp_path)
    assert refused.returncode == cli.EXIT_USAGE and "--masks DIR is required" in refused.stderr
    missing = run_module("-m", "medgan_fast.segment", "evaluate", "--checkpoint", str(tmp_path / "nope.pt"),
                         "--images", str(REPO), "--masks", str(REPO), cwd=tmp_path)
    assert missing.returncode == cli.EXIT_ERROR and "nope.pt: no such file" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_segment_train_options_override_a_config_file_only_when_given():
    from medgan_fast import segment

    parser = segment.build_parser()
    with_file = segment.train_overrides(parser.parse_args(["train", "--config", "configs/segment_emps.yaml",
                                                            "--epochs", "2"]))
    assert with_file == ["arch=UNet", "num_epochs=2"]
    config = load_config(REPO / "configs" / "segment_emps.yaml", with_file)
    assert config.num_epochs == 2 and config.image_size == 128 and config.options["split"].endswith("train.csv")
    alone = segment.train_overrides(parser.parse_args(["train", "--images", "i", "--masks", "m", "--extra", "a.h5",
                                                       "b.h5"]))
    assert {"data=i", "masks=m", "extra=a.h5,b.h5", "num_epochs=30", "run=unet128"} <= set(alone)
    with pytest.raises(cli.UsageError, match="--masks DIR is required"):
        segment.train_overrides(parser.parse_args(["train", "--images", "i"]))


def test_class_maps_train_with_num_classes(disks, tmp_path):
    # The instance ids 1..3 of the disks read as classes 1..3 beside the background 0.
    summary = train(_config(disks, tmp_path, "num_classes=4", "segmentation_loss=bce+dice"))
    assert 0 <= summary.validation["val_dice"] <= 1
    with pytest.raises(DataError, match=r"mask value 3 is not a class id for num_classes 3"):
        train(_config(disks, tmp_path, "num_classes=3", "run=three"))


SSTEM = REPO.parent / "shared" / "data" / "em_vnc_sstem"


@pytest.mark.skipif(not SSTEM.is_dir(), reason="../shared/data/em_vnc_sstem is not here")
def test_the_sstem_split_is_fixed_and_disjoint():
    from medgan_fast.data.segmentation import segmentation_pairs

    splits = {name: segmentation_pairs(SSTEM / "raw", SSTEM / "mitochondria", REPO / "configs" / "splits" /
                                       f"sstem_{name}.csv") for name in ("train", "test")}
    stems = {name: [image.stem for image, _ in pairs] for name, pairs in splits.items()}
    # 01, 07 and 18 are left out: their mitochondria masks are empty (see the config)
    assert stems["train"] == [f"{i:02d}" for i in range(16) if i not in (1, 7)] and stems["test"] == ["16", "17", "19"]
    assert all(mask.parent.name == "mitochondria" for _, mask in splits["test"])


def test_a_unet_trains_on_a_patch_set_with_a_seeded_validation_part(pairs, tmp_path):
    from medgan_fast.training.segmentation import UNetTask
    config = load_config(None, [*TINY_UNET, f"data={pairs}", f"out={tmp_path}", "run=patches"])
    training, validation = UNetTask.datasets(config)
    assert (len(training), len(validation)) == (9, 3)
    assert validation.indices == UNetTask.datasets(config)[1].indices
    summary = train(config)
    assert summary.best is not None and (summary.run_dir / "checkpoints" / "best.pt").is_file()
    with pytest.raises(ConfigError, match="a patch set holds its own masks"):
        UNetTask.datasets(load_config(None, [*TINY_UNET, f"data={pairs}", "masks=somewhere"]))


def test_the_cosine_schedule_falls_to_zero_over_the_epochs(disks, tmp_path):
    summary = train(_config(disks, tmp_path, "num_epochs=4", "lr_schedule=cosine"))
    records = [json.loads(line) for line in (summary.run_dir / "log.jsonl").read_text().splitlines()]
    rates = {r["epoch"]: r["lr_unet"] for r in records if "lr_unet" in r}
    assert [round(rates[e] / 0.01, 4) for e in (1, 2, 3, 4)] == [1.0, 0.8536, 0.5, 0.1464]
    checkpoint = load_checkpoint(summary.run_dir / "checkpoints" / "last.pt")
    assert checkpoint["schedulers"]["unet"]["last_epoch"] == 4
