"""iou / dice / pixel_accuracy against a per-image, per-class numpy loop (the oracle below),
on hand-made and random masks, in every input dtype and layout, plus the error messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgan_fast.metrics.segmentation import dice, iou, pixel_accuracy

METRICS = {"iou": iou, "dice": dice, "pixel_accuracy": pixel_accuracy}


# ---------------------------------------------------------------------------------------
# Oracle: one image and one class at a time, as the module docstring defines the scores.

def reference(name: str, pred: np.ndarray, target: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Scores (N,) of label maps (N, H, W); binary mode when num_classes is None (nonzero =
    foreground, already thresholded)."""
    scores = []
    for p, t in zip(pred, target):
        if name == "pixel_accuracy":
            same = (p != 0) == (t != 0) if num_classes is None else p == t
            scores.append(same.mean())
            continue
        classes = [True] if num_classes is None else range(num_classes)
        per_class = []
        for c in classes:
            in_p, in_t = ((p != 0), (t != 0)) if num_classes is None else ((p == c), (t == c))
            both, union = np.sum(in_p & in_t), np.sum(in_p | in_t)
            if union == 0:
                continue  # absent from both: skipped
            per_class.append(both / union if name == "iou" else 2 * both / (in_p.sum() + in_t.sum()))
        scores.append(np.mean(per_class) if per_class else 1.0)
    return np.array(scores)


def random_labels(rng, shape, num_classes=2, empty_images=()):
    labels = rng.integers(0, num_classes, shape)
    for i in empty_images:
        labels[i] = 0
    return labels


def check(actual: torch.Tensor, expected: np.ndarray, dtype=torch.float32):
    assert actual.dtype == dtype
    np.testing.assert_allclose(actual.cpu().double().numpy(), expected, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------
# Hand-made examples

@pytest.mark.parametrize("name", METRICS)
def test_small_binary_example(name):
    pred = np.array([[[1, 1, 0], [0, 1, 0], [0, 0, 0]]])
    target = np.array([[[1, 0, 0], [0, 1, 1], [0, 0, 0]]])
    both, in_pred, in_target = 2, 3, 3  # counted by eye from the arrays above
    expected = {"iou": both / (in_pred + in_target - both), "dice": 2 * both / (in_pred + in_target),
                "pixel_accuracy": 7 / 9}[name]
    assert reference(name, pred, target)[0] == pytest.approx(expected)
    check(METRICS[name](torch.from_numpy(pred), torch.from_numpy(target), reduction="none"), np.array([expected]))


def test_small_multiclass_example_skips_absent_classes():
    pred = torch.tensor([[[0, 0, 2], [2, 2, 0]]])
    target = torch.tensor([[[0, 0, 2], [2, 0, 0]]])
    # class 0: both 3, union 4; class 1: absent from both, skipped; class 2: both 2, union 3
    check(iou(pred, target, num_classes=4, reduction="none"), np.array([(3 / 4 + 2 / 3) / 2]))
    check(dice(pred, target, num_classes=4, reduction="none"), np.array([(6 / 7 + 4 / 5) / 2]))
    check(pixel_accuracy(pred, target, num_classes=4, reduction="none"), np.array([5 / 6]))


@pytest.mark.parametrize("name", METRICS)
def test_both_empty_scores_one(name):
    empty = torch.zeros(2, 1, 5, 4, dtype=torch.bool)
    check(METRICS[name](empty, empty, reduction="none"), np.ones(2))


@pytest.mark.parametrize("name", ["iou", "dice"])
def test_one_empty_scores_zero(name):
    pred = torch.zeros(1, 4, 4, dtype=torch.bool)
    target = pred.clone()
    target[0, 1, 2] = True
    check(METRICS[name](pred, target, reduction="none"), np.zeros(1))
    check(METRICS[name](target, pred, reduction="none"), np.zeros(1))


def test_multiclass_single_class_image_scores_one():
    labels = torch.full((1, 3, 3), 2)
    check(iou(labels, labels, num_classes=3), np.array(1.0))


# ---------------------------------------------------------------------------------------
# Random masks against the oracle

@pytest.mark.parametrize("name", METRICS)
@pytest.mark.parametrize("num_classes", [None, 2, 5])
def test_random_against_reference(rng, name, num_classes):
    k = num_classes or 3  # binary mode: labels 1 and 2 are both foreground
    pred = random_labels(rng, (6, 7, 9), k, empty_images=[0, 3])
    target = random_labels(rng, (6, 7, 9), k, empty_images=[0, 4])
    expected = reference(name, pred, target, num_classes)
    metric = METRICS[name]
    p, t = torch.from_numpy(pred), torch.from_numpy(target)
    check(metric(p, t, num_classes=num_classes, reduction="none"), expected)
    check(metric(p, t, num_classes=num_classes, reduction="mean"), np.array(expected.mean()))
    check(metric(p, t, num_classes=num_classes, reduction="sum"), np.array(expected.sum()))


def test_binary_dice_is_f1_of_iou(rng):
    """Dice = 2 IoU / (1 + IoU) per image: the two computations agree."""
    pred = torch.from_numpy(rng.random((8, 1, 12, 12)) < 0.4)
    target = torch.from_numpy(rng.random((8, 1, 12, 12)) < 0.4)
    jaccard = iou(pred, target, reduction="none")
    check(dice(pred, target, reduction="none"), (2 * jaccard / (1 + jaccard)).double().numpy())


@pytest.mark.parametrize("name", METRICS)
def test_device(device, rng, name):
    pred, target = random_labels(rng, (3, 1, 8, 8), 4), random_labels(rng, (3, 1, 8, 8), 4)
    for num_classes in (None, 4):
        result = METRICS[name](torch.from_numpy(pred).to(device), torch.from_numpy(target).to(device),
                               num_classes=num_classes, reduction="none")
        assert result.device.type == device.type
        check(result, reference(name, pred[:, 0], target[:, 0], num_classes))


# ---------------------------------------------------------------------------------------
# Layouts and dtypes

@pytest.mark.parametrize("name", METRICS)
def test_layouts_agree(rng, name):
    pred, target = torch.from_numpy(random_labels(rng, (4, 6, 5))), torch.from_numpy(random_labels(rng, (4, 6, 5)))
    expected = METRICS[name](pred, target, reduction="none")
    for p, t in ((pred[:, None], target[:, None]), (pred[:, None], target), (pred, target[:, None])):
        assert torch.equal(METRICS[name](p, t, reduction="none"), expected)


@pytest.mark.parametrize("name", METRICS)
@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int32, torch.int64, torch.float32, torch.float64])
def test_input_dtypes_agree(rng, name, dtype):
    pred_mask, target_mask = rng.random((5, 1, 6, 6)) < 0.5, rng.random((5, 1, 6, 6)) < 0.5
    expected = reference(name, pred_mask[:, 0], target_mask[:, 0])

    def as_dtype(mask):
        if dtype.is_floating_point:  # probabilities on the right side of the threshold
            return torch.from_numpy(np.where(mask, 0.8, 0.3)).to(dtype)
        return torch.from_numpy(mask).to(dtype)

    result_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    check(METRICS[name](as_dtype(pred_mask), as_dtype(target_mask), reduction="none"), expected, result_dtype)


