"""The mask2image experiment: one Mask2Image GAN per generator and a U-Net judge trained on
one patch set, scored on another; the report and its refusals."""

from __future__ import annotations

import json

import pytest
import yaml

from medgan_fast.errors import DataError, OutputError
from medgan_fast.jobs.mask2image_comparison import compare_generators, load_comparison
from medgan_fast.training import ConfigError

TINY = {"image_gan": {"steps": 3, "batch_size": 4, "gen_feature_maps": 4, "dis_feature_maps": 4, "gen_depth": 3,
                      "dis_scales": 1, "val_fraction": 0.25},
        "unet": {"steps": 3, "batch_size": 4, "depth": 2, "width": 4, "val_fraction": 0.25}}


def _config_file(pairs, folder, **changes):
    path = folder / "m2i.yaml"
    path.write_text(yaml.safe_dump({"experiment": "mask2image", "data": str(pairs), "test_data": str(pairs),
                                    "out": str(folder / "out"), "work": str(folder / "work"), "device": "cpu",
                                    **TINY, **changes}))
    return path


def test_both_generators_are_trained_scored_and_ranked(pairs, tmp_path):
    path = _config_file(pairs, tmp_path)
    result = compare_generators(load_comparison(path), progress=False)
    out = tmp_path / "out"
    saved = json.loads((out / "results.json").read_text())
    assert saved["scores"].keys() == {"unet", "spade"} and saved["better"] in ("unet", "spade")
    for scores in saved["scores"].values():
        assert scores.keys() == {"psnr", "ssim", "swd", "pair_ssim", "mask_dice", "real_dice"}
        assert 0 <= scores["mask_dice"] <= 1 and 0 <= scores["real_dice"] <= 1 and scores["swd"] > 0
    # The judge is one U-Net: its Dice on the real test images is the same in both rows.
    assert saved["scores"]["unet"]["real_dice"] == saved["scores"]["spade"]["real_dice"]
    for name in ("pairs_unet.png", "noise_spade.png", "results.md", "config.yaml"):
        assert (out / name).is_file()
    assert f"**{result['better']}**" in (out / "results.md").read_text()
    with pytest.raises(OutputError, match="holds the results of an experiment already"):
        compare_generators(load_comparison(path), progress=False)


def test_bad_settings(pairs, tmp_path):
    path = _config_file(pairs, tmp_path)
    with pytest.raises(ConfigError, match="generators: expected distinct generators of unet, spade"):
        load_comparison(path, ["generators=[unet, oasis]"])
    with pytest.raises(ConfigError, match="image_gan.generator: set by the experiment"):
        load_comparison(path, ["image_gan.generator=spade"])
    with pytest.raises(ConfigError, match="test_data: expected an \\(image, mask\\) patch set"):
        load_comparison(path, ["test_data=images/"])
    with pytest.raises(ConfigError, match="tset_data: not a key of the mask2image experiment; did you mean"):
        load_comparison(path, ["tset_data=x.h5"])
    with pytest.raises(DataError, match="test_data .*missing.h5: not a readable"):
        compare_generators(load_comparison(path, [f"test_data={tmp_path / 'missing.h5'}"]), progress=False)
    assert not (tmp_path / "work").exists()
