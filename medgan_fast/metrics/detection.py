"""Detection metrics for anomaly scores (scores and labels in, numbers out): ROC AUC with a
bootstrap interval, a threshold chosen on one part of the data, and precision, recall, F1,
accuracy and the confusion matrix of another part at that threshold. Higher scores mean
"more anomalous"; label 1 is the anomaly (melanoma), 0 the normal class (nevus).

scikit-learn computes the AUC, the ROC curve and the confusion matrix; what is ours is the
protocol: the interval resamples images (a percentile bootstrap, each resample keeping both
classes), and the threshold never sees the data it is judged on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

__all__ = ["THRESHOLD_RULES", "binary_report", "choose_threshold", "roc_auc_interval", "roc_points"]

THRESHOLD_RULES = ("youden", "f1")


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _arrays(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = _numpy(scores).astype(np.float64).ravel(), _numpy(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels must have the same length, got {scores.size} and {labels.size}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 (normal) or 1 (anomaly), got values {sorted(set(labels.tolist()))[:5]}")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    return scores, labels.astype(int)


def _both_classes(labels: np.ndarray, what: str) -> None:
    if labels.min() == labels.max():
        raise ValueError(f"{what} needs both classes (0 and 1), got only {int(labels[0])}")


def roc_auc_interval(scores, labels, resamples: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> dict[str, float]:
    """ROC AUC and its percentile-bootstrap interval: {"auc", "low", "high", "resamples"}.

    Each resample draws the images with replacement; one that lacks a class is drawn again.
    """
    scores, labels = _arrays(scores, labels)
    _both_classes(labels, "ROC AUC")
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    for k in range(resamples):
        while True:
            pick = rng.integers(0, labels.size, labels.size)
            if labels[pick].min() != labels[pick].max():
                break
        values[k] = roc_auc_score(labels[pick], scores[pick])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return {"auc": float(roc_auc_score(labels, scores)), "low": float(low), "high": float(high),
            "resamples": resamples, "confidence": confidence}


def roc_points(scores, labels) -> dict[str, list[float]]:
    """The ROC curve: {"fpr", "tpr", "thresholds"} (for the plot)."""
    scores, labels = _arrays(scores, labels)
    _both_classes(labels, "a ROC curve")
    fpr, tpr, thresholds = roc_curve(labels, scores)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thresholds.tolist()}


def choose_threshold(scores, labels, rule: str = "youden") -> float:
    """The score above which an image is called an anomaly, chosen on these (validation)
    scores: "youden" maximises sensitivity + specificity - 1, "f1" the F1 of the anomaly
    class. Ties go to the lowest threshold."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"rule must be one of {THRESHOLD_RULES}, got {rule!r}")
    scores, labels = _arrays(scores, labels)
    _both_classes(labels, "choosing a threshold")
    candidates = np.unique(scores)
    best, best_value = candidates[0], -np.inf
    for threshold in candidates:
        predicted = scores >= threshold
        tp = int((predicted & (labels == 1)).sum())
        fp = int((predicted & (labels == 0)).sum())
        fn = int((~predicted & (labels == 1)).sum())
        tn = int((~predicted & (labels == 0)).sum())
        if rule == "youden":
            value = tp / (tp + fn) + tn / (tn + fp) - 1
        else:
            value = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if value > best_value:
            best, best_value = threshold, value
    return float(best)


def binary_report(scores, labels, threshold: float) -> dict[str, Any]:
    """Precision, recall, F1 (of the anomaly class), accuracy, specificity and the confusion
    matrix [[tn, fp], [fn, tp]] of calling ``score >= threshold`` an anomaly."""
    scores, labels = _arrays(scores, labels)
    predicted = (scores >= threshold).astype(int)
    (tn, fp), (fn, tp) = confusion_matrix(labels, predicted, labels=[0, 1]).tolist()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"threshold": float(threshold), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "accuracy": (tp + tn) / labels.size, "specificity": tn / (tn + fp) if tn + fp else 0.0,
            "confusion_matrix": [[tn, fp], [fn, tp]], "count": int(labels.size)}
