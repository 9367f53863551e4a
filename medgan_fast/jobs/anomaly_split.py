"""``anomaly split``: the normal images a StyleGAN2 and its encoder train on, and the
labelled rest they are scored on, from one labels CSV.

A seeded `holdout` fraction of the normal class is held out; every anomalous image is held
out (the networks never see an anomaly). Images of any other label are left out of both.

Writes into ``out`` (a new folder): train/ (copies of the training images, under their own
names: the folder ``train --set data=...`` and ``train-encoder --data`` read), heldout.csv
(file and label column of the held-out images: ``score --labels``), and split.csv (every
image of the two classes, its label and its part: train or heldout). The folder is built
under a temporary name and renamed when complete, so a stopped split leaves nothing.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import console
from ..data.datasets import find_images
from ..errors import DataError, OutputError
from .anomaly_score import read_label_column

__all__ = ["SplitConfig", "split_labelled"]


@dataclass
class SplitConfig:
    data: Path
    labels: Path
    out: Path
    label_column: str = "label"
    normal: str = "0"
    anomaly: str = "1"
    holdout: float = 0.3
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if not 0 < self.holdout < 1:
            raise DataError(f"--holdout: expected a number in (0, 1), got {self.holdout!r}")
        if self.normal == self.anomaly:
            raise DataError(f"--normal and --anomaly: expected two different labels, got {self.normal!r} twice")


def split_labelled(config: SplitConfig) -> Path:
    out = Path(config.out)
    if out.exists():
        raise OutputError(f"--out {out}: already exists; expected a new folder")
    labels = read_label_column(config.labels, config.label_column)
    files = {file.stem: file for file in find_images(config.data, "--data")}
    members = {value: sorted(key for key, label in labels.items() if label == value)
               for value in (config.normal, config.anomaly)}
    for value, ids in members.items():
        if not ids:
            raise DataError(f"--labels {config.labels}: no row has {config.label_column} == {value!r}")
    missing = [key for ids in members.values() for key in ids if key not in files]
    if missing:
        raise DataError(f"--data {config.data}: no image for {len(missing)} labelled id(s), e.g. {missing[0]!r}")
    normal = np.random.default_rng(config.seed).permutation(members[config.normal])
    held = round(config.holdout * normal.size)
    if not 0 < held < normal.size:
        raise DataError(f"--holdout {config.holdout}: leaves {normal.size - held} of {normal.size} normal image(s) "
                        "for training; each part needs one")
    train_ids = sorted(normal[held:].tolist())
    heldout_ids = sorted(normal[:held].tolist() + members[config.anomaly])

    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        (partial / "train").mkdir(parents=True)
        bar = console.progress_bar(config.progress, total=len(train_ids), unit="image", desc="split")
        for key in train_ids:
            console.check_interrupt()
            shutil.copyfile(files[key], partial / "train" / files[key].name)
            bar.update()
        bar.close()
        _write_rows(partial / "heldout.csv", ["file", config.label_column],
                    [(files[key].name, labels[key]) for key in heldout_ids])
        part = dict.fromkeys(train_ids, "train") | dict.fromkeys(heldout_ids, "heldout")
        _write_rows(partial / "split.csv", ["file", config.label_column, "part"],
                    [(files[key].name, labels[key], part[key]) for key in sorted(part)])
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    console.note(f"{len(train_ids)} {config.normal} images to train on in {out / 'train'}; held out "
                 f"{held} {config.normal} and {len(members[config.anomaly])} {config.anomaly} in {out / 'heldout.csv'}")
    return out


def _write_rows(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
