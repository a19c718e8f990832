"""Kedro dataset for a trained image classifier folder (safetensors + JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError
from kedro_datasets._typing import JSONPreview


class ClassifierDataset(AbstractDataset[Any, Any]):
    """A :class:`vitrina.models.classifiers.artefact.ImageClassifier` saved as one folder.

    ``save`` writes ``config.json``, ``model.safetensors`` (and ``gallery.npz`` for metric
    learning) into a temporary sibling folder renamed into place. ``load`` refuses a
    folder of another ``kind`` when ``load_args.kind`` is set.

    Args:
        path: the folder.
        load_args: ``device`` (default ``cpu``), ``kind`` (optional check).
        metadata: kedro-viz metadata.

    Example catalogue entry::

        "{task}.classifier":
          type: vitrina.datasets.ClassifierDataset
          path: data/06_models/${globals:catalogue}/classification/{task}/model
    """

    def __init__(
        self,
        path: str,
        load_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = Path(path)
        self._load_args = {"device": "cpu", **(load_args or {})}
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "load_args": self._load_args}

    def load(self) -> Any:
        from vitrina.models.classifiers.artefact import ImageClassifier

        if not (self._path / "config.json").is_file():
            task = self._path.parent.name
            raise DatasetError(
                f"No trained classifier at '{self._path}': run "
                f"`kedro run --pipeline=classification --namespaces={task}` (with the same --env) first"
            )
        return ImageClassifier.load(self._path, **self._load_args)

    def save(self, data: Any) -> None:
        data.save(self._path)

    def _exists(self) -> bool:
        return (self._path / "config.json").is_file()

    def preview(self) -> JSONPreview:
        """The folder's ``config.json`` without its hyper-parameters (for kedro-viz)."""
        if not self._exists():
            return JSONPreview(json.dumps({"path": str(self._path), "trained": False}))
        config = json.loads((self._path / "config.json").read_text())
        config.pop("hparams", None)
        return JSONPreview(json.dumps(config, indent=2))
