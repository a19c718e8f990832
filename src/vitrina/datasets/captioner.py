"""Kedro dataset for a captioner directory (model, tokenizer, image processor)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError
from kedro_datasets._typing import JSONPreview

from vitrina.models.captioner import CAPTIONER_FILES, META_FILE


class CaptionerDataset(AbstractDataset[Any, Any]):
    """A :class:`vitrina.models.captioner.Captioner` saved as one directory.

    ``save`` writes the model (safetensors, fp32), the tokenizer, the image processor and
    ``captioner.json`` into a temporary sibling directory renamed into place, so readers
    never see half a captioner. ``load`` checks that the tokenizer is the one the model was
    trained with.

    Args:
        path: the directory.
        load_args: ``device`` (default ``cpu``) and ``precision`` (default ``fp32``; ``auto``
            loads bf16 weights directly where the CPU supports bf16).
        metadata: kedro-viz metadata.

    Example catalogue entry::

        captioner:
          type: vitrina.datasets.captioner.CaptionerDataset
          path: data/06_models/${globals:catalogue}/captioner
    """

    def __init__(
        self,
        path: str,
        load_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = Path(path)
        self._load_args = {"device": "cpu", "precision": "fp32", **(load_args or {})}
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "load_args": self._load_args}

    def load(self) -> Any:
        from vitrina.models.captioner import load_captioner

        missing = [f for f in CAPTIONER_FILES if not (self._path / f).is_file()]
        if missing:
            raise DatasetError(
                f"Captioner directory '{self._path}' lacks {missing}: run "
                "`kedro run --pipeline=captioning` (with the same --env) first"
            )
        return load_captioner(self._path, **self._load_args)

    def save(self, data: Any) -> None:
        from vitrina.models.captioner import Captioner

        if not isinstance(data, Captioner):
            raise DatasetError(f"CaptionerDataset saves a Captioner, got {type(data).__name__}")
        data.save(self._path)

    def _exists(self) -> bool:
        return all((self._path / f).is_file() for f in CAPTIONER_FILES)

    def preview(self) -> JSONPreview:
        """kedro-viz preview: ``captioner.json`` (configuration, training summary),
        architecture sizes from ``config.json`` and file sizes (MB)."""
        if not self._exists():
            return JSONPreview(json.dumps({"status": "not written yet", "path": str(self._path)}))
        meta = json.loads((self._path / META_FILE).read_text())
        config = json.loads((self._path / "config.json").read_text())
        enc, dec = config.get("encoder", {}), config.get("decoder", {})
        architecture = {
            "encoder": {
                k: enc.get(k)
                for k in (
                    "model_type",
                    "image_size",
                    "patch_size",
                    "hidden_size",
                    "num_hidden_layers",
                )
            },
            "decoder": {
                k: dec.get(k)
                for k in ("model_type", "vocab_size", "n_positions", "n_embd", "n_layer")
            },
        }
        sizes = {
            p.name: round(p.stat().st_size / 1e6, 3)
            for p in sorted(self._path.iterdir())
            if p.is_file()
        }
        return JSONPreview(
            json.dumps(
                {"captioner": meta, "architecture": architecture, "size_mb": sizes}, indent=2
            )
        )
