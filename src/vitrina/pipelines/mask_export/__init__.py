"""Mask export: PNG masks and overlays from the review store, for annotators and inference."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
