"""Tuning: Optuna studies over the trainable steps, tracked in MLflow."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
