"""Ingestion: read and validate a raw catalogue, map it to the canonical product schema."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