def test_float64_in_either_input_gives_float64():
    mask = torch.ones(1, 2, 2)
    assert iou(mask.double(), mask.bool()).dtype == torch.float64
    assert pixel_accuracy(mask.bool(), mask.double()).dtype == torch.float64


def test_threshold_is_strict():
    probabilities = torch.tensor([[[0.3, 0.5, 0.7]]])
    target = torch.tensor([[[False, False, True]]])  # 0.5 is not above the threshold
    check(iou(probabilities, target, reduction="none"), np.ones(1))
    check(iou(probabilities, target, threshold=0.25, reduction="none"), np.array([1 / 3]))
    check(pixel_accuracy(probabilities, probabilities, threshold=0.6, reduction="none"), np.ones(1))


def test_binary_mode_merges_foreground_labels():
    pred, target = torch.tensor([[[2, 1], [0, 3]]]), torch.tensor([[[1, 1], [0, 1]]])
    check(iou(pred, target, reduction="none"), np.ones(1))
    check(iou(pred, target, num_classes=4, reduction="none"), np.array([(1 + 1 / 3 + 0 + 0) / 4]))  # classes 0, 1, 2, 3


# ---------------------------------------------------------------------------------------
# Errors

@pytest.mark.parametrize("name", METRICS)
@pytest.mark.parametrize("kwargs, pred, target, error, match", [
    ({}, torch.zeros(1, 2), torch.zeros(1, 1, 2), ValueError, r"pred must be a 3-D .*got shape \(1, 2\)"),
    ({}, torch.zeros(1, 1, 2), torch.zeros(1, 1, 1, 1, 2), ValueError, r"target must be a 3-D"),
    ({}, torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4), ValueError, r"pred must be .*argmax over dim 1"),
    ({}, torch.zeros(2, 4, 4), torch.zeros(2, 4, 5), ValueError, r"same N, H and W.*\(2, 4, 4\) and \(2, 4, 5\)"),
    ({}, torch.zeros(2, 4, 4), torch.zeros(3, 1, 4, 4), ValueError, r"same N, H and W"),
    ({}, torch.zeros(0, 4, 4), torch.zeros(0, 4, 4), ValueError, r"pred must not be empty"),
    ({}, "mask", torch.zeros(1, 2, 2), TypeError, r"pred must be a torch.Tensor, got str"),
    ({}, torch.zeros(1, 2, 2, dtype=torch.complex64), torch.zeros(1, 2, 2), TypeError, r"pred must be .*complex64"),
    ({"reduction": "avg"}, torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), ValueError, r"reduction must be one of .*'avg'"),
    ({"threshold": 1.5}, torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), ValueError, r"threshold must be .*\[0, 1\].*1.5"),
    ({"threshold": None}, torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), ValueError, r"threshold must be .*None"),
    ({"threshold": float("nan")}, torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), ValueError, r"threshold must be"),
    ({"num_classes": 1}, torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long),
     ValueError, r"num_classes must be an integer >= 2.*got 1"),
    ({"num_classes": 2.0}, torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long),
     ValueError, r"num_classes must be an integer"),
    ({"num_classes": 3}, torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), TypeError,
     r"pred must be an integer class map when num_classes is given, got torch.float32"),
    ({"num_classes": 3}, torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.bool), TypeError,
     r"target must be an integer class map"),
    ({"num_classes": 3}, torch.tensor([[[0, 3]]]), torch.tensor([[[0, 1]]]), ValueError,
     r"pred values must be class indices in \[0, num_classes\) = \[0, 3\), got values in \[0, 3\]"),
    ({"num_classes": 3}, torch.tensor([[[0, 1]]]), torch.tensor([[[-1, 1]]]), ValueError,
     r"target values must be class indices.*\[-1, 1\]"),
])
def test_errors(name, kwargs, pred, target, error, match):
    with pytest.raises(error, match=match):
        METRICS[name](pred, target, **kwargs)
