"""Classification: image classifiers trained end to end (multiclass, multilabel, metric learning)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
