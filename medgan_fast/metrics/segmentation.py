"""Segmentation overlap metrics per image: IoU (Jaccard), Dice (F1) and pixel accuracy.

Conventions shared by :func:`iou`, :func:`dice` and :func:`pixel_accuracy`:

- ``pred`` and ``target`` are (N, H, W) or (N, 1, H, W) tensors (the two may differ in this
  respect only) of bool, integer or floating dtype, on the same device.
- Binary mode (``num_classes=None``): the foreground is ``x != 0`` for bool/integer tensors
  and ``x > threshold`` (strictly greater, as torchmetrics) for floating tensors, so
  probabilities of exactly ``threshold`` count as background. Only the foreground class is
  scored; an image where both masks are empty scores 1.0.
- Multi-class mode (``num_classes=K``, K >= 2): pred and target are integer class maps with
  values in [0, K); the background class 0 is scored like any other. An image's score is the
  unweighted mean over the classes present in its pred or its target; classes absent from
  both are skipped (counting them as 1.0 or 0.0 would reward or punish absent classes).
- ``reduction``: "none" gives one value per image, shape (N,); "mean" and "sum" reduce over
  the batch. Results are float32, or float64 when either input is float64.
"""

from __future__ import annotations

import numbers

import torch

__all__ = ["dice", "iou", "pixel_accuracy"]

REDUCTIONS = ("none", "mean", "sum")


