"""Captioning inference: caption image files with the trained captioner, write a CSV."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
