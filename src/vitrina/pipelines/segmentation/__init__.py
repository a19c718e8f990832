"""Segmentation: masks of processed images into the review database, with a report."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
