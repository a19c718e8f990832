"""Node: the trained classifier in the MLflow model registry (when ``register_models``)."""

from __future__ import annotations

from typing import Any

import pandas as pd


def register_classifier(
    classifier: Any, metrics: pd.DataFrame, mlflow_params: dict[str, Any]
) -> dict[str, Any]:
    """Log the classifier as an MLflow ``pyfunc`` model and register it as
    ``<prefix>-<task>-classifier`` (``mlflow.register_models: true``); the record says
    name, version and ``models:/`` URI, or ``registered: false``."""
    from vitrina.registry import register_image_classifier

    return register_image_classifier(classifier, metrics, mlflow_params)
