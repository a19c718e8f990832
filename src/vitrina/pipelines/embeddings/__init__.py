"""Embeddings: text and image embeddings of every product, one NPZ per model."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
