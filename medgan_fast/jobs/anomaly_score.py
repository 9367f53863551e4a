"""``anomaly score``: every labelled image of a folder scored by how badly the encoder and
its StyleGAN2 reconstruct it, and the report.

Protocol: the scored images (normal and anomalous, none of the encoder's or G's training
images) are split, stratified and seeded, into a validation part (``val_fraction``) and a
test part. The threshold is chosen on the validation part only (:func:`medgan_fast.metrics.
detection.choose_threshold`); the test part gets the ROC AUC with its bootstrap interval and
precision, recall, F1 and the confusion matrix at that threshold.

Writes into ``out`` (a new folder, or with overwrite a folder emptied of these files):
scores.csv (file, score, label, part), report.json, roc.png, confusion.png, violin.png
(scores per class) and tsne.png (t-SNE of the w codes, coloured by label).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .. import console
from ..data.datasets import FolderDataset
from ..errors import DataError
from ..metrics.anomaly import DISTANCES, anomaly_scores
from ..metrics.detection import THRESHOLD_RULES, binary_report, choose_threshold, roc_auc_interval, roc_points
from ..outputs import AtomicPath, check_output_folder, write_json
from .anomaly import load_encoder

__all__ = ["ScoreConfig", "read_label_column", "read_labels", "score"]

ID_COLUMNS = ("file", "image", "isic_id", "id")


@dataclass
class ScoreConfig:
    encoder: Path
    data: Path
    labels: Path
    out: Path
    distance: str = "izif"
    kappa: float | None = None       # None: the encoder's training kappa
    label_column: str = "label"
    anomaly: str = "1"               # the label value of the anomalous class
    val_fraction: float = 0.3
    threshold_rule: str = "youden"
    bootstrap: int = 2000
    seed: int = 0
    batch_size: int = 16
    device: str = "cpu"
    progress: bool = True
    overwrite: bool = False

    def __post_init__(self):
        if self.distance not in DISTANCES:
            raise DataError(f"--distance: expected one of {', '.join(DISTANCES)}, got {self.distance!r}")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise DataError(f"--threshold-rule: expected one of {', '.join(THRESHOLD_RULES)}, got "
                            f"{self.threshold_rule!r}")
        if not 0 < self.val_fraction < 1:
            raise DataError(f"--val-fraction: expected a number in (0, 1), got {self.val_fraction!r}")


def read_labels(path: Path, label_column: str, anomaly: str) -> dict[str, int]:
    """{image id: 1 if its label is `anomaly` else 0} from a CSV whose id column is one of
    file, image, isic_id, id (else the first column)."""
    return {key: int(value == anomaly) for key, value in read_label_column(path, label_column).items()}


def read_label_column(path: Path, label_column: str) -> dict[str, str]:
    """{image id (a file stem): its `label_column` value, stripped} from a CSV (see read_labels)."""
    try:
        with open(path, newline="") as file:
            rows = list(csv.DictReader(file))
    except OSError as error:
        raise DataError(f"--labels {path}: cannot be read ({error.strerror or error})") from error
    if not rows:
        raise DataError(f"--labels {path}: no rows")
    columns = list(rows[0])
    if label_column not in columns:
        raise DataError(f"--labels {path}: no column {label_column!r} (--label-column); columns: {', '.join(columns)}")
    id_column = next((c for c in ID_COLUMNS if c in columns), columns[0])
    return {Path(row[id_column]).stem: str(row[label_column]).strip() for row in rows}


def _stratified_parts(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """'validation' or 'test' per image: `fraction` of each class (at least one) to validation."""
    rng = np.random.default_rng(seed)
    parts = np.full(labels.size, "test", dtype=object)
    for value in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == value))
        take = max(1, round(fraction * members.size))
        if members.size - take < 1:
            raise DataError(f"--labels: class {value} has {members.size} scored image(s); each part needs one")
        parts[members[:take]] = "validation"
    return parts


def score(config: ScoreConfig) -> Path:
    out = check_output_folder(config.out, "--out", overwrite=config.overwrite, pattern="*")
    labels_by_id = read_labels(config.labels, config.label_column, config.anomaly)
    model = load_encoder(config.encoder, config.device)
    images = FolderDataset(config.data, model.config.image_size, model.config.number_channels)
    picked = [k for k, file in enumerate(images.files) if file.stem in labels_by_id]
    if not picked:
        raise DataError(f"--labels {config.labels}: none of its ids is an image of --data {config.data}")
    console.note(f"scoring {len(picked)} labelled images of {len(images.files)} in {config.data}")
    kappa = model.config.arch_options.kappa if config.kappa is None else config.kappa
    scores, codes = [], []
    bar = console.progress_bar(config.progress, total=len(picked), unit="image", desc="score")
    for start in range(0, len(picked), config.batch_size):
        console.check_interrupt()
        batch = torch.stack([images[k] for k in picked[start:start + config.batch_size]]).to(config.device)
        w, rebuilt = model(batch)
        with torch.no_grad():
            features = (model.discriminator.features(batch), model.discriminator.features(rebuilt))
        scores.append(anomaly_scores(batch, rebuilt, *features, config.distance, kappa).cpu())
        codes.append(w.cpu())
        bar.update(len(batch))
    bar.close()
    scores, codes = torch.cat(scores).numpy(), torch.cat(codes).numpy()
    names = [images.files[k].name for k in picked]
    labels = np.array([labels_by_id[images.files[k].stem] for k in picked])
    if labels.min() == labels.max():
        raise DataError(f"--labels: every scored image is in class {labels[0]}; score needs both "
                        f"(--anomaly {config.anomaly!r} in column {config.label_column!r})")
    parts = _stratified_parts(labels, config.val_fraction, config.seed)
    val, test = parts == "validation", parts == "test"
    threshold = choose_threshold(scores[val], labels[val], config.threshold_rule)
    report = {
        "distance": config.distance, "kappa": kappa, "encoder": str(config.encoder), "data": str(config.data),
        "labels": str(config.labels), "anomaly": f"{config.label_column} == {config.anomaly}",
        "counts": {"validation": {"normal": int((labels[val] == 0).sum()), "anomaly": int(labels[val].sum())},
                   "test": {"normal": int((labels[test] == 0).sum()), "anomaly": int(labels[test].sum())}},
        "threshold_rule": config.threshold_rule, "threshold_chosen_on": "validation",
        "test": {"roc_auc": roc_auc_interval(scores[test], labels[test], config.bootstrap, seed=config.seed),
                 **binary_report(scores[test], labels[test], threshold)},
        "validation": binary_report(scores[val], labels[val], threshold),
    }
    out.mkdir(parents=True, exist_ok=True)
    with AtomicPath(out / "scores.csv") as tmp, open(tmp, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["file", "score", "label", "part"])
        writer.writerows(zip(names, scores.tolist(), labels.tolist(), parts.tolist()))
    write_json(report, out / "report.json")
    _plots(out, scores, labels, test, codes, report, config.seed)
    auc = report["test"]["roc_auc"]
    console.note(f"test ROC AUC {auc['auc']:.3f} (95% interval {auc['low']:.3f} to {auc['high']:.3f}), F1 "
                 f"{report['test']['f1']:.3f} at threshold {threshold:.4g}")
    return out


def _figure(size=(5, 4)):
    figure = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    with AtomicPath(path) as tmp:
        figure.savefig(tmp, format="png")


def _plots(out: Path, scores, labels, test, codes, report, seed) -> None:
    from sklearn.manifold import TSNE

    figure, axes = _figure()
    points = roc_points(scores[test], labels[test])
    auc = report["test"]["roc_auc"]
    axes.plot(points["fpr"], points["tpr"], label=f"AUC {auc['auc']:.3f} ({auc['low']:.3f}-{auc['high']:.3f})")
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test part")
    axes.legend(loc="lower right")
    _save(figure, out / "roc.png")

    figure, axes = _figure((4, 4))
    matrix = np.array(report["test"]["confusion_matrix"])
    axes.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        axes.text(j, i, str(value), ha="center", va="center", color="white" if value > matrix.max() / 2 else "black")
    axes.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["normal", "anomaly"], yticklabels=["normal", "anomaly"],
             xlabel="predicted", ylabel="true", title=f"test, threshold {report['test']['threshold']:.3g}")
    _save(figure, out / "confusion.png")

    figure, axes = _figure()
    axes.violinplot([scores[labels == 0], scores[labels == 1]], showmedians=True)
    axes.set(xticks=[1, 2], xticklabels=["normal", "anomaly"], ylabel=f"{report['distance']} score",
             title="scores per class (both parts)")
    _save(figure, out / "violin.png")

    figure, axes = _figure()
    embedded = TSNE(2, perplexity=min(30.0, len(codes) - 1.0), init="pca", random_state=seed).fit_transform(codes)
    for value, name in ((0, "normal"), (1, "anomaly")):
        axes.scatter(*embedded[labels == value].T, s=8, label=name)
    axes.set(title="t-SNE of the w codes")
    axes.legend()
    _save(figure, out / "tsne.png")
