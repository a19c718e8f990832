"""clip_finetune: contrastive fine-tuning of a CLIP model on the catalogue's image–title pairs."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
