"""Kedro dataset for a trained pair matcher (feature builder + classifier + threshold)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError
from kedro_datasets._typing import JSONPreview

from vitrina.utils import atomic_path

logger = logging.getLogger(__name__)


class PairMatcherDataset(AbstractDataset[Any, Any]):
    """A :class:`vitrina.models.pair_matching.PairMatcher` directory.

    Layout: ``config.json`` (kind, threshold, feature configuration, architecture,
    training settings, validation metrics), ``features.skops`` (the fitted feature
    builder: TF-IDF vocabularies), and ``model.pt`` + ``history.csv`` (the MLP's state dict,
    feature scaler and epochs) or ``baseline.skops`` (the scikit-learn classifier).

    The directory is written under a temporary name and renamed into place, so it is
    always complete. With ``mlflow_artifact_path`` set and an MLflow run active (as
    kedro-mlflow opens one for ``kedro run``), the directory is also logged as artifacts.
    Nothing is unpickled on load: ``model.pt`` through ``torch.load(weights_only=True)``, the
    ``.skops`` files with an explicit list of trusted types (a tampered file is refused).

    Example catalogue entry::

        pair_matcher:
          type: vitrina.datasets.PairMatcherDataset
          path: data/06_models/demo/pair_matcher
          mlflow_artifact_path: pair_matcher
    """

    def __init__(
        self,
        path: str,
        mlflow_artifact_path: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = Path(path)
        self._artifact_path = mlflow_artifact_path
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "mlflow_artifact_path": self._artifact_path}

    def load(self) -> Any:
        from vitrina.models.pair_matching import PairMatcher

        if not (self._path / "config.json").is_file():
            raise DatasetError(
                f"Pair matcher directory '{self._path}' has no config.json: run "
                "`kedro run --pipeline=pair_matching` (with the same --env) first"
            )
        return PairMatcher.load(self._path)

    def save(self, data: Any) -> None:
        from vitrina.models.pair_matching import PairMatcher

        if not isinstance(data, PairMatcher):
            raise DatasetError(f"PairMatcherDataset saves a PairMatcher, got {type(data).__name__}")
        with atomic_path(self._path, is_dir=True) as tmp:
            data.save(tmp)
        if self._artifact_path:
            try:
                import mlflow
            except ImportError:  # pragma: no cover - mlflow is a dependency
                return
            if mlflow.active_run() is not None:
                mlflow.log_artifacts(str(self._path), artifact_path=self._artifact_path)

    def _exists(self) -> bool:
        return (self._path / "config.json").is_file()

    def preview(self) -> JSONPreview:
        """kedro-viz preview: ``config.json`` and the file sizes (MB)."""
        if not self._exists():
            return JSONPreview(json.dumps({"status": "not written yet", "path": str(self._path)}))
        config = json.loads((self._path / "config.json").read_text(encoding="utf-8"))
        sizes = {p.name: round(p.stat().st_size / 1e6, 3) for p in sorted(self._path.iterdir())}
        return JSONPreview(
            json.dumps({"config": config, "size_mb": sizes}, indent=2, ensure_ascii=False)
        )
