"""Per-image anomaly scores from an image, its reconstruction G(E(x)) and, for the feature
distances, the discriminator's features of both (tensors in, one score per image out).

f-AnoGAN's izi_f score (Schlegl et al. 2019) is
    A(x) = 1/n_x ||x - G(E(x))||^2 + kappa / n_f ||f(x) - f(G(E(x)))||^2,
the mean squared pixel residual plus kappa times the mean squared feature residual; its mean
over a batch is also the encoder's training loss. The others are the distances our users
compare: pixel ``mse`` and ``l1``, and on the features ``feature_mse``, ``cosine`` (1 - the
cosine similarity) and ``euclidean``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["DISTANCES", "FEATURE_DISTANCES", "anomaly_scores"]

DISTANCES = ("izif", "mse", "l1", "feature_mse", "cosine", "euclidean")
FEATURE_DISTANCES = ("izif", "feature_mse", "cosine", "euclidean")


def anomaly_scores(images: torch.Tensor, reconstructions: torch.Tensor, features: torch.Tensor | None = None,
                   reconstruction_features: torch.Tensor | None = None, distance: str = "izif",
                   kappa: float = 1.0) -> torch.Tensor:
    """(N,) scores, higher for worse reconstructions.

    Args:
        images, reconstructions: (N, C, H, W), the same value range.
        features, reconstruction_features: (N, F), needed by the feature distances.
        distance: one of :data:`DISTANCES`; kappa: izi_f's feature weight.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
    if images.shape != reconstructions.shape or images.dim() != 4:
        raise ValueError(f"images and reconstructions must be (N, C, H, W) of one shape, got {tuple(images.shape)} "
                         f"and {tuple(reconstructions.shape)}")
    if distance in FEATURE_DISTANCES:
        if features is None or reconstruction_features is None:
            raise ValueError(f"distance {distance!r} needs features and reconstruction_features")
        if features.shape != reconstruction_features.shape or features.shape[0] != images.shape[0]:
            raise ValueError(f"features must be (N, F) for both, N = {images.shape[0]}, got "
                             f"{tuple(features.shape)} and {tuple(reconstruction_features.shape)}")
        features, reconstruction_features = features.flatten(1).float(), reconstruction_features.flatten(1).float()
    residual = (images.float() - reconstructions.float()).flatten(1)
    if distance == "mse":
        return residual.square().mean(1)
    if distance == "l1":
        return residual.abs().mean(1)
    feature_residual = features - reconstruction_features
    if distance == "izif":
        return residual.square().mean(1) + kappa * feature_residual.square().mean(1)
    if distance == "feature_mse":
        return feature_residual.square().mean(1)
    if distance == "cosine":
        return 1 - F.cosine_similarity(features, reconstruction_features, dim=1)
    return feature_residual.norm(dim=1)
