"""Pair matching: are two listings the same product? Classifier, candidate search, reports."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
