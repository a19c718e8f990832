"""ret_meta: per group, each image's review status, mask summary and predictions."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
