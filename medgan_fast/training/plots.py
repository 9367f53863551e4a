"""Pictures of a run: loss.png (losses against steps, matplotlib's Agg canvas, no pyplot
state), metrics.png (the image metrics of the sample grids against epochs) and
evolution.gif (the per-epoch sample grids as an animation, Pillow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from ..metrics.comparison import HIGHER_IS_BETTER
from ..outputs import AtomicPath

__all__ = ["MAX_FRAMES", "evenly_spaced", "gif_frame", "plot_losses", "plot_metrics", "save_evolution"]

LOSS_KEYS = ("loss_d", "loss_g", "loss", "val_loss")
LABELS = {"loss_d": "discriminator", "loss_g": "generator", "loss": "training", "val_loss": "validation"}


def plot_losses(records: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Plots each loss series of the log `records` (loss, loss_*, and the validation's
    val_loss*) against step; writes a PNG atomically."""
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    keys = sorted({key for record in records for key in record
                   if key == "loss" or key.startswith(("loss_", "val_loss"))},
                  key=lambda key: (key not in LOSS_KEYS, key))
    for key in keys:
        points = [(record["step"], record[key]) for record in records
                  if isinstance(record.get(key), (int, float)) and "step" in record]
        if points:
            steps, values = zip(*points)
            axes.plot(steps, values, label=LABELS.get(key, key), linewidth=1,
                      marker="o" if key.startswith("val_") else None)   # one point an epoch
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    if title:
        axes.set_title(title)
    if keys:
        axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    with AtomicPath(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def plot_metrics(records: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Plots each metric of the log's ``"event": "metrics"`` `records` against epoch, one panel
    a metric (their scales differ), titled with its direction; writes a PNG atomically. None
    (and nothing written) when there are no such records."""
    records = [record for record in records if record.get("event") == "metrics" and "epoch" in record]
    names = list(dict.fromkeys(key for record in records for key in record if key in HIGHER_IS_BETTER))
    if not names:
        return None
    columns = min(len(names), 3)
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(4 * columns, 3 * rows + 0.4), dpi=100)
    FigureCanvasAgg(figure)
    for index, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, index + 1)
        points = [(record["epoch"], record[name]) for record in records if isinstance(record.get(name), (int, float))]
        if points:
            epochs, values = zip(*points)
            axes.plot(epochs, values, marker="o", markersize=3, linewidth=1)
        better = "higher" if HIGHER_IS_BETTER[name] else "lower"
        axes.set_title(f"{name} ({better} is better)", fontsize=10)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
    if title:
        figure.suptitle(f"{title}: sample images against real ones")
    figure.tight_layout()
    path = Path(path)
    with AtomicPath(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def gif_frame(path: str | Path) -> Image.Image:
    """An image file as a GIF frame (grey stays grey; colour is quantised to 256 colours)."""
    with Image.open(path) as image:
        return image.copy() if image.mode == "L" else image.convert("RGB").quantize(256)


MAX_FRAMES = 60   # a 530 x 530 sample grid is ~300 KB as a GIF frame


def evenly_spaced(items: list, limit: int = MAX_FRAMES) -> list:
    """At most `limit` of `items`, evenly spaced, always with the first and the last."""
    if len(items) <= limit:
        return list(items)
    return [items[round(k * (len(items) - 1) / (limit - 1))] for k in range(limit)]


def save_evolution(frames: list[Image.Image], path: str | Path, seconds_per_frame: float = 0.5) -> Path | None:
    """An animated GIF of `frames` (:func:`gif_frame` images, in order, at most
    :data:`MAX_FRAMES` of them evenly spaced; the last one held 4x longer), written atomically.
    None when there are no frames."""
    if not frames:
        return None
    frames = evenly_spaced(frames)
    durations = [int(seconds_per_frame * 1000)] * len(frames)
    durations[-1] *= 4
    path = Path(path)
    with AtomicPath(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path
