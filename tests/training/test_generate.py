"""generate: PNG and HDF5 outputs, seed determinism, truncation, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medgan_fast import generate as generate_command
from medgan_fast.data.patchset import read_patch_set
from medgan_fast.errors import OutputError
from medgan_fast.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from medgan_fast.training.config import ConfigError, TrainConfig
from medgan_fast.jobs.generation import GenerateConfig, generate, latent_vectors

from .conftest import run_module, tiny_config


def _generate(checkpoint, out, **changes):
    return generate(GenerateConfig(checkpoint, out=out, progress=False, **{"quantity": 5, **changes}))


def test_png_files(trained_checkpoint, tmp_path):
    summary = _generate(trained_checkpoint, tmp_path / "pngs", batch_size=2)
    files = sorted((tmp_path / "pngs").iterdir())
    assert [path.name for path in files] == [f"{k:06d}.png" for k in range(5)]
    with Image.open(files[0]) as image:
        assert image.mode == "RGB" and image.size == (64, 64)
    assert summary.quantity == 5 and summary.step == 2 and "5 RGB 64x64 images" in str(summary)


def test_hdf5_set_in_the_patch_set_layout(trained_checkpoint, tmp_path):
    _generate(trained_checkpoint, tmp_path / "fakes.h5", seed=3)
    patch_set = read_patch_set(tmp_path / "fakes.h5")
    assert patch_set.images.shape == (5, 3, 64, 64) and patch_set.images.dtype == np.uint8
    assert patch_set.masks.shape == (5, 1, 64, 64) and patch_set.masks.all()
    assert patch_set.attrs["mode"] == "generated" and patch_set.attrs["seed"] == 3
    assert patch_set.attrs["checkpoint"] == str(trained_checkpoint)
    assert list(patch_set.meta["component"]) == [1, 2, 3, 4, 5]
    pngs = tmp_path / "pngs"
    _generate(trained_checkpoint, pngs, seed=3)
    for k, path in enumerate(sorted(pngs.iterdir())):   # the same images as the PNG files
        np.testing.assert_array_equal(np.moveaxis(np.asarray(Image.open(path)), -1, 0), patch_set.images[k])


def test_same_seed_same_images_whatever_the_batch_size(trained_checkpoint, tmp_path):
    _generate(trained_checkpoint, tmp_path / "a.h5", seed=7, batch_size=5)
    _generate(trained_checkpoint, tmp_path / "b.h5", seed=7, batch_size=2)
    _generate(trained_checkpoint, tmp_path / "c.h5", seed=8)
    _generate(trained_checkpoint, tmp_path / "d.h5", seed=7, quantity=3)
    a, b, c, d = (read_patch_set(tmp_path / f"{name}.h5").images for name in "abcd")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:3], d)
    assert not np.array_equal(a, c)


def test_truncation_resamples_large_entries():
    plain, truncated = latent_vectors(0, 0, 200, 16), latent_vectors(0, 0, 200, 16, truncation=0.5)
    assert plain.abs().max() > 2 and truncated.abs().max() <= 0.5
    kept = plain.abs() <= 0.5   # entries inside the bound are not redrawn
    assert torch.equal(plain[kept], truncated[kept])
    with pytest.raises(ConfigError, match="truncation: expected a number > 0"):
        GenerateConfig("x.pt", truncation=0)


def test_grey_generator(tmp_path):
    checkpoint = tiny_config(tmp_path, number_channels=1)
    from medgan_fast.training.loop import train
    path = train(checkpoint).checkpoint
    _generate(path, tmp_path / "grey", quantity=2)
    with Image.open(tmp_path / "grey" / "000000.png") as image:
        assert image.mode == "L"


def test_errors_name_the_file(trained_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match=r"missing\.pt: no such file"):
        _generate(tmp_path / "missing.pt", tmp_path / "out")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match=r"not a medgan_fast checkpoint: .*corrupt\.pt \(cannot be read"):
        _generate(tmp_path / "corrupt.pt", tmp_path / "out")
    checkpoint = load_checkpoint(trained_checkpoint)
    other = {key: value for key, value in checkpoint.items() if key not in ("format", "version", "package_version",
                                                                             "torch_version")}
    save_checkpoint({**other, "arch": "UNet"}, tmp_path / "unet.pt")
    with pytest.raises(CheckpointError, match=r"unet\.pt: a 'UNet' checkpoint has no generator to sample from; "
                                              r"generate takes checkpoints of DCGAN, SNGAN"):
        _generate(tmp_path / "unet.pt", tmp_path / "out")
    save_checkpoint({key: value for key, value in other.items() if key != "models"}, tmp_path / "nomodels.pt")
    with pytest.raises(CheckpointError, match=r"nomodels\.pt: incomplete checkpoint, missing key\(s\) models"):
        _generate(tmp_path / "nomodels.pt", tmp_path / "out")
    save_checkpoint({**other, "models": {"discriminator": {}}}, tmp_path / "nogen.pt")
    with pytest.raises(CheckpointError, match=r"nogen\.pt: incomplete checkpoint, missing key models\['generator'\]"):
        _generate(tmp_path / "nogen.pt", tmp_path / "out")
    torch.save(checkpoint["models"]["generator"], tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match=r"not a medgan_fast checkpoint: .*bare\.pt \(a bare state_dict"):
        _generate(tmp_path / "bare.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())



def test_an_out_with_a_file_suffix_is_neither_a_folder_nor_hdf5(trained_checkpoint, tmp_path):
    with pytest.raises(OutputError, match=r"fakes\.txt: expected a folder for PNG files .* or an HDF5 file"):
        _generate(trained_checkpoint, tmp_path / "fakes.txt")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "run.v2").mkdir()   # an existing folder whose name has a dot is a folder
    _generate(trained_checkpoint, tmp_path / "run.v2")
    assert any((tmp_path / "run.v2").glob("*.png"))


def test_users_generator_job_from_a_train_config(trained_checkpoint, tmp_path):
    # Our checkpoint, and a bare generator state_dict (as the users' own script saves it,
    # from DataParallel) whose sizes come from the config.
    torch.save({f"module.{key}": value for key, value in
                load_checkpoint(trained_checkpoint)["models"]["generator"].items()}, tmp_path / "theirs.pt")
    for name in (str(trained_checkpoint), str(tmp_path / "theirs.pt")):
        config = TrainConfig(arch="Generator", path=name, out=str(tmp_path / "fakes"), quantity=3, latent_vector=8,
                             gen_feature_maps=4, progress=False, n_gpu=0, overwrite=True)
        generate(GenerateConfig.from_train_config(config))
        assert len(list((tmp_path / "fakes").iterdir())) == 3
    wrong = TrainConfig(arch="Generator", path=str(tmp_path / "theirs.pt"), out=str(tmp_path / "x"), latent_vector=8,
                        gen_feature_maps=8, progress=False)
    with pytest.raises(CheckpointError, match=r"theirs\.pt: the weights do not fit a DCGAN-64 generator"):
        generate(GenerateConfig.from_train_config(wrong))


def test_command(trained_checkpoint, tmp_path):
    result = run_module("-m", "medgan_fast.generate", "--checkpoint", str(trained_checkpoint), "--quantity", "3",
                        "--out", str(tmp_path / "g.h5"), "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"as an HDF5 set: {tmp_path / 'g.h5'}" in result.stdout
    assert "python -m medgan_fast.generate" in read_patch_set(tmp_path / "g.h5").attrs["command"]
    result = run_module("-m", "medgan_fast.train", "--set", "arch=Generator", "--set", f"path={trained_checkpoint}",
                        "--set", "quantity=2", "--set", f"out={tmp_path / 'users'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "users").iterdir())) == 2


def test_command_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        generate_command.main([])
    assert exit_.value.code == 2 and "python -m medgan_fast.train" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        generate_command.main(["--checkpoint", "nope.pt"])
    assert exit_.value.code == 1 and capsys.readouterr().err.strip() == "generate: error: nope.pt: no such file"
    with pytest.raises(SystemExit) as exit_:
        generate_command.main(["--help"])
    assert exit_.value.code == 0
    assert "--checkpoint runs/dcgan64_sample/checkpoints/last.pt" in capsys.readouterr().out
