"""The stages an experiment is made of, each kept once done so a stopped experiment
continues where it stopped: training runs (resumed from their last checkpoint when one was
interrupted), and the work folder that holds them (refused when it holds another
experiment)."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import shutil
import typing
from pathlib import Path
from typing import Any

import yaml

from ..data.segmentation import validation_split
from ..errors import OutputError
from ..outputs import AtomicPath, write_json
from ..training import ConfigError, load_config, train
from ..training.config import read_yaml

__all__ = ["RUN_SETTINGS", "claim_work", "log_to", "read_settings", "section_overrides", "train_stage",
           "training_count"]

# What every training run of an experiment sets, whatever its section says.
RUN_SETTINGS = {"loader_workers": 0, "checkpoint_every": 200, "keep_checkpoints": 1, "log_every": 20,
                "sample_every": 1000, "metrics": ""}


def read_settings(path: str | Path, overrides: list[str] | None, schema: type, sections: tuple[str, ...],
                  what: str) -> Any:
    """An experiment's dataclass `schema` from a YAML file and ``key=value`` overrides
    (``unet.steps=100`` sets the key of one of `sections`; values read as YAML; a top-level
    ``experiment:`` key naming the experiment is allowed). Unknown keys get the closest one.

    Raises:
        ConfigError: naming the key or value (and `what` the file configures).
    """
    values = read_yaml(path)
    values.pop("experiment", None)
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set seed=1")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {item!r}: cannot read the value ({error})") from error
        top, _, inner = key.strip().partition(".")
        if inner:
            if top not in sections:
                raise ConfigError(f"--set {item!r}: only the sections {', '.join(sections)} take dotted keys")
            values[top] = {**(values.get(top) or {}), inner: value}
        else:
            values[top] = value
    names = [f.name for f in dataclasses.fields(schema)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{key}: not a key of {what}{hint} Valid keys: {', '.join(names)}")
    kinds = typing.get_type_hints(schema)
    for key, value in values.items():   # a YAML number where a path or name is meant
        if kinds[key] is str and value is not None and not isinstance(value, str):
            values[key] = str(value)
    return schema(**values)


def training_count(items: int, val_fraction: float) -> int:
    """How many of `items` a run trains on once its task holds out ``val_fraction`` of them
    (:func:`validation_split`: the count does not depend on the seed)."""
    return len(validation_split(range(items), val_fraction)[0])


def section_overrides(name: str, section: dict[str, Any], train_count: int, settings: dict[str, Any]) -> list[str]:
    """The train overrides of one run from an experiment's section (train keys plus ``steps``):
    its keys, the epochs its ``steps`` take on `train_count` training items (rounded up to
    whole epochs, so a run takes at least ``steps``), and the run's own
    `settings` (out, run, seed, data, ...) over both. Checked against the train schema now, so
    a bad key fails before hours of work, naming the section."""
    section = dict(section)
    steps = section.pop("steps")
    epochs = max(1, math.ceil(steps / math.ceil(train_count / section["batch_size"])))
    overrides = [f"{key}={value}" for key, value in {**RUN_SETTINGS, **section, "num_epochs": epochs,
                                                     **settings}.items()]
    try:
        load_config(None, overrides)
    except ConfigError as error:
        raise ConfigError(f"{name}: {error}".replace("--set: ", "")) from None
    return overrides


def train_stage(folder: Path, run: str, overrides: list[str], progress: bool) -> dict[str, Any]:
    """Trains ``folder/run`` to its end unless an earlier call finished it (``<run>.done.json``);
    a run with a checkpoint resumes from it, one without starts over. What it prints goes to
    ``<run>.log``. Returns the record of ``<run>.done.json``: run, steps, epochs, seconds (of
    its last call), best and validation."""
    run_dir, done = folder / run, folder / f"{run}.done.json"
    if done.is_file():
        return json.loads(done.read_text())
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)   # stopped before its first checkpoint
    config = load_config(None, [*overrides, f"out={folder}", f"run={run}", f"resume={'true' if resume else 'false'}",
                                f"progress={progress}"])
    with log_to(folder / f"{run}.log"):
        summary = train(config)
    if summary.run_dir != run_dir:
        raise OutputError(f"work {folder}: run {run} went to {summary.run_dir}; remove the stray folder and run again")
    record = {"run": run, "steps": summary.steps, "epochs": summary.epochs, "seconds": round(summary.seconds, 3),
              "best": summary.best, "validation": summary.validation}
    write_json(record, done)
    return record


def claim_work(settings: dict[str, Any], out: Path, work: Path, overwrite: bool) -> None:
    """Refuses a finished report in `out` or a `work` folder of another experiment (unless
    `overwrite`: then the work folder is emptied), and records `settings` in
    ``work/experiment.yaml``."""
    record = work / "experiment.yaml"
    text = yaml.safe_dump(settings, sort_keys=False)
    if (out / "results.json").exists() and not overwrite:
        raise OutputError(f"out {out}: holds the results of an experiment already (results.json); give --overwrite "
                          "to replace them, or another out")
    if work.exists() and any(work.iterdir()):
        if not record.is_file():
            raise OutputError(f"work {work}: a folder that holds no experiment (no experiment.yaml); give another "
                              "work folder")
        if record.read_text() != text:
            if not overwrite:
                before = yaml.safe_load(record.read_text()) or {}
                changed = [key for key, value in settings.items() if before.get(key) != value]
                raise OutputError(f"work {work}: holds an experiment with another config (it differs in "
                                  f"{', '.join(changed) or 'its layout'}); give --overwrite to start over, or "
                                  "another work folder")
            shutil.rmtree(work)
    for folder, name in ((work, "work"), (out, "out")):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{name} {folder}: cannot create the folder ({error.strerror})") from None
    with AtomicPath(record) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def log_to(path: Path):
    """Sends what a stage prints (its training notes) to `path` instead of the terminal."""
    with open(path, "a") as log, contextlib.redirect_stdout(log):
        yield
