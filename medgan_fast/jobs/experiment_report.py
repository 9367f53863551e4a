"""The augmentation experiment's report: results.json, results.md, dice_vs_fraction.png and
config.yaml in ``out``.

Per arm and fraction: the test Dice, IoU and accuracy of each seed's U-Net (the mean over
test images), then mean and sd over seeds. Paired tests (two-sided Wilcoxon signed-rank,
scipy.stats.wilcoxon) of the comparisons that ask whether GAN pairs help: ``gan`` against
``real`` and against ``classical``, and ``gan+classical`` against ``classical``:

- over test images: each image's Dice averaged over seeds, arm A against arm B (n = test
  images); at each fraction, and over all fractions (each image's Dice averaged over every
  cell);
- over seeds: each seed's mean Dice (n = seeds; with 3 seeds no two-sided p falls below
  0.25), and over all cells (n = fractions x seeds).

A comparison "helped" when A's mean Dice is higher and the image-level p < 0.05, "hurt"
when lower with p < 0.05, else "no significant difference". `config` is the
:class:`.experiment.ExperimentConfig` that ran.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.stats import wilcoxon

from .._version import __version__
from ..outputs import AtomicPath, write_json

__all__ = ["COMPARISONS", "paired_test", "write_report"]

COMPARISONS = (("gan", "real"), ("gan", "classical"), ("gan+classical", "classical"))
SIGNIFICANCE = 0.05
METRICS = ("dice", "iou", "accuracy")


def paired_test(a: list[float], b: list[float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of paired samples: n, the mean of a - b, and p
    (1 when every difference is 0; None with fewer than 2 pairs)."""
    a_values, b_values = np.asarray(a, np.float64), np.asarray(b, np.float64)
    difference = a_values - b_values
    record = {"n": len(difference), "mean_difference": float(difference.mean()) if len(difference) else None,
              "p": None}
    if len(difference) >= 2:
        record["p"] = 1.0 if not np.any(difference) else float(wilcoxon(a_values, b_values).pvalue)
    return record


def verdict(test: dict[str, Any]) -> str:
    if test["p"] is None or test["p"] >= SIGNIFICANCE:
        return "no significant difference"
    return "helped" if test["mean_difference"] > 0 else "hurt"


