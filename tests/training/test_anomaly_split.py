"""anomaly split: a seeded share of the normal class to train on, the other normal images and
every anomaly held out, nothing of another label anywhere, and refusals by name."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from medgan_fast.errors import DataError, OutputError
from medgan_fast.jobs.anomaly_split import SplitConfig, split_labelled

from .conftest import run_module


@pytest.fixture
def labelled(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rows = ["isic_id,diagnosis"]
    for k in range(14):
        Image.fromarray(np.full((8, 8, 3), 10 * k, np.uint8)).save(folder / f"ISIC_{k:02d}.jpg")
        rows.append(f"ISIC_{k:02d},{('nevus', 'nevus', 'melanoma', '')[k % 4]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return dict(data=folder, labels=tmp_path / "labels.csv", label_column="diagnosis", normal="nevus",
                anomaly="melanoma", holdout=0.3, progress=False)


def read(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_split_holds_out_part_of_the_normal_class_and_every_anomaly(labelled, tmp_path):
    out = split_labelled(SplitConfig(out=tmp_path / "split", **labelled))
    train = sorted(p.name for p in (out / "train").iterdir())
    heldout = read(out / "heldout.csv")
    assert len(train) == 6 and all(p.endswith(".jpg") for p in train)          # 8 nevi, 2 held out
    assert sorted(row["diagnosis"] for row in heldout) == ["melanoma"] * 3 + ["nevus"] * 2
    assert not set(train) & {row["file"] for row in heldout}
    parts = {row["file"]: row["part"] for row in read(out / "split.csv")}
    assert len(parts) == 11 and sum(part == "train" for part in parts.values()) == 6   # the unlabelled 3 left out
    assert (out / "train" / train[0]).read_bytes() == (labelled["data"] / train[0]).read_bytes()
    again = split_labelled(SplitConfig(out=tmp_path / "again", **labelled))
    assert sorted(p.name for p in (again / "train").iterdir()) == train             # same seed, same split
    other = split_labelled(SplitConfig(out=tmp_path / "other", **{**labelled, "seed": 1}))
    assert sorted(p.name for p in (other / "train").iterdir()) != train


def test_split_refusals_name_the_argument(labelled, tmp_path):
    with pytest.raises(OutputError, match="--out .*already exists"):
        split_labelled(SplitConfig(out=tmp_path, **labelled))
    with pytest.raises(DataError, match="no row has diagnosis == 'basal'"):
        split_labelled(SplitConfig(out=tmp_path / "a", **{**labelled, "anomaly": "basal"}))
    with pytest.raises(DataError, match="--holdout: expected a number in"):
        SplitConfig(out=tmp_path / "b", **{**labelled, "holdout": 1.0})
    (labelled["data"] / "ISIC_00.jpg").unlink()
    with pytest.raises(DataError, match="--data .*no image for 1 labelled id"):
        split_labelled(SplitConfig(out=tmp_path / "c", **labelled))
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_the_anomaly_command_splits(labelled, tmp_path):
    process = run_module("-m", "medgan_fast.anomaly", "split", "--data", str(labelled["data"]), "--labels",
                         str(labelled["labels"]), "--label-column", "diagnosis", "--normal", "nevus",
                         "--anomaly", "melanoma", "--out", str(tmp_path / "split"), "--no-progress", cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    assert "6 nevus images to train on" in process.stderr
    assert len(read(tmp_path / "split" / "heldout.csv")) == 5
