"""The training loop: run directory contents, loss variants, exact resume after SIGKILL, DDP."""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from medgan_fast import train as train_command
from medgan_fast.training.checkpoint import CheckpointError, load_checkpoint
from medgan_fast.training.config import ConfigError, TrainConfig
from medgan_fast.training.data import build_dataset, build_loader
from medgan_fast.training.gan import discriminator_loss, generator_loss
from medgan_fast.training.loop import train
from medgan_fast.training.registry import ARCHITECTURES, Context
from medgan_fast.training.telemetry import read_log

from .conftest import run_module, tiny_config, tiny_overrides

STEP_FIELDS = ("step", "epoch", "time", "loss_d", "loss_g", "d_x", "d_g_z", "d_g_z2", "lr_generator",
               "lr_discriminator", "images_per_second")


def test_two_step_run_writes_the_run_directory(tmp_path):
    summary = train(tiny_config(tmp_path, checkpoint_every=1))
    run = tmp_path / "tiny"
    assert summary.run_dir == run and summary.steps == 2
    assert TrainConfig(**yaml.safe_load((run / "config.yaml").read_text())) == \
        tiny_config(tmp_path, checkpoint_every=1, data="sample")
    records = read_log(run / "log.jsonl")
    assert records[0]["event"] == "start" and any("G lr = 0.0002" in note for note in records[0]["notes"])
    steps = [record for record in records if "loss_d" in record]
    assert [record["step"] for record in steps] == [1, 2]
    for record in steps:
        assert set(STEP_FIELDS) <= set(record)
        assert record["epoch"] == 1 and record["images_per_second"] > 0
        assert 0 <= record["d_x"] <= 1 and 0 <= record["d_g_z"] <= 1
    assert "gpu_memory_used_mb" not in steps[0]   # CPU: no NVML readings
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == \
        ["last.pt", "step_00000001.pt", "step_00000002.pt"]
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    assert checkpoint["step"] == 2 and checkpoint["arch"] == "DCGAN" and set(checkpoint["models"]) == \
        {"generator", "discriminator"}
    with Image.open(run / "samples" / "epoch_0001.png") as grid:
        assert grid.mode == "RGB" and grid.size == (2 * 66 + 2, 2 * 66 + 2)   # 4 samples, 2 x 2
    with Image.open(run / "loss.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 400
    with Image.open(run / "evolution.gif") as gif:
        assert gif.format == "GIF"
    assert not list(run.glob(".*tmp")) and not list((run / "checkpoints").glob(".*tmp"))   # no temporaries left


def test_sample_grids_per_epoch_and_gif_frames(tmp_path):
    train(tiny_config(tmp_path, num_epochs=3, sample_every=2, number_channels=1))
    run = tmp_path / "tiny"
    assert sorted(path.name for path in (run / "samples").iterdir()) == ["epoch_0002.png", "epoch_0003.png"]
    with Image.open(run / "samples" / "epoch_0002.png") as grid:
        assert grid.mode == "L"
    with Image.open(run / "evolution.gif") as gif:
        assert gif.n_frames == 2


def test_existing_run_directory_gets_a_numbered_one(tmp_path):
    first, second = train(tiny_config(tmp_path)), train(tiny_config(tmp_path))
    assert first.run_dir.name == "tiny" and second.run_dir.name == "tiny_2"
    assert yaml.safe_load((second.run_dir / "config.yaml").read_text())["run"] == "tiny_2"


@pytest.mark.parametrize("changes", [
    dict(arch="SNGAN", loss="hinge", n_critic=2),
    dict(arch="DCGAN", label_smoothing=0.9, learning_rate=2),
    dict(arch="SNGAN", loss="bce", flip=True, number_channels=1),
], ids=["sngan-hinge-ncritic2", "dcgan-smoothing-ratio", "sngan-bce-grey"])
def test_variants_train(tmp_path, changes):
    summary = train(tiny_config(tmp_path, num_epochs=2, **changes))
    records = [record for record in read_log(summary.run_dir / "log.jsonl") if "loss_d" in record]
    assert len(records) == 4
    assert all(torch.isfinite(torch.tensor(record["loss_d"])) for record in records)
    if changes.get("learning_rate") == 2:
        assert records[0]["lr_discriminator"] == pytest.approx(0.0004)
        assert records[0]["lr_generator"] == pytest.approx(0.0002)


def test_n_critic_updates_the_generator_every_nth_step(tmp_path):
    config = tiny_config(tmp_path, n_critic=2)
    task = ARCHITECTURES["DCGAN"].task(Context(config))
    batch = next(iter(build_loader(build_dataset(config), config)[0]))
    before = [p.clone() for p in task.models["generator"].parameters()]
    metrics = task.train_step(batch, 0)
    assert "loss_g" not in metrics
    assert all(torch.equal(a, b) for a, b in zip(before, task.models["generator"].parameters()))
    metrics = task.train_step(batch, 1)
    assert "loss_g" in metrics
    assert not all(torch.equal(a, b) for a, b in zip(before, task.models["generator"].parameters()))


def test_losses():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    smoothed = bce(real, torch.full((2,), 0.9)) + bce(fake, torch.zeros(2))
    torch.testing.assert_close(discriminator_loss(real, fake, "bce", 0.9), smoothed)
    # BCE with logits is the users' Sigmoid + BCELoss.
    users = torch.nn.BCELoss()(torch.sigmoid(real), torch.ones(2)) + torch.nn.BCELoss()(torch.sigmoid(fake),
                                                                                         torch.zeros(2))
    torch.testing.assert_close(discriminator_loss(real, fake, "bce"), users)
    hinge = torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()
    torch.testing.assert_close(discriminator_loss(real, fake, "hinge"), hinge)
    torch.testing.assert_close(generator_loss(fake, "hinge"), -fake.mean())
    torch.testing.assert_close(generator_loss(fake, "bce"), bce(fake, torch.ones(2)))


# ---------------------------------------------------------------------------------------
# Resume

# Trains, and SIGKILLs itself right after training step KILL_AT, before its log line is written
# (the last checkpoint came before it, so step KILL_AT is lost and trained again on resume).
KILL_AT = 5
KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from medgan_fast.training import load_config, loop
    log_step = loop._log_step
    def log_then_die(position, *args, **kwargs):
        record = log_step(position, *args, **kwargs)
        if position.step == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        return record
    loop._log_step = log_then_die
    loop.train(load_config(None, [arg for arg in sys.argv[1:] if arg != "--set"]))
""").replace("KILL_AT", str(KILL_AT))


def _state(path: Path) -> dict:
    checkpoint = load_checkpoint(path)
    return {"models": checkpoint["models"], "optimizers": checkpoint["optimizers"], "step": checkpoint["step"]}


def _assert_equal(a, b, where="checkpoint"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{k}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("arch, workers", [("DCGAN", 2), ("SNGAN", 0)])
def test_resume_after_sigkill_ends_with_the_same_weights(tmp_path, arch, workers):
    # 3 steps an epoch, 2 epochs; checkpoints at steps 2 and 4 (mid-epoch) and epoch ends 3, 6.
    settings = dict(arch=arch, sample_crops=12, num_epochs=2, checkpoint_every=2, flip=True, loader_workers=workers)
    whole = train(tiny_config(tmp_path / "whole", **settings))

    killed = run_module("-c", KILLED_RUN, *tiny_overrides(tmp_path / "killed", **settings), cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = tmp_path / "killed" / "tiny"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    assert max(record["step"] for record in read_log(run / "log.jsonl")) == KILL_AT - 1

    resumed = train(tiny_config(tmp_path / "killed", resume=True, **settings))
    assert resumed.resumed_from == 4 and resumed.steps == 6 and resumed.run_dir == run
    _assert_equal(_state(whole.checkpoint), _state(resumed.checkpoint))
    steps = [record["step"] for record in read_log(run / "log.jsonl") if "loss_d" in record]
    assert steps == [1, 2, 3, 4, 5, 6]   # the lost step 5 logged once, after the resume
    whole_log = [record for record in read_log(whole.run_dir / "log.jsonl") if "loss_d" in record]
    resumed_log = [record for record in read_log(run / "log.jsonl") if "loss_d" in record]
    assert [r["loss_d"] for r in whole_log] == [r["loss_d"] for r in resumed_log]


def test_resume_errors(tmp_path):
    with pytest.raises(CheckpointError, match="resume: no checkpoint to resume at .*last.pt"):
        train(tiny_config(tmp_path, resume=True))
    train(tiny_config(tmp_path))
    with pytest.raises(ConfigError, match=r"resume: the config differs .* in gen_feature_maps 4 -> 8"):
        train(tiny_config(tmp_path, resume=True, gen_feature_maps=8))
    with pytest.raises(CheckpointError, match="no such file"):
        train(tiny_config(tmp_path, resume=str(tmp_path / "nothing.pt")))


def test_resume_extends_a_finished_run(tmp_path):
    train(tiny_config(tmp_path))
    summary = train(tiny_config(tmp_path, resume=True, num_epochs=2))
    assert summary.resumed_from == 2 and summary.steps == 4
    assert sorted(p.name for p in (summary.run_dir / "samples").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]


# ---------------------------------------------------------------------------------------
# Several processes

def test_ddp_two_cpu_processes(tmp_path):
    result = run_module("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "medgan_fast.train",
                        *tiny_overrides(tmp_path, arch="SNGAN", sample_crops=16, num_epochs=2, checkpoint_every=3),
                        cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [path.name for path in tmp_path.iterdir()] == ["tiny"]   # one run directory, from rank 0
    run = tmp_path / "tiny"
    assert result.stdout.count("run directory:") == 1
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    assert checkpoint["world_size"] == 2 and checkpoint["step"] == 4 and len(checkpoint["rng"]) == 2
    assert not torch.equal(checkpoint["rng"][0]["torch"], checkpoint["rng"][1]["torch"])   # own noise per rank
    records = [record for record in read_log(run / "log.jsonl") if "loss_d" in record]
    assert [record["step"] for record in records] == [1, 2, 3, 4]
    assert "2 process(es)" in json.dumps(read_log(run / "log.jsonl")[0])
    assert (run / "samples" / "epoch_0002.png").is_file() and (run / "evolution.gif").is_file()


# ---------------------------------------------------------------------------------------
# The command

def test_command_with_a_config_file_and_set(tmp_path):
    (tmp_path / "c.yaml").write_text(f"arch: DCGAN\nout: {tmp_path}\nrun: cli\nn_gpu: 0\n")
    settings = ("gen_feature_maps=4", "dis_feature_maps=4", "batch_size=4", "sample_crops=4", "num_epochs=1",
                "latent_vector=8", "sample_count=4")
    result = run_module("-m", "medgan_fast.train", "--config", str(tmp_path / "c.yaml"), "--no-progress",
                        *(item for setting in settings for item in ("--set", setting)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"run directory: {tmp_path / 'cli'}" in result.stdout
    assert "python -m medgan_fast.generate --checkpoint" in result.stdout
    assert (tmp_path / "cli" / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize("args, message", [
    (["--set", "leraning_rate=1"], "did you mean 'learning_rate'"),
    (["--set", "image_size=100"], "image_size: expected one of 64, 128, 256, got 100"),
    (["--set", "data=/no/such/folder"], "data /no/such/folder: no such folder"),
    (["--set", "arch=Generator", "--set", "path=/no/such.pt"], "/no/such.pt: no such file"),
])
def test_command_errors_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        train_command.main(args)
    error = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and "\n" not in error
    assert error.startswith("train: error: ") and message in error
    assert not any(tmp_path.rglob("*.pt"))


def test_command_error_exits_non_zero_without_traceback(tmp_path):
    result = run_module("-m", "medgan_fast.train", "--set", "loss=foo", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "train: error: loss: expected one of bce, hinge, got 'foo'"


def test_command_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        train_command.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "python -m medgan_fast.train --config configs/users_dcgan64.yaml" in text
    assert "torchrun --nproc_per_node" in text and "resume=true" in text and "label_smoothing" in text


@pytest.mark.slow
def test_command_without_arguments_trains_on_the_sample(tmp_path):
    # The README's first run: a few minutes on a 2-core CPU.
    result = run_module("-m", "medgan_fast.train", "--no-progress", cwd=tmp_path, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "dcgan64_sample"
    assert f"run directory: {Path('runs') / 'dcgan64_sample'}" in result.stdout
    config = TrainConfig(**yaml.safe_load((run / "config.yaml").read_text()))
    assert len(list((run / "samples").glob("epoch_*.png"))) == config.num_epochs
    assert (run / "evolution.gif").is_file() and (run / "checkpoints" / "last.pt").is_file()
