"""The train command's one config object: :class:`TrainConfig`, loaded from YAML and
``--set key=value`` overrides.

It reads our users' control files unchanged (their keys: arch, path, out, run, seed, n_gpu,
num_epochs, learning_rate, beta_adam, batch_size, latent_vector, image_size, loader_workers,
number_channels, gen_feature_maps, dis_feature_maps, quantity) and adds ours. An
architecture other than DCGAN and SNGAN adds its own keys (:mod:`.options`), set at the top
level of a file beside the common ones and kept in ``options``. Unknown keys and bad values
raise :class:`ConfigError` with the valid keys (or range) and the closest match:

    >>> from medgan_fast.training.config import load_config
    >>> config = load_config("configs/users_dcgan64.yaml", ["num_epochs=2"])   # doctest: +SKIP
    >>> config.run_dir                                                          # doctest: +SKIP
    PosixPath('runs/dcgan64_users')
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import check_integer
from ..metrics.comparison import TRAIN_DEFAULT_METRICS, TRAIN_METRICS
from .options import ConfigError, coerce, describe_options, one_of, parse_options, shown

__all__ = [
    "ARCHS", "ARCH_OPTIONS", "GENERATE_ARCH", "LOSSES", "SAMPLE_DATA", "SAMPLE_PRESET", "ConfigError", "TrainConfig",
    "check_key", "describe_arch_keys", "describe_keys", "field_names", "load_config", "parse_overrides", "read_yaml",
]

SAMPLE_DATA = "sample"
GENERATE_ARCH = "Generator"       # users' arch name for "write images from a trained checkpoint"
ARCHS = ("DCGAN", "SNGAN")        # our users' architectures; ARCH_OPTIONS has every registered one
# Every trainable architecture -> the dataclass of the keys it adds (None: the common keys
# only, as DCGAN and SNGAN); training/registry.register fills it.
ARCH_OPTIONS: dict[str, type | None] = {}
LOSSES = ("bce", "hinge")
IMAGE_SIZES = (64, 128, 256)
BASE_LEARNING_RATE = 0.0002       # the users' ratio convention: learning_rate >= 1 scales D's rate from this

# Settings for the embedded sample, applied under keys a config does not set: a narrow DCGAN-64
# (3,840 steps of 16 crops) that visibly learns the sample's texture (blue nuclei in pale
# stroma, brown DAB-stained tissue) in a few minutes on a 2-core CPU.
SAMPLE_PRESET: dict[str, Any] = {
    "num_epochs": 40, "batch_size": 16, "gen_feature_maps": 16, "dis_feature_maps": 16, "sample_crops": 1536,
    "flip": True, "loader_workers": 0, "checkpoint_every": 500, "log_every": 8, "run": "dcgan64_sample",
}


# The keys' schema: what each means (train --help prints it) and the values _validate accepts.
KEY_HELP: dict[str, str] = {
    'arch': 'DCGAN, SNGAN, UNet, Mask2Image, CycleGAN, or Generator (write `quantity` images from checkpoint `path`)',
    'path': 'training images (folder or .h5), or the checkpoint for arch Generator',
    'out': 'outputs go to <out>/<run>/ (for arch Generator: the folder or .h5 to write)',
    'run': 'run name; empty: <arch><image_size>, e.g. dcgan64',
    'seed': 'seed of the weights, the data order and the noise',
    'n_gpu': '0: CPU; >= 1: a CUDA GPU if there is one (several: use torchrun)',
    'num_epochs': 'passes over the training data',
    'learning_rate': '>= 1 means a ratio: D lr = 0.0002 * it, G lr = 0.0002',
    'beta_adam': 'Adam beta1 (beta2 = 0.999)',
    'batch_size': 'images per step, per process',
    'latent_vector': 'length of the generator\'s noise vector (nz)',
    'image_size': 'side of the square images trained on (crops are resized to it)',
    'loader_workers': "DataLoader worker processes (clamped to the machine's cores)",
    'number_channels': '1 grey, 3 RGB (images are converted)',
    'gen_feature_maps': 'width of the generator (ngf: feature maps of its last layer)',
    'dis_feature_maps': 'width of the discriminator (ndf: feature maps of its first layer)',
    'quantity': 'images to write with arch Generator',
    'overwrite': 'arch Generator: replace an existing out (else it is never replaced)',
    'data': '"sample", an image folder or an HDF5 patch set; null: path, else the sample',
    'd_learning_rate': "D's learning rate; null: learning_rate",
    'label_smoothing': 'target for real images in the BCE loss, e.g. 0.9; null: 1 (none)',
    'n_critic': 'D steps per G step (each on its own batch)',
    'loss': 'bce (BCE with logits) or hinge',
    'amp': 'bf16 autocast (CUDA only; ignored on CPU)',
    'flip': 'random horizontal and vertical flips',
    'sample_crops': 'crops per epoch drawn from the embedded sample',
    'max_images': 'train on the first N images of data only, for a quick trial (0: all)',
    'checkpoint_every': 'steps between checkpoints (0: at epoch ends only)',
    'keep_checkpoints': 'step-numbered checkpoints kept besides last.pt (0: all)',
    'sample_every': 'epochs between sample grids (the last epoch always gets one)',
    'sample_count': 'images in a sample grid',
    'log_every': 'steps between log.jsonl lines',
    'metrics': 'image metrics logged with each sample grid ("": none)',
    'resume': 'true: <run dir>/checkpoints/last.pt; or a checkpoint path',
    'truncation': 'arch Generator: resample latent entries with |z| > truncation',
    'progress': 'progress bars (drawn only on a terminal)',
    'monitor': "'<validation metric> min|max' (e.g. val_dice max): checkpoints/best.pt keeps the best epoch",
    'options': "the architecture's own keys (set them at the top level; train --help lists them)",
}

CHOICES: dict[str, tuple] = {"loss": LOSSES, "image_size": IMAGE_SIZES, "number_channels": (1, 3)}
AT_LEAST: dict[str, int] = {
    **dict.fromkeys(("num_epochs", "batch_size", "latent_vector", "gen_feature_maps", "dis_feature_maps", "quantity",
                     "n_critic", "sample_crops", "sample_every", "sample_count", "log_every"), 1),
    **dict.fromkeys(("seed", "n_gpu", "loader_workers", "checkpoint_every", "keep_checkpoints", "max_images"), 0),
}
POSITIVE = ("learning_rate", "d_learning_rate", "truncation")
VALUE_RANGES = {"beta_adam": "in [0, 1)", "label_smoothing": "in (0, 1], loss bce only",
                "metrics": "comma list of " + ", ".join(TRAIN_METRICS)}


@dataclass
class TrainConfig:
    """Settings of one training run (or, with arch 'Generator', of one generation job).

    Our users' keys come first, in their meaning; ours follow. ``data`` defaults to ``path``
    (the users' training folder) and else to the embedded sample, whose preset
    (:data:`SAMPLE_PRESET`) fills the keys a config leaves out.
    """

    # --- the users' keys (each key's meaning: KEY_HELP; its valid values: CHOICES, AT_LEAST)
    arch: str = "DCGAN"
    path: str | None = None
    out: str = "runs"
    run: str = ""
    seed: int = 0
    n_gpu: int = 1
    num_epochs: int = 25
    learning_rate: float = 0.0002
    beta_adam: float = 0.5
    batch_size: int = 128
    latent_vector: int = 100
    image_size: int = 64
    loader_workers: int = 2
    number_channels: int = 3
    gen_feature_maps: int = 64
    dis_feature_maps: int = 64
    quantity: int = 64
    # --- ours
    data: str | None = None
    d_learning_rate: float | None = None
    label_smoothing: float | None = None
    n_critic: int = 1
    loss: str = "bce"
    amp: bool = True
    flip: bool = False
    sample_crops: int = 1024
    max_images: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    sample_every: int = 1
    sample_count: int = 64
    log_every: int = 10
    metrics: str = ",".join(TRAIN_DEFAULT_METRICS)
    resume: bool | str = False
    truncation: float | None = None
    overwrite: bool = False
    progress: bool = True
    monitor: str = ""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


    def __post_init__(self):
        self.metrics = _metric_list(self.metrics)
        for field in dataclasses.fields(self):
            if field.name != "options":
                setattr(self, field.name, coerce(field.name, getattr(self, field.name), _field_types()[field.name]))
        self.arch = one_of("arch", self.arch, arch_names())
        self.options = parse_options(ARCH_OPTIONS.get(self.arch), self.options, self.arch)
        self._validate()
        # Resolved, so config.yaml says what was used.
        self.run = self.run or f"{self.arch.lower()}{self.image_size}"
        if self.data is None and not self.is_generate:
            self.data = self.path or SAMPLE_DATA

    # -----------------------------------------------------------------------------------
    # Derived settings

    @property
    def is_generate(self) -> bool:
        """arch 'Generator': write images from a checkpoint instead of training."""
        return self.arch == GENERATE_ARCH

    @property
    def is_sample(self) -> bool:
        return self.data == SAMPLE_DATA

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics to log, in order (empty: none)."""
        return tuple(name for name in self.metrics.split(",") if name)

    @property
    def arch_options(self) -> Any:
        """The architecture's own keys as its options dataclass (None for DCGAN and SNGAN)."""
        schema = ARCH_OPTIONS.get(self.arch)
        return schema(**self.options) if schema is not None else None

    @property
    def monitored(self) -> tuple[str, str] | None:
        """(metric, 'min' or 'max') of ``monitor``, or None."""
        return tuple(self.monitor.split()) if self.monitor else None

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.run

    def learning_rates(self) -> tuple[float, float, str]:
        """(generator lr, discriminator lr, a sentence for the log saying how they were chosen)."""
        if self.learning_rate >= 1:
            d_rate = BASE_LEARNING_RATE * self.learning_rate
            return BASE_LEARNING_RATE, d_rate, (
                f"learning_rate {self.learning_rate:g} >= 1 is a ratio (the users' convention): "
                f"D lr = {BASE_LEARNING_RATE:g} * {self.learning_rate:g} = {d_rate:g}, G lr = {BASE_LEARNING_RATE:g}")
        d_rate = self.learning_rate if self.d_learning_rate is None else self.d_learning_rate
        return self.learning_rate, d_rate, f"G lr = {self.learning_rate:g}, D lr = {d_rate:g}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # -----------------------------------------------------------------------------------
    # Checks

    def _validate(self) -> None:
        for name, valid in CHOICES.items():
            setattr(self, name, one_of(name, getattr(self, name), valid))
        for name, low in AT_LEAST.items():
            check_integer(name, getattr(self, name), low, ConfigError)
        for name in POSITIVE:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name}: expected a number > 0, got {value!r}")
        if self.learning_rate >= 1 and self.d_learning_rate is not None:
            raise ConfigError(f"d_learning_rate: cannot be combined with learning_rate {self.learning_rate:g} >= 1 "
                              "(the ratio convention already sets D's rate); give learning_rate < 1 with it")
        if not 0 <= self.beta_adam < 1:
            raise ConfigError(f"beta_adam: expected a number in [0, 1), got {self.beta_adam!r}")
        if self.label_smoothing is not None:
            if not 0 < self.label_smoothing <= 1:
                raise ConfigError(f"label_smoothing: expected the real-image target in (0, 1], e.g. 0.9, "
                                  f"got {self.label_smoothing!r}")
            if self.loss != "bce":
                raise ConfigError(f"label_smoothing: applies to loss bce only, not {self.loss!r}")
        if self.is_generate and not self.path:
            raise ConfigError("path: arch Generator needs path, the checkpoint to generate from")
        if self.run and (Path(self.run).name != self.run or self.run in (".", "..")):
            raise ConfigError(f"run: expected a plain folder name (no '/'), got {self.run!r}")
        for name in self.metric_names:
            if name in ("fid", "kid"):
                raise ConfigError(f"metrics: {name} needs Inception-v3 weights and thousands of images; compute it "
                                  "after training with python -m medgan_fast.evaluate --inception FILE")
            one_of("metrics", name, TRAIN_METRICS)
        words = self.monitor.split()
        if words and (len(words) != 2 or words[1] not in ("min", "max") or not words[0].startswith("val_")):
            raise ConfigError(f"monitor: expected '<validation metric> min' or '... max', e.g. 'val_dice max', "
                              f"got {self.monitor!r}")
        self.monitor = " ".join(words)


