"""The training framework for architectures other than the GANs: their own config keys,
datasets with a validation set, batches that are dicts, per-step schedulers, validate(),
the monitored best checkpoint, named sample grids, and exact resume of all of it. A toy
regression architecture, registered only while a test runs, plays the new architecture."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from medgan_fast.training import ARCHITECTURES, ConfigError, TrainConfig, load_config, register, train
from medgan_fast.training.checkpoint import load_checkpoint
from medgan_fast.training.config import ARCH_OPTIONS
from medgan_fast.training.options import option
from medgan_fast.training.registry import Context, Grid, Task

from .conftest import TINY


@dataclass(frozen=True)
class ToyOptions:
    hidden: int = option(8, "hidden units", at_least=1)
    items: int = option(24, "training items", at_least=2)
    target: str = option("sum", "what to regress", choices=("sum", "max"))


class ToyData(torch.utils.data.Dataset):
    """Item (epoch, index): {"x": 4 numbers, "y": their sum or max}, a function of the index."""

    def __init__(self, count: int, target: str, offset: int = 0):
        self.count, self.target, self.offset = count, target, offset

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, key):
        x = torch.randn(4, generator=torch.Generator().manual_seed(self.offset + key[1]))
        return {"x": x, "y": (x.sum() if self.target == "sum" else x.max()).reshape(1)}

    def __repr__(self) -> str:
        return f"toy data ({self.count} items)"


class ToyTask(Task):
    resume_fixed = ("hidden", "target")
    progress_metrics = ("loss",)
    validation_metrics = ("val_loss", "val_error")

    @classmethod
    def datasets(cls, config):
        options = config.arch_options
        return ToyData(options.items, options.target), ToyData(8, options.target, offset=1000)

    def __init__(self, context: Context):
        super().__init__(context)
        self.models = {"net": context.place(nn.Sequential(nn.Linear(4, self.options.hidden), nn.ReLU(),
                                                          nn.Linear(self.options.hidden, 1)))}
        optimizer = torch.optim.SGD(self.models["net"].parameters(), lr=0.05, momentum=0.9)
        self.optimizers = {"net": optimizer}
        self.step_schedulers = {"warmup": torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 5))}
        self.schedulers = {"decay": torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)}

    def train_step(self, batch, step):
        batch = self.context.to_device(batch)
        loss = nn.functional.mse_loss(self.models["net"](batch["x"]), batch["y"])
        self.optimizers["net"].zero_grad()
        loss.backward()
        self.optimizers["net"].step()
        return {"loss": loss.detach()}

    def validate(self, batches):
        total, error, count = 0.0, 0.0, 0
        for batch in batches:
            batch = self.context.to_device(batch)
            prediction = self.models["net"](batch["x"])
            total += float(nn.functional.mse_loss(prediction, batch["y"], reduction="sum"))
            error += float((prediction - batch["y"]).abs().sum())
            count += len(prediction)
        return {"val_loss": total / count, "val_error": error / count}

    def sample(self):
        with torch.no_grad():
            x = torch.linspace(-1, 1, 64).view(16, 4)
            y = self.models["net"](x).view(1, 1, 4, 4)
        return {"predictions": Grid(y.cpu(), value_range=(-4.0, 4.0), columns=1)}


@pytest.fixture
def toy():
    """arch 'Toy', registered for the test only."""
    register("Toy", options=ToyOptions)(ToyTask)
    yield "Toy"
    ARCHITECTURES.pop("Toy")
    ARCH_OPTIONS.pop("Toy")


def _config(tmp_path, **changes) -> TrainConfig:
    settings = {**TINY, "arch": "Toy", "out": str(tmp_path), "run": "toy", "num_epochs": 3, "batch_size": 5,
                "monitor": "val_loss min", "checkpoint_every": 0, "metrics": "", **changes}
    return TrainConfig(**settings)


def test_an_architectures_own_keys_are_validated_like_the_common_ones(toy, tmp_path):
    config = load_config(None, ["arch=toy", "hidden=3", "target=MAX"])
    assert config.arch == "Toy" and config.options == {"hidden": 3, "items": 24, "target": "max"}
    assert config.arch_options == ToyOptions(hidden=3, target="max")
    with pytest.raises(ConfigError, match=r"--set: unknown key 'hiden'; did you mean 'hidden'\?.*arch Toy's own: "
                                          r"hidden, items, target"):
        load_config(None, ["arch=Toy", "hiden=3"])
    with pytest.raises(ConfigError, match=r"hidden: expected an integer >= 1, got 0"):
        load_config(None, ["arch=Toy", "hidden=0"])
    with pytest.raises(ConfigError, match=r"target: expected one of sum, max, got 'mean'"):
        load_config(None, ["arch=Toy", "target=mean"])
    with pytest.raises(ConfigError, match=r"unknown key 'hidden'"):   # DCGAN has no such key
        load_config(None, ["hidden=3"])
    (tmp_path / "toy.yaml").write_text("arch: Toy\nhidden: 5\nnum_epochs: 2\n")
    assert load_config(tmp_path / "toy.yaml").options["hidden"] == 5


def test_monitor_needs_a_validation_metric_of_the_architecture(toy, tmp_path):
    with pytest.raises(ConfigError, match=r"monitor: expected '<validation metric> min' or '... max'"):
        _config(tmp_path, monitor="val_loss lowest")
    with pytest.raises(ConfigError, match=r"monitor: val_dice is not a validation metric of arch Toy; it has "
                                          r"val_loss, val_error"):
        train(_config(tmp_path, monitor="val_dice max"))
    with pytest.raises(ConfigError, match=r"monitor: arch DCGAN has no validation set here"):
        train(TrainConfig(**{**TINY, "out": str(tmp_path), "run": "gan", "monitor": "val_loss min"}))


def test_validation_best_checkpoint_named_grids_and_per_step_schedulers(toy, tmp_path):
    summary = train(_config(tmp_path))
    run = summary.run_dir
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    validations = [record for record in records if record.get("event") == "validation"]
    assert [record["epoch"] for record in validations] == [1, 2, 3]
    best = min(validations, key=lambda record: record["val_loss"])
    assert summary.best["value"] == best["val_loss"] and summary.best["epoch"] == best["epoch"]
    saved = load_checkpoint(run / "checkpoints" / "best.pt")
    assert saved["epoch"] == best["epoch"] and saved["best"]["value"] == best["val_loss"]
    assert summary.validation == {key: validations[-1][key] for key in ("val_loss", "val_error")}
    assert sorted(path.name for path in (run / "samples").iterdir()) == [
        f"predictions_epoch_000{epoch}.png" for epoch in (1, 2, 3)]
    # 24 items in batches of 5: 5 steps an epoch; warm-up per step, halving per epoch.
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["schedulers"]["warmup"]["last_epoch"] == 15 and last["schedulers"]["decay"]["last_epoch"] == 3
    assert last["config"]["options"] == {"hidden": 8, "items": 24, "target": "sum"}
    assert (run / "loss.png").is_file() and (run / "evolution.gif").is_file()
    assert "hidden: 8" in (run / "config.yaml").read_text()


def test_resume_is_exact_for_the_new_architecture(toy, tmp_path):
    straight = train(_config(tmp_path / "a"))
    train(_config(tmp_path / "b", num_epochs=2))
    resumed = train(_config(tmp_path / "b", resume=True))
    for name in ("last.pt", "best.pt"):
        a, b = (load_checkpoint(summary.run_dir / "checkpoints" / name) for summary in (straight, resumed))
        assert a["step"] == b["step"] and a["best"] == b["best"]
        for key, value in a["models"]["net"].items():
            assert torch.equal(value, b["models"]["net"][key]), (name, key)
    with pytest.raises(ConfigError, match=r"resume: the config differs from the checkpoint's in hidden 8 -> 9"):
        train(_config(tmp_path / "b", resume=True, options={"hidden": 9}))


def test_batches_of_any_structure_reach_the_device():
    context = Context(TrainConfig(n_gpu=0))
    batch = {"image": torch.rand(2, 3, 8, 8), "pair": (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), [torch.ones(2)]),
             "name": "kept"}
    moved = context.to_device(batch)
    assert moved["image"].is_contiguous(memory_format=torch.channels_last)
    assert isinstance(moved["pair"], tuple) and isinstance(moved["pair"][1], list)
    assert moved["pair"][0].dtype == torch.uint8 and moved["name"] == "kept"
    assert torch.equal(moved["image"], batch["image"])
