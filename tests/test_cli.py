"""The one command-line layer (medgan_fast.cli) and the edges of patches, generate and
evaluate: exit codes, one-line errors, Ctrl-C, existing outputs, output names."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medgan_fast import cli, console
from medgan_fast.__main__ import COMMANDS, command_summaries

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def run(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def interrupt_after(args: list[str], cwd: Path, ready: str, delay: float, timeout: float = 120):
    """Starts `python -m args`, waits until stderr shows `ready`, sleeps `delay`, sends
    SIGINT (Ctrl-C); returns (exit code, stderr, seconds from SIGINT to exit)."""
    process = subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    seen = ""
    deadline = time.monotonic() + timeout
    while ready not in seen:
        line = process.stderr.readline()
        assert line or process.poll() is None, f"ended before {ready!r}: {seen}"
        seen += line
        assert time.monotonic() < deadline
    time.sleep(delay)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=timeout)
    return process.returncode, seen + rest, time.monotonic() - sent


# ---------------------------------------------------------------------------------------
# The runner

@pytest.mark.parametrize("name", ["", *[name for name, _ in command_summaries()]])
def test_every_command_has_help_with_an_example_and_refuses_unknown_arguments(name, capsys):
    module = importlib.import_module(f"medgan_fast.{name}" if name else "medgan_fast.__main__")
    with pytest.raises(SystemExit) as shown:
        module.main(["--help"])
    out = capsys.readouterr().out
    assert shown.value.code == 0 and "example" in out and "--debug" in out
    with pytest.raises(SystemExit) as refused:
        module.main(["--no-such-flag"])
    err = capsys.readouterr().err
    assert refused.value.code == cli.EXIT_USAGE
    assert "unrecognized arguments: --no-such-flag" in err.splitlines()[-1] and "Traceback" not in err


def test_the_command_list_covers_every_command_module():
    present = {path.stem for path in (REPO / "medgan_fast").glob("*.py")} & set(COMMANDS)
    assert {name for name, _ in command_summaries()} == present >= {"patches", "train", "generate", "evaluate"}


def test_a_known_error_is_one_line_and_debug_shows_the_traceback(tmp_path):
    plain = run("medgan_fast.patches", "--images", "a", "--masks", "b", "--out", "x.h5", cwd=tmp_path)
    assert plain.returncode == cli.EXIT_ERROR
    assert plain.stderr.strip().count("\n") == 0 and plain.stderr.startswith("patches: error: ")
    debug = run("medgan_fast.patches", "--images", "a", "--masks", "b", "--out", "x.h5", "--debug", cwd=tmp_path)
    assert debug.returncode == cli.EXIT_ERROR and "Traceback" in debug.stderr


def _job_that_swallows_ctrl_c(args):
    try:
        signal.raise_signal(signal.SIGINT)   # raised inside, e.g., a finaliser, and lost
    except KeyboardInterrupt:
        pass
    for _ in console.progress(range(3), False):
        raise AssertionError("the step after a swallowed Ctrl-C ran")


def test_a_swallowed_ctrl_c_still_stops_the_command(capsys):
    before = signal.getsignal(signal.SIGINT)   # SIG_IGN when the tests run in the background (nohup)
    with pytest.raises(SystemExit) as stopped:
        cli.main("demo", lambda: __import__("argparse").ArgumentParser(), _job_that_swallows_ctrl_c, [])
    assert stopped.value.code == cli.EXIT_INTERRUPTED
    assert "demo: interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before


def _job_whose_ctrl_c_comes_out_as_another_error(args):
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt as interrupt:   # as matplotlib's pybind11 layer does mid-draw
        raise ValueError("Invalid bounding box") from interrupt


def test_a_ctrl_c_turned_into_another_error_by_an_extension_is_still_an_interrupt(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main("demo", lambda: __import__("argparse").ArgumentParser(),
                 _job_whose_ctrl_c_comes_out_as_another_error, [])
    assert stopped.value.code == cli.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "demo: interrupted" in err and "Invalid bounding box" not in err


def test_a_worker_error_is_one_line():
    wrapped = ValueError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                         "last):\n  File \"x.py\", line 1, in f\nmedgan_fast.data.images.DataError: bad.png: "
                         "truncated")
    assert cli.one_line(wrapped) == "bad.png: truncated"


def test_progress_bars_only_on_a_terminal(tmp_path):
    done = run("medgan_fast.patches", cwd=tmp_path)   # stderr is a pipe here
    assert done.returncode == 0
    assert "it/s" not in done.stderr and "%|" not in done.stderr
    assert done.stderr.splitlines()[0] == "patches: writing patches.h5 and patches_contact_sheet.png"


# ---------------------------------------------------------------------------------------
# patches

@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    """80 image/mask pairs of 384 px: a few seconds of patches with --impl reference."""
    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (root / folder).mkdir()
    for i in range(80):
        Image.fromarray(rng.integers(0, 256, (384, 384), dtype=np.uint8)).save(root / "images" / f"{i:03d}.png")
        Image.fromarray((rng.random((384, 384)) > 0.7).astype(np.uint8) * 255).save(root / "masks" / f"{i:03d}.png")
    return root


@pytest.mark.parametrize("delay", [0.0, 0.5])
def test_ctrl_c_during_patches_stops_promptly_and_leaves_nothing(many_images, tmp_path, delay):
    code, stderr, seconds = interrupt_after(
        ["medgan_fast.patches", "--images", str(many_images / "images"), "--masks", str(many_images / "masks"),
         "--out", str(tmp_path / "p.h5"), "--mode", "texture", "--impl", "reference"], tmp_path, "writing", delay)
    assert code == cli.EXIT_INTERRUPTED, stderr
    assert "patches: interrupted; nothing written" in stderr
    assert "Exception ignored" not in stderr and "Traceback" not in stderr
    # 0.6-2.3 s on an idle 2-core VM (interpreter exit included), 6 s with another test run beside it
    assert seconds < 10
    assert list(tmp_path.iterdir()) == []


def test_an_existing_patch_set_is_refused_and_overwrite_replaces_it(tmp_path):
    assert run("medgan_fast.patches", cwd=tmp_path).returncode == 0
    before = (tmp_path / "patches.h5").stat().st_mtime_ns
    again = run("medgan_fast.patches", cwd=tmp_path)
    assert again.returncode == cli.EXIT_ERROR
    assert "--out patches.h5: already exists; give --overwrite" in again.stderr
    assert (tmp_path / "patches.h5").stat().st_mtime_ns == before
    assert run("medgan_fast.patches", "--overwrite", "--size", "32", cwd=tmp_path).returncode == 0
    import h5py
    with h5py.File(tmp_path / "patches.h5") as file:
        assert file["images"].shape[-1] == 32


def test_a_contact_sheet_never_clobbers_an_unrelated_file(tmp_path):
    (tmp_path / "patches_contact_sheet.png").write_bytes(b"someone else's file")
    refused = run("medgan_fast.patches", cwd=tmp_path)
    assert refused.returncode == cli.EXIT_ERROR and "contact sheet" in refused.stderr
    assert (tmp_path / "patches_contact_sheet.png").read_bytes() == b"someone else's file"
    assert not (tmp_path / "patches.h5").exists()
    assert run("medgan_fast.patches", "--no-contact-sheet", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("out, expected", [
    ("x.png", "expected a file name ending in .h5 or .hdf5"),
    ("a_file/x.h5", "is a file, so folder"),
])
def test_output_names_are_checked_before_any_work(tmp_path, out, expected):
    (tmp_path / "a_file").write_text("")
    refused = run("medgan_fast.patches", "--out", out, cwd=tmp_path)
    assert refused.returncode == cli.EXIT_ERROR and expected in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_missing_output_folder_is_made(tmp_path):
    assert run("medgan_fast.patches", "--out", "new/sub/p.h5", cwd=tmp_path).returncode == 0
    assert (tmp_path / "new" / "sub" / "p.h5").is_file()


def test_a_jpeg_mask_needs_a_threshold(tmp_path):
    from skimage import data
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    image = data.coins()
    Image.fromarray(image).save(tmp_path / "images" / "coins.png")
    Image.fromarray(((image > 110) * 255).astype(np.uint8)).save(tmp_path / "masks" / "coins.jpg", quality=75)
    args = ["medgan_fast.patches", "--images", "images", "--masks", "masks", "--out", "c.h5"]
    refused = run(*args, cwd=tmp_path)
    assert refused.returncode == cli.EXIT_ERROR and "lossy (JPEG)" in refused.stderr and "--threshold" in refused.stderr
    done = run(*args, "--threshold", "128", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    from scipy import ndimage
    expected = ndimage.label(np.asarray(Image.open(tmp_path / "masks" / "coins.jpg")) >= 128, np.ones((3, 3)))[1]
    assert f"found {expected} components" in done.stdout


# ---------------------------------------------------------------------------------------
# generate and evaluate

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from medgan_fast.training.config import TrainConfig
    from medgan_fast.training.loop import train
    out = tmp_path_factory.mktemp("trained")
    return train(TrainConfig(gen_feature_maps=4, dis_feature_maps=4, latent_vector=8, batch_size=4, sample_crops=8,
                             num_epochs=1, loader_workers=0, sample_count=4, progress=False, n_gpu=0, metrics="",
                             out=str(out), run="tiny")).checkpoint


def test_generate_refuses_a_folder_of_pngs_and_overwrite_empties_it_first(checkpoint, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "999999.png").write_bytes(b"old")
    args = ["medgan_fast.generate", "--checkpoint", str(checkpoint), "--quantity", "3", "--out", "out"]
    refused = run(*args, cwd=tmp_path)
    assert refused.returncode == cli.EXIT_ERROR and "already holds 1 *.png" in refused.stderr
    assert run(*args, "--overwrite", cwd=tmp_path).returncode == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000000.png", "000001.png", "000002.png"]


def test_evaluate_refuses_an_existing_json(tmp_path):
    (tmp_path / "evaluation.json").write_text("{}")
    refused = run("medgan_fast.evaluate", cwd=tmp_path)
    assert refused.returncode == cli.EXIT_ERROR and "--overwrite" in refused.stderr
    assert (tmp_path / "evaluation.json").read_text() == "{}"


def _not_checkpoints(folder: Path) -> list[Path]:
    files = [folder / "random.pt", folder / "model.pt", folder / "other_state_dict.pt"]
    files[0].write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save(torch.nn.Linear(2, 2), files[1])
    torch.save(torch.nn.Conv2d(1, 2, 3).state_dict(), files[2])
    return files


@pytest.mark.parametrize("command", ["generate", "evaluate", "train"])
def test_a_file_that_is_not_a_checkpoint_gets_our_message(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"medgan_fast.{command}")
    for path in _not_checkpoints(tmp_path):
        args = {"generate": ["--checkpoint", str(path)], "evaluate": ["--real", str(path), "--fake", str(path)],
                "train": ["--set", f"resume={path}"]}[command]
        with pytest.raises(SystemExit) as stopped:
            module.main([*args, "--no-progress"])
        err = capsys.readouterr().err
        assert stopped.value.code == cli.EXIT_ERROR, err
        errors = [line for line in err.splitlines() if ": error: " in line]
        assert len(errors) == 1 and f"not a medgan_fast checkpoint: {path}" in errors[0], err
        assert "weights_only" not in err and "Traceback" not in err