def _check_mask(name: str, x) -> torch.Tensor:
    """(N, H, W) or (N, 1, H, W) real tensor -> (N, H*W)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{name} must be a bool, integer or real floating tensor, got {x.dtype}")
    if x.dim() == 4 and x.shape[1] != 1:
        raise ValueError(f"{name} must be (N, H, W) or (N, 1, H, W), got shape {tuple(x.shape)}; "
                         "for per-class scores (N, C, H, W) take argmax over dim 1 first")
    if x.dim() not in (3, 4):
        raise ValueError(f"{name} must be a 3-D (N, H, W) or 4-D (N, 1, H, W) tensor, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)


def _labels(pred, target, threshold, num_classes) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
    """Checks the arguments; returns pred and target labels (N, P) (bool in binary mode,
    int64 otherwise) and the result dtype."""
    pred_flat, target_flat = _check_mask("pred", pred), _check_mask("target", target)
    if pred_flat.shape != target_flat.shape or pred.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"pred and target must have the same N, H and W, got shapes {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    if pred.device != target.device:
        raise ValueError(f"pred and target must be on the same device, got {pred.device} and {target.device}")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    result_dtype = torch.float64 if torch.float64 in (pred.dtype, target.dtype) else torch.float32

    if num_classes is None:
        def foreground(x):
            return x > threshold if x.is_floating_point() else x != 0
        return foreground(pred_flat), foreground(target_flat), result_dtype

    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2 (or None for binary masks), got {num_classes!r}")
    labels = []
    for name, x in (("pred", pred_flat), ("target", target_flat)):
        if x.is_floating_point() or x.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer class map when num_classes is given, got {x.dtype}")
        low, high = (v.item() for v in torch.aminmax(x))
        if low < 0 or high >= num_classes:
            raise ValueError(f"{name} values must be class indices in [0, num_classes) = [0, {num_classes}), "
                             f"got values in [{low}, {high}]")
        labels.append(x.long())
    return labels[0], labels[1], result_dtype


def _class_counts(pred, target, num_classes):
    """Per image and class: pixels in pred, in target, and in both. Each (N, K); binary
    mode scores only the foreground, so K = 1 there."""
    if num_classes is None:
        return pred.sum(1, keepdim=True), target.sum(1, keepdim=True), (pred & target).sum(1, keepdim=True)
    n, k = pred.shape[0], num_classes
    image = torch.arange(n, device=pred.device).unsqueeze(1)  # [N, 1]
    pred_bin, target_bin = image * k + pred, image * k + target  # [N, P] flat (image, class) bins
    # Pixels where the labels disagree go to one extra bin that is dropped: no boolean
    # indexing, so no host sync on CUDA.
    both_bin = torch.where(pred == target, pred_bin, n * k)

    def count(bins):
        return torch.bincount(bins.reshape(-1), minlength=n * k + 1)[: n * k].view(n, k)

    return count(pred_bin), count(target_bin), count(both_bin)


def _overlap_score(pred, target, threshold, num_classes, reduction, dice: bool) -> torch.Tensor:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    pred, target, dtype = _labels(pred, target, threshold, num_classes)
    pred_count, target_count, both = (c.to(dtype) for c in _class_counts(pred, target, num_classes))
    union = pred_count + target_count - both
    present = union > 0  # [N, K] classes in pred or target
    ratio = 2 * both / (pred_count + target_count) if dice else both / union
    ratio = torch.where(present, ratio, torch.zeros_like(ratio))  # absent classes: 0/0, skipped
    num_present = present.sum(1)
    # Binary images with both masks empty have no present class: they score 1.0.
    score = torch.where(num_present > 0, ratio.sum(1) / num_present.clamp_min(1), torch.ones_like(ratio[:, 0]))
    return _reduce(score, reduction)


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return values
    return values.mean() if reduction == "mean" else values.sum()


def iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5, reduction: str = "mean",
        num_classes: int | None = None) -> torch.Tensor:
    """Intersection over union (Jaccard index), |P ∩ T| / |P ∪ T|, per image.

    Args:
        pred, target: (N, H, W) or (N, 1, H, W) bool, integer or floating masks (see the
            module docstring for how each dtype is binarised).
        threshold: floats above it (strictly) are foreground; in [0, 1].
        reduction: "none" -> (N,), "mean" or "sum" over the batch -> 0-d tensor.
        num_classes: None for binary masks; K >= 2 for integer class maps in [0, K), scored
            as the mean IoU over the classes present in each image's pred or target.

    Both masks empty -> 1.0.

    Example:
        >>> pred = torch.tensor([[[1, 1], [0, 0]]])
        >>> target = torch.tensor([[[1, 0], [0, 0]]])
        >>> iou(pred, target)
        tensor(0.5000)
        >>> iou(pred, target, num_classes=2)  # (background 2/3 + foreground 1/2) / 2
        tensor(0.5833)
    """
    return _overlap_score(pred, target, threshold, num_classes, reduction, dice=False)


def dice(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5, reduction: str = "mean",
         num_classes: int | None = None) -> torch.Tensor:
    """Dice coefficient (F1), 2 |P ∩ T| / (|P| + |T|), per image; arguments as :func:`iou`.

    Both masks empty -> 1.0.

    Example:
        >>> pred = torch.tensor([[[0.9, 0.8], [0.1, 0.2]]])
        >>> target = torch.tensor([[[True, False], [False, False]]])
        >>> dice(pred, target)
        tensor(0.6667)
    """
    return _overlap_score(pred, target, threshold, num_classes, reduction, dice=True)


def pixel_accuracy(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5, reduction: str = "mean",
                   num_classes: int | None = None) -> torch.Tensor:
    """Fraction of pixels whose binarised (or, with ``num_classes``, class) labels agree, per
    image; arguments as :func:`iou`. Both masks empty -> 1.0, as every pixel agrees.

    Example:
        >>> pred = torch.tensor([[[2, 1], [0, 0]]])
        >>> target = torch.tensor([[[1, 1], [0, 0]]])
        >>> pixel_accuracy(pred, target)  # binary: 2 and 1 are both foreground
        tensor(1.)
        >>> pixel_accuracy(pred, target, num_classes=3)
        tensor(0.7500)
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    pred, target, dtype = _labels(pred, target, threshold, num_classes)
    return _reduce((pred == target).to(dtype).mean(1), reduction)
