"""Kedro dataset for a CLIP checkpoint directory in the ruCLIP layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError
from kedro_datasets._typing import JSONPreview

RUCLIP_FILES = ("bpe.model", "config.json", "pytorch_model.bin")


class RuClipCheckpointDataset(AbstractDataset[Any, Any]):
    """A ruCLIP checkpoint directory (``bpe.model``, ``config.json``, ``pytorch_model.bin``).

    ``load()`` returns a :class:`vitrina.models.ruclip.RuClipBundle` (``CLIPModel``,
    tokenizer, image processor, config); ``save(bundle)`` writes the three files through
    a temporary directory renamed into place, so the directory is always complete. The
    layout is the one of the hub's ``ai-forever/ruclip-*`` checkpoints, so what Vitrina
    saves loads in the old ruclip package too.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    def load(self) -> Any:
        from vitrina.models.ruclip import load_ruclip

        missing = [f for f in RUCLIP_FILES if not (self._path / f).is_file()]
        if missing:
            raise DatasetError(
                f"Checkpoint directory '{self._path}' lacks {missing}: run the pipeline that writes it "
                "(`kedro run --pipeline=embeddings` for the tiny model) first"
            )
        return load_ruclip(self._path)

    def save(self, data: Any) -> None:
        from vitrina.models.ruclip import save_ruclip_checkpoint

        save_ruclip_checkpoint(data.model, data.tokenizer, data.config, self._path)

    def _exists(self) -> bool:
        return all((self._path / f).is_file() for f in RUCLIP_FILES)

    def preview(self) -> JSONPreview:
        """kedro-viz preview: the checkpoint's ``config.json`` and file sizes (MB)."""
        if not self._exists():
            return JSONPreview(json.dumps({"status": "not written yet", "path": str(self._path)}))
        config = json.loads((self._path / "config.json").read_text())
        sizes = {f: round((self._path / f).stat().st_size / 1e6, 3) for f in RUCLIP_FILES}
        return JSONPreview(json.dumps({"config": config, "size_mb": sizes}, indent=2))