def summarise(config, records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """arm -> fraction (as text) -> {metric: {mean, sd, per_seed}}."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for arm in config.arms:
        for fraction in config.fractions:
            cells = [r for r in records if r["fraction"] == fraction]
            entry = {}
            for metric in METRICS:
                values = [cell["arms"][arm][metric]["mean"] for cell in cells]
                entry[metric] = {"mean": float(np.mean(values)),
                                 "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                                 "per_seed": dict(zip((str(cell["seed"]) for cell in cells), values))}
            entry["subset"] = cells[0]["subset"]
            entry["items"] = cells[0]["items"]
            entry["synthetic"] = cells[0]["synthetic"]
            table.setdefault(arm, {})[f"{fraction:g}"] = entry
    return table


def compare(config, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paired tests of :data:`COMPARISONS` whose arms both ran (see the module docstring)."""
    tests = []
    for a, b in COMPARISONS:
        if a not in config.arms or b not in config.arms:
            continue
        for fraction in [*config.fractions, None]:
            cells = [r for r in records if fraction is None or r["fraction"] == fraction]

            def image_means(arm: str) -> list[float]:
                stems = sorted(cells[0]["arms"][arm]["dice"]["per_image"])
                return [float(np.mean([cell["arms"][arm]["dice"]["per_image"][stem] for cell in cells]))
                        for stem in stems]

            over_images = paired_test(image_means(a), image_means(b))
            over_seeds = paired_test([cell["arms"][a]["dice"]["mean"] for cell in cells],
                                     [cell["arms"][b]["dice"]["mean"] for cell in cells])
            tests.append({"a": a, "b": b, "fraction": "all" if fraction is None else f"{fraction:g}",
                          "over_images": over_images, "over_seeds": over_seeds, "verdict": verdict(over_images)})
    return tests


def write_report(config, records: list[dict[str, Any]], out: Path, seconds: float,
                 command: str, train_images: int, test_images: int) -> dict[str, Any]:
    """Writes results.json, results.md, dice_vs_fraction.png and config.yaml into `out`."""
    summary = summarise(config, records)
    tests = compare(config, records)
    result = {"package_version": __version__, "command": command, "date": time.strftime("%Y-%m-%d"),
              "seconds": round(seconds, 1), "train_images": train_images, "test_images": test_images,
              "config": config.to_dict(), "summary": summary, "tests": tests, "cells": records}
    with AtomicPath(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump({"experiment": "augmentation", **config.to_dict()}, sort_keys=False))
    plot_dice(config, summary, out / "dice_vs_fraction.png")
    with AtomicPath(out / "results.md") as tmp:
        tmp.write_text(markdown(config, summary, tests, train_images, test_images, seconds))
    write_json(result, out / "results.json")   # last: its presence means the report is whole
    return result


def markdown(config, summary: dict, tests: list[dict[str, Any]], train_images: int,
             test_images: int, seconds: float) -> str:
    lines = ["# Does GAN augmentation help segmentation?", "",
             f"U-Net ({config.unet['steps']} steps, batch {config.unet['batch_size']}, depth {config.unet['depth']}, "
             f"width {config.unet['width']}) on {config.images} at {config.image_size} px"
             + (f" (tiles of the images rescaled by {config.scale:g})" if config.tile else "") + "; subsets of the "
             f"{train_images} training images, scored on the {test_images} test "
             f"{'tiles' if config.tile else 'images'} of {config.test_split}. "
             f"Seeds {', '.join(map(str, config.seeds))}; GAN pairs: {config.synthetic_ratio:g} per real image, "
             f"from a {config.mask_gan['arch']} mask GAN ({config.mask_gan['steps']} steps) and a Mask2Image "
             f"{config.image_gan['generator']} GAN ({config.image_gan['steps']} steps) trained on each cell's "
             f"subset. The cells took {seconds / 60:.0f} min in all.", "",
             "Test Dice, mean ± sd over seeds (IoU, accuracy: means):", "",
             "| fraction | images | " + " | ".join(config.arms) + " |",
             "|---|---:|" + "---:|" * len(config.arms)]
    for fraction in config.fractions:
        key = f"{fraction:g}"
        cells = [summary[arm][key] for arm in config.arms]
        count = cells[0]["subset"] if not config.tile else f"{cells[0]['subset']} ({cells[0]['items']} tiles)"
        lines.append(f"| {key} | {count} | " + " | ".join(
            f"{c['dice']['mean']:.4f} ± {c['dice']['sd']:.4f} ({c['iou']['mean']:.3f}, {c['accuracy']['mean']:.3f})"
            for c in cells) + " |")
    if tests:
        lines += ["", "Paired two-sided Wilcoxon signed-rank tests of Dice (A − B in Dice points; over images: each "
                      "test image's Dice averaged over seeds; over seeds: each seed's mean Dice):", "",
                  "| A vs B | fraction | A − B | p over images (n) | p over seeds (n) | verdict |",
                  "|---|---|---:|---:|---:|---|"]
        for test in tests:
            images, seeds = test["over_images"], test["over_seeds"]
            lines.append(f"| {test['a']} vs {test['b']} | {test['fraction']} | "
                         f"{100 * images['mean_difference']:+.2f} | {_p(images)} | {_p(seeds)} | {test['verdict']} |")
    seeds = len(config.seeds)
    lines += ["", "Verdict: a comparison helped (hurt) when A's mean Dice is higher (lower) with p < 0.05 over test "
                  f"images. With {seeds} seeds the seed-level test at one fraction cannot reach p < {2 / 2**seeds:g}.",
              ""]
    return "\n".join(lines)


def _p(test: dict[str, Any]) -> str:
    return "–" if test["p"] is None else f"{test['p']:.3g} ({test['n']})"


def plot_dice(config, summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    try:
        for offset, arm in enumerate(config.arms):
            keys = [f"{f:g}" for f in config.fractions]
            # A small horizontal offset per arm keeps the error bars apart.
            x = [100 * f * (1 + 0.015 * (offset - len(config.arms) / 2)) for f in config.fractions]
            axes.errorbar(x, [summary[arm][k]["dice"]["mean"] for k in keys],
                          yerr=[summary[arm][k]["dice"]["sd"] for k in keys], marker="o", capsize=3, label=arm)
        axes.set_xscale("log")
        axes.set_xticks([100 * f for f in config.fractions], [f"{100 * f:g}%" for f in config.fractions])
        axes.minorticks_off()
        axes.set_xlabel("fraction of the real training set")
        axes.set_ylabel("test Dice (mean ± sd over seeds)")
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        with AtomicPath(path) as tmp:
            figure.savefig(tmp, format="png")
    finally:
        plt.close(figure)