def _metric_list(value: Any) -> Any:
    """The metrics setting as a canonical comma list: a YAML list or a comma string, names in
    lower case ('-' read as '_'), duplicates dropped; null, false or [] for none."""
    if value is None or value is False:
        return ""
    if isinstance(value, (list, tuple)):
        value = ",".join(str(item) for item in value)
    if not isinstance(value, str):
        return value   # coerce reports it
    names: list[str] = []
    for item in value.split(","):
        name = item.strip().lower().replace("-", "_")
        if name and name not in names:
            names.append(name)
    return ",".join(names)


# ---------------------------------------------------------------------------------------
# Types and values

@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def field_names() -> list[str]:
    return [field.name for field in dataclasses.fields(TrainConfig)]


def saved_config(values: dict[str, Any]) -> TrainConfig:
    """The TrainConfig a checkpoint saved (its ``config``): keys that a newer version added
    are not needed to rebuild its networks, so they are left out."""
    return TrainConfig(**{key: value for key, value in dict(values).items() if key in field_names()})


def describe_keys() -> list[str]:
    """One line per key: its meaning, default and valid values (from the schema above)."""
    lines = []
    for field in dataclasses.fields(TrainConfig):
        name, default = field.name, field.default
        if name == "options":
            default = {}
        if name == "arch":
            valid = "one of " + ", ".join(arch_names())
        elif name in CHOICES:
            valid = "one of " + ", ".join(map(str, CHOICES[name]))
        elif name in AT_LEAST:
            valid = f"integer >= {AT_LEAST[name]}"
        elif name in POSITIVE:
            valid = "> 0" + (" or null" if default is None else "")
        else:
            valid = VALUE_RANGES.get(name, "")
        lines.append(f"{name}: {KEY_HELP[name]} (default {shown(default)}{'; ' + valid if valid else ''})")
    return lines


