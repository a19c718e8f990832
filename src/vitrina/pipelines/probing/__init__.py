"""Probing: attribute classifiers on frozen embeddings, models compared side by side."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
