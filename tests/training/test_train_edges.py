"""The train command at its edges: Ctrl-C and its resume advice, runs that fail or stop
before a checkpoint, stale checkpoint temporaries, DataLoader-worker errors, notes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medgan_fast import cli
from medgan_fast.training.config import ConfigError, TrainConfig, describe_keys, field_names
from medgan_fast.training.loop import train

from .conftest import REPO, TINY, run_module, tiny_config, tiny_overrides

# Long enough to be interrupted: many 1-step epochs with a checkpoint at each epoch end.
LONG = {**TINY, "num_epochs": 400, "sample_crops": 4, "metrics": "", "sample_every": 1000}


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    import os
    return subprocess.Popen([sys.executable, "-m", "medgan_fast.train", *args], cwd=cwd,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _overrides(out: Path, **changes) -> list[str]:
    settings = {**LONG, "out": str(out), "run": "x", **changes}
    return [item for key, value in settings.items() for item in ("--set", f"{key}={value}")]


def test_ctrl_c_advice_names_the_interrupted_run_and_resumes_it(tmp_path):
    train(tiny_config(tmp_path, run="x", metrics=""))      # runs/x exists: the new run is x_2
    process = _start(_overrides(tmp_path), tmp_path)
    last = tmp_path / "x_2" / "checkpoints" / "last.pt"
    _wait_for(last.is_file, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == cli.EXIT_INTERRUPTED, stderr
    assert "--set run=x_2" in stderr and "--set resume=true" in stderr, stderr
    before = (tmp_path / "x" / "checkpoints" / "last.pt").read_bytes()
    resumed = run_module("-m", "medgan_fast.train", *_overrides(tmp_path, num_epochs=1), "--set", "run=x_2",
                         "--set", "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "x" / "checkpoints" / "last.pt").read_bytes() == before   # the other run is untouched


def test_ctrl_c_before_the_first_checkpoint_leaves_no_run_folder(tmp_path):
    process = _start(_overrides(tmp_path, checkpoint_every=0, num_epochs=1, sample_crops=4000), tmp_path)
    _wait_for(lambda: (tmp_path / "x" / "log.jsonl").is_file(), process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == cli.EXIT_INTERRUPTED
    assert "before the first checkpoint; nothing kept" in stderr
    assert not (tmp_path / "x").exists()


def test_a_data_error_leaves_no_empty_run_folder(tmp_path):
    result = run_module("-m", "medgan_fast.train", *tiny_overrides(tmp_path, data=str(tmp_path / "none")),
                        cwd=tmp_path)
    assert result.returncode == cli.EXIT_ERROR
    assert not (tmp_path / "tiny").exists()


def test_resume_removes_a_stale_checkpoint_temporary(tmp_path):
    summary = train(tiny_config(tmp_path, metrics=""))
    stale = summary.checkpoint.parent / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")    # what a SIGKILL during a checkpoint write leaves
    train(tiny_config(tmp_path, metrics="", num_epochs=2, resume=True))
    assert not stale.exists()


@pytest.mark.parametrize("workers", [0, 1])
def test_a_bad_file_is_one_line_with_or_without_loader_workers(tmp_path, workers):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(data / f"{i}.png")
    (data / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = run_module("-m", "medgan_fast.train", *tiny_overrides(tmp_path, data=str(data), loader_workers=workers),
                        cwd=tmp_path)
    assert result.returncode == cli.EXIT_ERROR
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("train: error: ") and "3.png" in lines[-1], result.stderr
    assert "Traceback" not in result.stderr and "worker" not in lines[-1]


def test_loader_workers_beyond_the_cores_are_clamped_with_a_note(tmp_path):
    result = run_module("-m", "medgan_fast.train", *tiny_overrides(tmp_path, loader_workers=64), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("loader_workers 64: this machine has") == 1
    assert "UserWarning" not in result.stderr


def test_arch_names_ignore_case_and_a_typo_gets_a_suggestion():
    assert TrainConfig(arch="dcgan").arch == "DCGAN" and TrainConfig(loss="Hinge").loss == "hinge"
    with pytest.raises(ConfigError, match="did you mean 'SNGAN'"):
        TrainConfig(arch="sngna")


def test_help_explains_every_key():
    result = run_module("-m", "medgan_fast.train", "--help", cwd=REPO)
    keys = [line.split(":")[0].strip() for line in result.stdout.splitlines() if line.startswith("  ")
            and ":" in line and line.split(":")[0].strip() in field_names()]
    assert keys == field_names()
    assert len(describe_keys()) == len(field_names()) and all("(default " in line for line in describe_keys())


def test_a_generator_control_file_says_which_values_win(tmp_path):
    checkpoint = train(tiny_config(tmp_path, metrics="")).checkpoint
    control = tmp_path / "generate.yaml"
    control.write_text(yaml.safe_dump({"arch": "Generator", "path": str(checkpoint), "image_size": 128,
                                       "latent_vector": 100, "run": "mine", "quantity": 2,
                                       "out": str(tmp_path / "fakes"), "n_gpu": 0}))
    result = run_module("-m", "medgan_fast.train", "--config", str(control), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "image_size 128 in the config is not used: the checkpoint's 64 wins" in result.stderr
    assert "latent_vector 100 in the config is not used: the checkpoint's 8 wins" in result.stderr
    assert "run 'mine' in the config is not used" in result.stderr


def test_n_gpu_without_a_gpu_says_so(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    summary_out = run_module("-m", "medgan_fast.train", *tiny_overrides(tmp_path, n_gpu=1, metrics=""), cwd=tmp_path)
    assert summary_out.returncode == 0
    assert summary_out.stdout.count("n_gpu 1: no CUDA GPU here") == 1
