"""medgan_fast.metrics.detection against scikit-learn and hand-counted cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from medgan_fast.metrics.detection import binary_report, choose_threshold, roc_auc_interval, roc_points


def scored(n=200, shift=1.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    return rng.normal(0, 1, n) + shift * labels, labels


def test_auc_and_its_interval():
    scores, labels = scored()
    result = roc_auc_interval(torch.tensor(scores), torch.tensor(labels), resamples=300)
    assert result["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert result["low"] < result["auc"] < result["high"]
    assert 0.05 < result["high"] - result["low"] < 0.3   # about 4 sd of an AUC from 200 images
    assert roc_auc_interval(scores, labels, resamples=300) == result   # seeded
    perfect = roc_auc_interval([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], resamples=50)
    assert perfect["auc"] == perfect["low"] == perfect["high"] == 1.0


def test_threshold_rules_and_report():
    scores, labels = np.array([0.1, 0.2, 0.3, 0.35, 0.6, 0.7]), np.array([0, 0, 0, 1, 1, 1])
    assert choose_threshold(scores, labels, "youden") == 0.35
    assert choose_threshold(scores, labels, "f1") == 0.35
    report = binary_report(scores, labels, 0.3)   # 0.3 and above: one false positive
    assert report["confusion_matrix"] == [[2, 1], [0, 3]]
    predicted = scores >= 0.3
    assert report["precision"] == pytest.approx(precision_score(labels, predicted))
    assert report["recall"] == pytest.approx(recall_score(labels, predicted))
    assert report["f1"] == pytest.approx(f1_score(labels, predicted))
    assert report["accuracy"] == pytest.approx(5 / 6) and report["specificity"] == pytest.approx(2 / 3)


def test_roc_points_run_from_0_to_1():
    points = roc_points(*scored())
    assert points["fpr"][0] == 0 and points["fpr"][-1] == 1 and points["tpr"][-1] == 1


@pytest.mark.parametrize("call, message", [
    (lambda: roc_auc_interval([1, 2], [0, 0]), "needs both classes"),
    (lambda: roc_auc_interval([1, 2, 3], [0, 1]), "same length"),
    (lambda: roc_auc_interval([1, 2], [0, 2]), "labels must be 0"),
    (lambda: roc_auc_interval([1, float("nan")], [0, 1]), "scores must be finite"),
    (lambda: choose_threshold([1, 2], [0, 1], "best"), "rule must be one of"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
