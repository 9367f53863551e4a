"""The augmentation experiment: nested subsets, GANs trained on each cell's subset only, the
report (table, paired tests, plot), resume after an interruption, and clear refusals."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import yaml

from medgan_fast import cli
from medgan_fast.errors import DataError, Interrupted, OutputError
from medgan_fast.jobs import stages
from medgan_fast.jobs.experiment import load_experiment, plan_cells, run_experiment
from medgan_fast.jobs.experiment_report import paired_test
from medgan_fast.training import ConfigError

from .conftest import REPO, run_module

TINY_SECTIONS = {
    "unet": {"steps": 2, "batch_size": 4, "depth": 2, "width": 4, "val_fraction": 0.25},
    "mask_gan": {"steps": 2, "batch_size": 4, "gen_feature_maps": 4, "dis_feature_maps": 4, "latent_vector": 8},
    "image_gan": {"steps": 2, "batch_size": 4, "gen_feature_maps": 4, "dis_feature_maps": 4, "gen_depth": 3,
                  "dis_scales": 1},
}


def _write_config(disks, folder, **changes):
    values = {"images": str(disks / "images"), "masks": str(disks / "masks"),
              "train_split": str(disks / "train.csv"), "test_split": str(disks / "test.csv"),
              "out": str(folder / "out"), "work": str(folder / "work"), "fractions": [0.5, 1.0], "seeds": [0, 1],
              "device": "cpu", **TINY_SECTIONS, **changes}
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def finished(disks, tmp_path_factory):
    """(config file, results) of a tiny finished experiment: 2 fractions x 2 seeds x 4 arms."""
    folder = tmp_path_factory.mktemp("experiment")
    path = _write_config(disks, folder)
    return path, run_experiment(load_experiment(path), progress=False)


def test_subsets_are_nested_per_seed_and_never_hold_a_test_image(disks, tmp_path):
    config = load_experiment(_write_config(disks, tmp_path, fractions=[0.25, 0.5, 1.0], seeds=[0, 1]))
    train_ids = [f"{k:02d}" for k in range(8)]
    cells = plan_cells(config, train_ids)
    by_seed = {seed: [c for c in cells if c.seed == seed] for seed in (0, 1)}
    for seed, seed_cells in by_seed.items():
        sizes = [len(c.ids) for c in seed_cells]
        assert sizes == [2, 4, 8]
        assert set(seed_cells[0].ids) <= set(seed_cells[1].ids) <= set(seed_cells[2].ids)
    assert by_seed[0][1].ids != by_seed[1][1].ids   # another seed draws another subset
    assert plan_cells(config, train_ids)[1].ids == cells[1].ids   # fixed by the seed


def test_the_report_has_every_arm_fraction_and_test(finished):
    path, result = finished
    out = json.loads((path.parent / "out" / "results.json").read_text())
    assert out["summary"].keys() == {"real", "classical", "gan", "gan+classical"}
    assert out["summary"]["gan"].keys() == {"0.5", "1"}
    assert out["test_images"] == 4 and out["train_images"] == 8
    for cell in out["cells"]:
        assert cell["subset"] == 4 * cell["fraction"] * 2 and cell["synthetic"] == cell["subset"]
        for arm in cell["arms"].values():
            assert sorted(arm["dice"]["per_image"]) == ["08", "09", "10", "11"]
            assert np.isclose(arm["dice"]["mean"], np.mean(list(arm["dice"]["per_image"].values())))
    comparisons = {(t["a"], t["b"], t["fraction"]) for t in out["tests"]}
    assert ("gan", "real", "all") in comparisons and ("gan+classical", "classical", "0.5") in comparisons
    assert all(t["over_images"]["n"] == 4 and t["over_seeds"]["n"] == (4 if t["fraction"] == "all" else 2)
               for t in out["tests"])
    text = (path.parent / "out" / "results.md").read_text()
    assert "| 0.5 | 4 |" in text and "gan vs classical" in text
    assert (path.parent / "out" / "dice_vs_fraction.png").stat().st_size > 10_000
    assert yaml.safe_load((path.parent / "out" / "config.yaml").read_text())["seeds"] == [0, 1]


def test_both_gans_of_a_cell_see_only_its_subset(finished):
    path, _ = finished
    work = path.parent / "work"
    subset = (work / "f0.5_s1" / "subset.csv").read_text().split()[1:]
    with h5py.File(work / "f0.5_s1" / "pairs.h5") as pairs, h5py.File(work / "f0.5_s1" / "masks.h5") as masks:
        assert pairs["images"].shape == (4, 1, 64, 64) and masks["images"].shape == (4, 1, 64, 64)
        assert np.array_equal(masks["images"][...], pairs["masks"][...] * 255)
    for run in ("mask_gan", "image_gan", "unet_gan"):
        config = yaml.safe_load((work / "f0.5_s1" / run / "config.yaml").read_text())
        assert config["seed"] == 1
        data = config["data"]
        assert data.endswith(("masks.h5", "pairs.h5")) if run != "unet_gan" else config["options"]["split"].endswith(
            "f0.5_s1/subset.csv")
    assert len(subset) == 4 and not set(subset) & {"08", "09", "10", "11"}


def test_paired_test():
    assert paired_test([1, 2, 3], [1, 2, 3]) == {"n": 3, "mean_difference": 0.0, "p": 1.0}
    record = paired_test([0.9, 0.8, 0.85, 0.7, 0.95, 0.9], [0.5, 0.4, 0.6, 0.3, 0.5, 0.45])
    assert record["mean_difference"] == pytest.approx(0.39166, abs=1e-4) and record["p"] == pytest.approx(0.03125)
    assert paired_test([1.0], [0.5])["p"] is None


def test_a_stopped_experiment_continues_and_keeps_its_finished_stages(disks, tmp_path, monkeypatch):
    path = _write_config(disks, tmp_path, fractions=[1.0], seeds=[0], arms=["real", "gan"])
    calls = []
    real_train = stages.train

    def interrupted_third(config):
        calls.append(config.run)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_train(config)

    monkeypatch.setattr(stages, "train", interrupted_third)
    with pytest.raises(Interrupted, match="finished stages are kept in .*run the same command again"):
        run_experiment(load_experiment(path), progress=False)
    assert calls == ["mask_gan", "image_gan", "unet_real"]
    done = tmp_path / "work" / "f1_s0" / "mask_gan.done.json"
    stamp = done.stat().st_mtime_ns
    assert not (tmp_path / "out" / "results.json").exists()

    calls.clear()
    result = run_experiment(load_experiment(path), progress=False)
    assert calls == ["unet_real", "unet_gan"] and done.stat().st_mtime_ns == stamp
    assert result["summary"].keys() == {"real", "gan"}
    assert [t["a"] + " " + t["b"] for t in result["tests"]] == ["gan real", "gan real"]

    with pytest.raises(OutputError, match="holds the results of an experiment already .* give --overwrite"):
        run_experiment(load_experiment(path), progress=False)
    changed = load_experiment(path, ["unet.steps=3"])
    (tmp_path / "out" / "results.json").unlink()
    with pytest.raises(OutputError, match=r"holds an experiment with another config \(it differs in unet\)"):
        run_experiment(changed, progress=False)


def test_bad_settings_are_one_clear_line(disks, tmp_path):
    path = _write_config(disks, tmp_path)
    cases = [
        (["fractionz=[0.5]"], "fractionz: not a key of the augmentation experiment; did you mean 'fractions'"),
        (["fractions=[0, 0.5]"], r"fractions: expected numbers in \(0, 1\]"),
        (["arms=[real, gans]"], "arms: expected distinct arms of real, classical, gan, gan\\+classical"),
        (["unet.augment=none"], "unet.augment: set by the experiment for each cell"),
        (["unet.widht=4"], "unet: unknown key 'widht'; did you mean 'width'"),
        (["mask_gan.arch=UNet"], "mask_gan.arch: expected DCGAN or SNGAN"),
        (["seeds=[1, 1]"], "seeds: listed twice"),
        (["test_split="], "test_split: required"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_experiment(path, overrides)
    overlapping = tmp_path / "overlap.csv"
    overlapping.write_text("07\n08\n")
    with pytest.raises(DataError, match=r"1 of its ids are also in test_split .* \(the first: '08'\)"):
        run_experiment(load_experiment(path, [f"train_split={overlapping}"]), progress=False)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="a folder that holds no experiment"):
        run_experiment(load_experiment(path, [f"work={stranger}"]), progress=False)
    assert (stranger / "notes.txt").read_text() == "mine"


def test_the_command_needs_its_config_and_says_where_it_writes(disks, tmp_path):
    usage = run_module("-m", "medgan_fast.experiment", "augmentation", cwd=tmp_path)
    assert usage.returncode == cli.EXIT_USAGE and "give the experiment and its config" in usage.stderr
    path = _write_config(disks, tmp_path, fractions=[1.0], seeds=[0], arms=["real"])
    done = run_module("-m", "medgan_fast.experiment", "augmentation", "--config", str(path), "--no-progress",
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "runs in" in done.stderr.splitlines()[0] and "results.md" in done.stdout
    assert "Traceback" not in done.stderr
    shutil.rmtree(tmp_path / "work")


def test_tiles_are_cut_once_and_subsets_are_drawn_over_source_images(disks, tmp_path):
    # 80 x 96 images at scale 1.5 -> 120 x 144 -> 1 x 2 tiles of 64 px each.
    path = _write_config(disks, tmp_path, fractions=[0.25], seeds=[0], arms=["real"], tile=64, scale=1.5)
    result = run_experiment(load_experiment(path), progress=False)
    tiles = tmp_path / "work" / "tiles"
    assert len(list((tiles / "images").glob("*.png"))) == 2 * 12 and len(list((tiles / "masks").glob("*.png"))) == 24
    subset = (tmp_path / "work" / "f0.25_s0" / "subset.csv").read_text().split()[1:]
    assert len(subset) == 4 and {tile.rsplit("_", 2)[0] for tile in subset} <= {f"{k:02d}" for k in range(8)}
    assert result["cells"][0]["subset"] == 2 and result["cells"][0]["items"] == 4 and result["test_images"] == 8
    assert sorted(result["cells"][0]["arms"]["real"]["dice"]["per_image"]) == sorted(
        f"{k:02d}_0_{c}" for k in range(8, 12) for c in (0, 1))
    with pytest.raises(ConfigError, match="tile 64: the U-Net trains on the tiles as they are; set image_size"):
        load_experiment(path, ["image_size=128"])
    with pytest.raises(ConfigError, match="scale: rescales images before tiling; set tile too"):
        load_experiment(path, ["tile=0"])


def test_shards_share_the_cells_and_the_last_one_or_merge_writes_the_report(disks, tmp_path):
    path = _write_config(disks, tmp_path, fractions=[0.5, 1.0], seeds=[0], arms=["real"])
    first = run_experiment(load_experiment(path), progress=False, shard=(1, 2))
    assert first == {"complete": False, "done": 1, "cells": 2, "ran": 1}
    assert not (tmp_path / "out" / "results.json").exists()
    with pytest.raises(ConfigError, match=r"--merge: 1 of 2 cells are not done \(fraction 1, seed 0\)"):
        run_experiment(load_experiment(path), progress=False, merge=True)
    second = run_experiment(load_experiment(path), progress=False, shard=(2, 2))
    assert [cell["fraction"] for cell in second["cells"]] == [0.5, 1.0]
    assert (tmp_path / "out" / "results.json").is_file()
    merged = run_experiment(load_experiment(path), progress=False, merge=True, overwrite=True)
    assert merged["summary"] == second["summary"] and merged["seconds"] == second["seconds"] > 0
    for bad in (["--shard", "3/2"], ["--shard", "1/2", "--merge"]):
        usage = run_module("-m", "medgan_fast.experiment", "augmentation", "--config", str(path), *bad, cwd=tmp_path)
        assert usage.returncode == cli.EXIT_USAGE and ("--shard" in usage.stderr or "--merge" in usage.stderr)


SMOKE = REPO / "configs" / "augmentation_smoke.yaml"


@pytest.mark.skipif(not (REPO.parent / "shared" / "data" / "emps").is_dir(), reason="needs ../shared/data/emps")
def test_the_smoke_config_runs_end_to_end_and_writes_every_output(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)   # the config's data paths are relative to the checkout
    config = load_experiment(SMOKE, [f"out={tmp_path / 'report'}", f"work={tmp_path / 'work'}"])
    result = run_experiment(config, progress=False)
    report = tmp_path / "report"
    assert sorted(p.name for p in report.iterdir()) == ["config.yaml", "dice_vs_fraction.png", "results.json",
                                                      "results.md"]
    written = json.loads((report / "results.json").read_text())
    assert set(written["summary"]) == {"real", "classical", "gan", "gan+classical"}
    assert {key for values in written["summary"].values() for key in values} == {"0.25", "1"}
    assert all(0 <= fraction["dice"]["mean"] <= 1 for arm in result["summary"].values() for fraction in arm.values())
    assert "| 0.25 | 92 |" in (report / "results.md").read_text()   # 25% of the 366 training images
    for cell in ("f0.25_s0", "f1_s0"):
        folder = tmp_path / "work" / cell
        for name in ("cell.json", "synthetic.h5", "synthetic_contact_sheet.png", "test_real.json",
                     "test_gan_classical.json"):
            assert (folder / name).is_file(), (cell, name)
