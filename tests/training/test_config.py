"""TrainConfig: users' files unchanged, the ratio convention, --set, unknown keys and bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medgan_fast.training.config import SAMPLE_PRESET, ConfigError, TrainConfig, load_config, parse_overrides

from .conftest import REPO

CONFIGS = REPO / "configs"
USERS_KEYS = ("arch", "path", "out", "run", "seed", "n_gpu", "num_epochs", "learning_rate", "beta_adam", "batch_size",
              "latent_vector", "image_size", "loader_workers", "number_channels", "gen_feature_maps",
              "dis_feature_maps")


def test_users_file_is_accepted_unchanged():
    text = (CONFIGS / "users_dcgan64.yaml").read_text()
    assert set(yaml.safe_load(text)) == set(USERS_KEYS)
    config = load_config(CONFIGS / "users_dcgan64.yaml")
    values = yaml.safe_load(text)
    for key in USERS_KEYS:
        assert getattr(config, key) == values[key], key
    assert config.data == values["path"]          # their path is the training folder
    assert config.run_dir == Path("runs/dcgan64_users")
    assert config.batch_size == 128               # the sample preset does not touch a real run


def _configs(experiments: bool) -> list[str]:
    """The example files of train (experiments False) or of the experiment command."""
    return sorted(path.name for path in CONFIGS.glob("*.yaml")
                  if ("experiment" in (yaml.safe_load(path.read_text()) or {})) == experiments)


@pytest.mark.parametrize("name", _configs(experiments=False))
def test_every_example_config_loads(name):
    config = load_config(CONFIGS / name)
    assert config.to_dict() == TrainConfig(**config.to_dict()).to_dict()   # config.yaml round trip


@pytest.mark.parametrize("name", _configs(experiments=True))
def test_every_experiment_config_loads(name):
    from medgan_fast.jobs.experiment import load_experiment
    from medgan_fast.jobs.mask2image_comparison import load_comparison
    kind = yaml.safe_load((CONFIGS / name).read_text())["experiment"]
    loader = {"augmentation": load_experiment, "mask2image": load_comparison}[kind]
    out = loader(CONFIGS / name).out
    # Real runs report into results/ (committed); the smoke run only checks the machinery.
    assert out.startswith("runs/" if name.endswith("_smoke.yaml") else "results/"), out


def test_users_generator_file():
    config = load_config(CONFIGS / "users_generator.yaml")
    assert config.is_generate and config.quantity == 500 and config.data is None


def test_learning_rate_ratio_convention():
    g_rate, d_rate, note = TrainConfig(learning_rate=2).learning_rates()
    assert (g_rate, d_rate) == (0.0002, 0.0002 * 2)
    assert "ratio" in note and "0.0004" in note
    assert TrainConfig(learning_rate=1).learning_rates()[:2] == (0.0002, 0.0002)
    assert TrainConfig(learning_rate=1e-3).learning_rates()[:2] == (1e-3, 1e-3)
    assert TrainConfig(learning_rate=1e-4, d_learning_rate=4e-4).learning_rates()[:2] == (1e-4, 4e-4)
    with pytest.raises(ConfigError, match="d_learning_rate: cannot be combined"):
        TrainConfig(learning_rate=2, d_learning_rate=1e-3)


def test_unknown_key_lists_valid_keys_and_closest(tmp_path):
    (tmp_path / "bad.yaml").write_text("arch: DCGAN\nleraning_rate: 0.001\n")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "bad.yaml")
    message = str(error.value)
    assert "bad.yaml" in message and "'leraning_rate'" in message
    assert "did you mean 'learning_rate'?" in message
    assert "Valid keys:" in message and "dis_feature_maps" in message and "label_smoothing" in message
    with pytest.raises(ConfigError, match="--set: unknown key 'n_critics'; did you mean 'n_critic'"):
        load_config(None, ["n_critics=2"])


@pytest.mark.parametrize("setting, pattern", [
    ("learning_rate=-1", r"learning_rate: expected a number > 0, got -1\.0"),
    ("image_size=100", r"image_size: expected one of 64, 128, 256, got 100"),
    ("loss=foo", r"loss: expected one of bce, hinge, got 'foo'"),
    ("loss=hinj", r"did you mean 'hinge'\?"),
    ("arch=SNGun", r"arch: expected one of DCGAN, SNGAN, .*Generator, got 'SNGun'; did you mean 'SNGAN'\?"),
    ("number_channels=2", r"number_channels: expected one of 1, 3, got 2"),
    ("batch_size=0", r"batch_size: expected an integer >= 1, got 0"),
    ("batch_size=abc", r"batch_size: expected an integer, got 'abc'"),
    ("beta_adam=1.5", r"beta_adam: expected a number in \[0, 1\)"),
    ("label_smoothing=1.5", r"label_smoothing: expected the real-image target in \(0, 1\]"),
    ("amp=maybe", r"amp: expected true/false, got 'maybe'"),
    ("run=a/b", r"run: expected a plain folder name"),
    ("num_epochs=2.5", r"num_epochs: expected an integer, got 2\.5"),
])
def test_bad_values_are_clear_errors(setting, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [setting])


def test_generator_arch_needs_a_checkpoint_path():
    with pytest.raises(ConfigError, match="path: arch Generator needs path"):
        TrainConfig(arch="Generator")


def test_set_parsing_takes_types_from_the_dataclass():
    parsed = parse_overrides(["num_epochs=3", "learning_rate=2e-4", "amp=false", "label_smoothing=0.9",
                              "run=001", "data=null", "resume=true", "d_learning_rate=null", "path=some/dir"])
    assert parsed == {"num_epochs": 3, "learning_rate": "2e-4", "amp": False, "label_smoothing": 0.9, "run": "001",
                      "data": None, "resume": True, "d_learning_rate": None, "path": "some/dir"}
    config = load_config(None, ["num_epochs=3", "learning_rate=2e-4", "run=001", "resume=runs/x/last.pt",
                                "batch_size=8.0"])
    assert config.num_epochs == 3 and config.learning_rate == 2e-4 and config.run == "001"
    assert config.resume == "runs/x/last.pt" and config.batch_size == 8
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["num_epochs"])


def test_yaml_1_1_exponent_strings_and_numeric_run_names(tmp_path):
    (tmp_path / "c.yaml").write_text("learning_rate: 2e-4\nrun: 7\npath: imgs\n")
    config = load_config(tmp_path / "c.yaml")
    assert config.learning_rate == 2e-4 and config.run == "7"


def test_sample_preset_fills_only_missing_keys():
    config = load_config()
    for key, value in SAMPLE_PRESET.items():
        assert getattr(config, key) == value, key
    assert config.data == "sample" and config.image_size == 64 and config.arch == "DCGAN"
    config = load_config(None, ["batch_size=8", "arch=SNGAN"])
    assert config.batch_size == 8 and config.num_epochs == SAMPLE_PRESET["num_epochs"]
    assert config.run == "sngan64"     # the preset's run name is DCGAN's
    assert load_config(None, ["path=images"]).batch_size == TrainConfig.batch_size


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("arch: [DCGAN\n")
    with pytest.raises(ConfigError, match="cannot read as YAML"):
        load_config(tmp_path / "broken.yaml")