def describe_arch_keys() -> dict[str, list[str]]:
    """Each architecture's own keys, described as :func:`describe_keys` does."""
    return {arch: describe_options(schema) for arch, schema in ARCH_OPTIONS.items() if schema is not None}


def arch_names() -> tuple[str, ...]:
    return (*ARCH_OPTIONS, GENERATE_ARCH)


def check_key(key: Any, source: str = "config", arch: str | None = None) -> None:
    """Raises ConfigError for a key that neither TrainConfig nor `arch`'s options have, naming
    the closest one."""
    own = [field.name for field in dataclasses.fields(ARCH_OPTIONS.get(arch) or _NoOptions)]
    names = [*field_names(), *own]
    if key in names:
        return
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    arch_keys = f" (arch {arch}'s own: {', '.join(own)})" if own else ""
    raise ConfigError(f"{source}: unknown key {key!r}{hint} Valid keys: {', '.join(field_names())}{arch_keys}")


@dataclass
class _NoOptions:
    pass


# ---------------------------------------------------------------------------------------
# Loading

def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> {key: value}. Values are read as YAML (true, 0.9, null, ...),
    except for string-only keys, which keep the text as written (run=001 stays "001")."""
    types = _field_types()
    parsed: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set num_epochs=5")
        kind = types.get(key, Any)   # an architecture's own key: read as YAML
        options = typing.get_args(kind) or (kind,)
        if set(options) <= {str, type(None)} and text.strip().lower() not in ("null", "~", "none"):
            parsed[key] = text
        else:
            try:
                parsed[key] = yaml.safe_load(text) if text.strip() else None
            except yaml.YAMLError as error:
                raise ConfigError(f"--set {item!r}: cannot read the value ({error})") from error
    return parsed


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config file's mapping (empty file: {})."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"--config {path}: cannot read as YAML ({error})") from error
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of key: value, got {type(values).__name__}")
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """The resolved config: defaults, then the embedded sample's preset (when training on the
    sample), then the YAML file at `path`, then the ``key=value`` `overrides`."""
    from_file = read_yaml(path) if path is not None else {}
    from_set = parse_overrides(overrides)
    given = {**from_file, **from_set}
    arch = given.get("arch", TrainConfig.arch)
    arch = next((name for name in arch_names() if str(arch).lower() == name.lower()), arch)
    for keys, source in ((from_file, f"--config {path}"), (from_set, "--set")):
        for key in keys:
            check_key(key, source, arch)
    # An architecture's own keys, set at the top level, go to options.
    if not isinstance(given.get("options", {}), dict):
        raise ConfigError(f"options: expected a mapping of key: value, got {given['options']!r}")
    common = set(field_names())
    given = {key: value for key, value in given.items() if key in common} | {
        "options": {**given.get("options", {}), **{key: value for key, value in given.items() if key not in common}}}
    source = given.get("data") or given.get("path") or SAMPLE_DATA
    if source == SAMPLE_DATA and given.get("arch", "DCGAN") != GENERATE_ARCH:
        preset = dict(SAMPLE_PRESET)
        if "arch" in given or "image_size" in given:
            preset.pop("run")  # the preset's run name says dcgan64
        given = {**preset, **given}
    return TrainConfig(**given)
