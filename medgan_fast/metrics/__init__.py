"""Metrics: image quality (piq-compatible), distribution and segmentation."""
