"""Image processing: convert product images to RGB and resize them to a square."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
