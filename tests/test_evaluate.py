"""The `evaluate` command, medgan_fast.jobs.evaluation and medgan_fast.metrics.comparison:
folders, HDF5 sets, checkpoints, the pairing rule, the demo, the JSON file, and one-line
errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from medgan_fast import evaluate as evaluate_command
from medgan_fast._version import __version__
from medgan_fast.data.images import DataError
from medgan_fast.data.patchset import PatchSetWriter, make_meta
from medgan_fast.metrics import distribution, quality
from medgan_fast.jobs.evaluation import EvaluateConfig, evaluate, load_set
from medgan_fast.jobs.generation import GenerateConfig, generate
from medgan_fast.metrics.comparison import HIGHER_IS_BETTER, METRICS, compute_metrics, pair_indices
from medgan_fast.training.config import TrainConfig
from medgan_fast.training.loop import train

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "medgan_fast.evaluate", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _blobs(count: int, size: int, channels: int = 3, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    """(count, size, size[, channels]) uint8 smooth random images (textures the metrics can tell apart)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((count, channels, size // 8 + 1, size // 8 + 1))
    images = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(size, size), mode="bicubic",
                                             align_corners=False).clamp(0, 1).numpy()
    images = np.clip(images + shift, 0, 1)
    images = (images * 255).round().astype(np.uint8)
    return np.moveaxis(images, 1, -1)[..., 0] if channels == 1 else np.moveaxis(images, 1, -1)


def _folder(path: Path, images: np.ndarray, suffix: str = ".png") -> Path:
    path.mkdir(parents=True)
    for index, image in enumerate(images):
        if suffix == ".png":
            Image.fromarray(image).save(path / f"{index:03d}.png")
        else:
            tifffile.imwrite(path / f"{index:03d}{suffix}", image)
    return path


def _patch_set(path: Path, images: np.ndarray) -> Path:
    """images: (N, C, H, W) -> an HDF5 patch set at path."""
    size = images.shape[-1]
    with PatchSetWriter(path, size, {"mode": "full"}) as writer:
        writer.append(images, np.ones((len(images), 1, size, size), bool),
                      make_meta(len(images), "test", -1, np.arange(1, len(images) + 1), (0, 0, size, size),
                                size * size, 0))
    return path


def _config(real, fake, out, **changes) -> EvaluateConfig:
    return EvaluateConfig(real=real, fake=fake, out=out, progress=False, **changes)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """checkpoints/last.pt of a 2-step tiny RGB DCGAN-64 run (no training metrics: fast)."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(gen_feature_maps=4, dis_feature_maps=4, latent_vector=8, batch_size=4, sample_crops=8,
                         num_epochs=1, loader_workers=0, sample_count=4, progress=False, n_gpu=0, out=str(out),
                         run="tiny", metrics="")
    return train(config).checkpoint


# ---------------------------------------------------------------------------------------
# Pairing


def test_pair_indices():
    every = pair_indices(3, 5, 64)
    assert every.tolist() == [[0, 1, 2, 3, 4]] * 3          # at most K real images: all of them
    assert pair_indices(2, 5, 0).tolist() == [[0, 1, 2, 3, 4]] * 2   # 0: no limit
    some = pair_indices(6, 100, 7, seed=3)
    assert some.shape == (6, 7)
    for i, row in enumerate(some.tolist()):
        assert row == sorted(set(row))                     # distinct, sorted
        expected = np.sort(np.random.default_rng((3, i)).choice(100, 7, replace=False))
        assert row == expected.tolist()                    # fake i's own generator
    assert torch.equal(pair_indices(6, 100, 7, seed=3)[:2], pair_indices(2, 100, 7, seed=3))
    assert not torch.equal(some, pair_indices(6, 100, 7, seed=4))


def test_paired_value_is_the_mean_over_each_fakes_real_images():
    generator = torch.Generator().manual_seed(0)
    real, fake = torch.rand(5, 1, 32, 32, generator=generator), torch.rand(3, 1, 32, 32, generator=generator)
    result = compute_metrics(real, fake, ("psnr", "ssim"), pairs_per_image=2, seed=1, batch_size=4)
    pairs = pair_indices(3, 5, 2, seed=1)
    for name in ("psnr", "ssim"):
        per_fake = torch.stack([
            torch.stack([quality.QUALITY_METRICS[name](fake[i:i + 1], real[j:j + 1]) for j in pairs[i].tolist()]).mean()
            for i in range(3)]).double()
        value = result.values[name]
        assert value.value == pytest.approx(per_fake.mean().item(), rel=1e-5)
        assert value.details["std"] == pytest.approx(per_fake.std().item(), rel=1e-4)
        assert value.details["pairs_per_image"] == 2 and value.details["pairs"] == 6
    # The batch size does not change the values.
    again = compute_metrics(real, fake, ("psnr",), pairs_per_image=2, seed=1, batch_size=1)
    assert again.values["psnr"].value == pytest.approx(result.values["psnr"].value, rel=1e-6)


def test_identical_sets_score_perfectly():
    images = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    result = compute_metrics(images, images, ("ssim", "gmsd", "haarpsi", "swd"))
    assert result.values["ssim"].value == pytest.approx(1.0, abs=1e-5)
    assert result.values["gmsd"].value == pytest.approx(0.0, abs=1e-5)
    assert result.values["haarpsi"].value == pytest.approx(1.0, abs=1e-4)
    assert result.values["swd"].value == 0.0


# ---------------------------------------------------------------------------------------
# Sets


def test_folders_table_and_json(tmp_path):
    real = _folder(tmp_path / "real", _blobs(5, 48, seed=1))
    Image.fromarray(_blobs(1, 64, seed=9)[0][:, :56]).save(real / "wide.png")   # 64x56: resized and cropped
    fake = _folder(tmp_path / "fake", _blobs(4, 32, seed=2))
    out = tmp_path / "results.json"
    names = ("psnr", "ssim", "ms_ssim", "haarpsi", "swd", "ms_ssim_diversity", "fid")
    result = evaluate(_config(real, fake, out, metrics=",".join(names)))
    assert list(result.values) == ["psnr", "ssim", "haarpsi", "swd", "ms_ssim_diversity"]
    assert "161x161" in result.skipped["ms_ssim"] and "--inception" in result.skipped["fid"]
    assert result.real.images.shape == (6, 3, 32, 32) and result.fake.images.shape == (4, 3, 32, 32)
    assert "6 of 6 resized and centre-cropped to 32x32" in result.real.description
    table = result.table()
    assert "ssim" in table and "higher is better" in table and "lower is better" in table
    assert "skipped: x and y must be at least 161x161" in table
    record = json.loads(out.read_text())
    assert record["package_version"] == __version__ and record["demo"] is False
    assert record["real"] == {"path": str(real), "kind": "folder", "count": 6,
                              "description": "6 of 6 resized and centre-cropped to 32x32"}
    assert record["fake"]["count"] == 4 and record["image_size"] == [32, 32] and record["channels"] == 3
    assert record["settings"]["pairs_per_image_used"] == 6 and record["settings"]["metrics"] == list(names)
    for name, value in record["metrics"].items():
        assert value["higher_is_better"] == HIGHER_IS_BETTER[name]
        assert value["direction"] == ("higher is better" if HIGHER_IS_BETTER[name] else "lower is better")
        assert np.isfinite(value["value"])
    assert record["metrics"]["ssim"]["pairs"] == 24
    assert set(record["metrics"]["swd"]["levels"]) == {"32", "16"}
    assert 0 <= record["metrics"]["ms_ssim_diversity"]["real_value"] <= 1
    assert set(record["skipped"]) == {"ms_ssim", "fid"}
    assert [path.name for path in tmp_path.iterdir() if path.is_file()] == ["results.json"]   # no temporaries


def test_closer_fakes_score_better(tmp_path):
    real = _blobs(6, 32, seed=1)
    near = np.clip(real.astype(int) + np.random.default_rng(0).integers(-8, 9, real.shape), 0, 255).astype(np.uint8)
    far = _blobs(6, 32, seed=5, shift=0.3)
    _folder(tmp_path / "real", real)
    _folder(tmp_path / "near", near)
    _folder(tmp_path / "far", far)
    scores = {name: evaluate(_config(tmp_path / "real", tmp_path / name, None, metrics="psnr,ssim,swd",
                                     pairs_per_image=1)).values for name in ("near", "far")}
    assert scores["near"]["psnr"].value > scores["far"]["psnr"].value
    assert scores["near"]["swd"].value < scores["far"]["swd"].value


def test_hdf5_sets_and_16_bit_data_range(tmp_path):
    images = _blobs(4, 32, channels=1, seed=3)                                # uint8 (4, 32, 32)
    twelve_bit = images.astype(np.uint16) * 16                                 # 12-bit values in 16-bit files
    fake = _patch_set(tmp_path / "fake.h5", twelve_bit[:, None])
    real = _folder(tmp_path / "real", twelve_bit, suffix=".tif")
    # By dtype, 16-bit is / 65535: dark images. With --data-range 4080 (the value of white) they
    # are the 8-bit images / 255, on both sides.
    dark = evaluate(_config(real, fake, None, metrics="ssim"))
    scaled = evaluate(_config(real, fake, tmp_path / "r.json", metrics="ssim", data_range=4080))
    expected = torch.from_numpy(images[:, None] / 255).float()
    torch.testing.assert_close(scaled.real.images, expected)
    torch.testing.assert_close(scaled.fake.images, expected)
    assert dark.real.images.max() <= 4080 / 65535 + 1e-6
    assert scaled.fake.kind == "patch set" and scaled.fake.channels == 1 and scaled.real.kind == "folder"
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["data_range"] == 4080
    with pytest.raises(DataError, match=r"--fake .*fake\.h5\[0\]: values in \[\d+, 4080\] are outside "
                                        r"\[0, --data-range 255\]"):
        evaluate(_config(real, fake, None, metrics="ssim", data_range=255))


def test_checkpoint_is_the_images_generate_writes(checkpoint, tmp_path):
    real = _folder(tmp_path / "real", _blobs(3, 64, seed=4))
    from_checkpoint = evaluate(_config(real, checkpoint, tmp_path / "c.json", metrics="psnr,ssim,swd", quantity=5,
                                       seed=2, batch_size=2))
    assert from_checkpoint.fake.kind == "checkpoint" and len(from_checkpoint.fake) == 5
    assert "DCGAN-64 generator at step 2, latent seed 2" in from_checkpoint.fake.description
    generate(GenerateConfig(checkpoint, quantity=5, out=tmp_path / "pngs", seed=2, progress=False))
    from_pngs = evaluate(_config(real, tmp_path / "pngs", None, metrics="psnr,ssim,swd", seed=2))
    torch.testing.assert_close(from_checkpoint.fake.images, from_pngs.fake.images, rtol=0, atol=0)
    for name in ("psnr", "ssim", "swd"):
        assert from_checkpoint.values[name].value == pytest.approx(from_pngs.values[name].value)
    record = json.loads((tmp_path / "c.json").read_text())
    assert record["fake"]["kind"] == "checkpoint" and record["settings"]["quantity"] == 5


def test_fid_and_kid_with_a_local_inception_file(tmp_path):
    class TinyInception(torch.nn.Module):   # the interface of load_inception's TorchScript files
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1))

        def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            x = images.float() / 255
            return torch.cat([x.mean((2, 3)), x.std((2, 3)), x[:, :, ::4, ::4].flatten(2).mean(2) ** 2], 1) * self.scale

    with warnings.catch_warnings():   # TorchScript is deprecated, but it is the form Inception weights ship in
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(TinyInception()).save(str(tmp_path / "inception.pt"))
    _folder(tmp_path / "real", _blobs(6, 24, seed=1))
    _folder(tmp_path / "fake", _blobs(6, 24, seed=2, shift=0.2))
    result = evaluate(_config(tmp_path / "real", tmp_path / "fake", None, metrics="fid,kid",
                              inception=tmp_path / "inception.pt"))
    features = [distribution.inception_features(images, distribution.load_inception(tmp_path / "inception.pt"))
                for images in (result.real.images, result.fake.images)]
    assert result.values["fid"].value == pytest.approx(distribution.fid_from_features(*features))
    assert result.values["kid"].value == pytest.approx(distribution.kid_from_features(*features))
    assert result.values["fid"].value > 0 and not result.skipped


# ---------------------------------------------------------------------------------------
# Errors


def _mixed_channels(tmp_path):
    _folder(tmp_path / "real", _blobs(2, 16, seed=1))
    Image.fromarray(_blobs(1, 16, channels=1)[0]).save(tmp_path / "real" / "grey.png")
    _folder(tmp_path / "fake", _blobs(2, 16))


def _grey_fake(tmp_path):
    _folder(tmp_path / "real", _blobs(2, 16))
    _folder(tmp_path / "fake", _blobs(2, 16, channels=1))


def _empty_real(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "notes.txt").write_text("no images")
    _folder(tmp_path / "fake", _blobs(2, 16))


def _fake_sizes_differ(tmp_path):
    _folder(tmp_path / "real", _blobs(2, 16))
    _folder(tmp_path / "fake", _blobs(1, 16))
    Image.fromarray(_blobs(1, 24)[0]).save(tmp_path / "fake" / "big.png")


def _both(tmp_path):
    _folder(tmp_path / "real", _blobs(2, 16))
    _folder(tmp_path / "fake", _blobs(2, 16))


BAD_INPUTS = {
    "missing real": (_both, ["--real", "nothing", "--fake", "fake"], r"--real nothing: no such file or folder"),
    "missing fake": (_both, ["--real", "real"], r"--fake: missing; give both --real and --fake"),
    "unknown metric": (_both, ["--real", "real", "--fake", "fake", "--metrics", "ssim,ssmi"],
                       r"--metrics: unknown metric 'ssmi'; did you mean 'ssim'\? Valid metrics: psnr, ssim, ms_ssim"),
    "mixed channels": (_mixed_channels, ["--real", "real", "--fake", "fake"],
                       r"--real real/grey\.png: grey \(1 channel\), but the images before it are RGB"),
    "channels differ": (_grey_fake, ["--real", "real", "--fake", "fake"],
                        (r"--real real/000\.png: RGB \(3 channels\), but the fake images are grey \(1 channel\); give "
                        r"real and fake images with the same channels")),
    "empty folder": (_empty_real, ["--real", "real", "--fake", "fake"], r"--real real: no images \(\.png"),
    "fake sizes differ": (_fake_sizes_differ, ["--real", "real", "--fake", "fake"],
                          r"--fake fake/big\.png: 24x24, but the first image is 16x16"),
    "bad pairs": (_both, ["--real", "real", "--fake", "fake", "--pairs-per-image", "-1"],
                  r"--pairs-per-image: expected an integer >= 0, got -1"),
    "unknown suffix": (_both, ["--real", "real", "--fake", "notes.txt"], r"--fake notes\.txt: expected a folder"),
    "out not json": (_both, ["--real", "real", "--fake", "fake", "--out", "r.txt"],
                     r"--out r\.txt: expected a file name ending in \.json"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_1(tmp_path, monkeypatch, capsys, case):
    make, args, message = BAD_INPUTS[case]
    make(tmp_path)
    (tmp_path / "notes.txt").write_text("")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        evaluate_command.main([*args, "--no-progress", "--out", "r.json"] if "--out" not in args
                              else [*args, "--no-progress"])
    assert exit_.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]   # after "evaluate: writing r.json"
    assert error.startswith("evaluate: error: ") and "\n" not in error, error
    assert re.search(message, error), error
    assert not (tmp_path / "r.json").exists()


def test_checkpoint_is_refused_as_real(checkpoint, tmp_path):
    with pytest.raises(DataError, match=r"--real .*last\.pt: a checkpoint makes fake images"):
        load_set(checkpoint, "--real", _config(None, None, None))


def test_corrupt_checkpoint_names_the_argument(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    _folder(tmp_path / "real", _blobs(2, 16))
    with pytest.raises(DataError, match=r"--fake: not a medgan_fast checkpoint: .*bad\.pt"):
        evaluate(_config(tmp_path / "real", tmp_path / "bad.pt", None, metrics="psnr"))


# ---------------------------------------------------------------------------------------
# The command


def test_command_end_to_end_without_traceback(tmp_path):
    _folder(tmp_path / "real", _blobs(3, 24, seed=1))
    _folder(tmp_path / "fake", _blobs(3, 24, seed=2))
    result = _run("--real", "real", "--fake", "fake", "--metrics", "psnr,haarpsi,swd", "--out", "e.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "psnr" in result.stdout and "higher is better" in result.stdout and "wrote e.json" in result.stdout
    assert result.stderr == "evaluate: writing e.json\n"   # and no progress bar: stderr is not a terminal
    record = json.loads((tmp_path / "e.json").read_text())
    assert record["command"] == "python -m medgan_fast.evaluate --real real --fake fake --metrics psnr,haarpsi,swd " \
                                "--out e.json"
    bad = _run("--real", "real", "--fake", "missing", cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.strip() == "evaluate: error: --fake missing: no such file or folder"


def test_command_without_arguments_runs_the_demo(tmp_path):
    result = _run("--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "DEMO on the embedded sample" in result.stdout and "not generated images" in result.stdout
    record = json.loads((tmp_path / "evaluation.json").read_text())
    assert record["demo"] is True and record["real"]["kind"] == "demo"
    assert set(record["metrics"]) | set(record["skipped"]) == set(METRICS)
    assert set(record["skipped"]) == {"fid", "kid"}           # every other metric runs on the demo crops
    assert record["metrics"]["ssim"]["value"] < 0.9
    assert sorted(path.name for path in tmp_path.iterdir()) == ["evaluation.json"]


def test_command_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        evaluate_command.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "python -m medgan_fast.evaluate --real patches.h5 --fake runs/" in text
    assert "Pairing" in text and "resized" in text and "--inception" in text
