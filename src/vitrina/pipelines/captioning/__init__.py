"""Captioning: product descriptions from images (ViT encoder + GPT-2 decoder), SacreBLEU."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
