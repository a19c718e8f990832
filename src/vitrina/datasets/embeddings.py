"""NPZ embeddings: the Kedro dataset of :class:`vitrina.embeddings.Embeddings` (re-exported here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError
from kedro_datasets._typing import TablePreview

from vitrina.embeddings import MODALITIES, Embeddings
from vitrina.utils import atomic_path

__all__ = ["MODALITIES", "Embeddings", "EmbeddingsDataset"]


class EmbeddingsDataset(AbstractDataset[Embeddings, Embeddings]):
    """Kedro dataset for one model's embeddings as an ``.npz`` file.

    The file holds arrays ``ids`` (str ``[N]``), ``text`` (float32 ``[N, D]``) and ``image``
    (float32 ``[N, D]``). Saving writes a temporary file beside ``filepath`` and renames it,
    so an interrupted run never leaves a truncated NPZ.

    Example catalogue entry::

        "{model}.embeddings":
          type: vitrina.datasets.EmbeddingsDataset
          filepath: data/04_feature/embeddings/{model}.npz
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def load(self) -> Embeddings:
        if not self._filepath.exists():
            raise DatasetError(
                f"Embeddings file '{self._filepath}' does not exist: run "
                "`kedro run --pipeline=embeddings` (with the same --env) first"
            )
        with np.load(self._filepath, allow_pickle=False) as npz:
            missing = {"ids", *MODALITIES} - set(npz.files)
            if missing:
                raise DatasetError(f"'{self._filepath}' lacks arrays {sorted(missing)}")
            try:
                return Embeddings(ids=npz["ids"], text=npz["text"], image=npz["image"])
            except ValueError as exc:
                raise DatasetError(f"'{self._filepath}': {exc}") from exc

    def save(self, data: Embeddings) -> None:
        if not isinstance(data, Embeddings):
            raise DatasetError(f"EmbeddingsDataset saves Embeddings, got {type(data).__name__}")
        with atomic_path(self._filepath) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, ids=data.ids.astype(str), text=data.text, image=data.image)

    def _exists(self) -> bool:
        return self._filepath.exists()

    def preview(self, nrows: int = 5) -> TablePreview:
        """kedro-viz table preview: shapes and the first ``nrows`` ids with vector heads."""
        if not self._filepath.exists():
            return TablePreview(
                {"columns": ["status"], "index": [0], "data": [["not written yet"]]}
            )
        return table_preview(self.load(), nrows)


def table_preview(emb: Embeddings, nrows: int = 5) -> TablePreview:
    """kedro-viz table: the first ``nrows`` ids with the heads of their vectors, and the shapes."""
    rows = [
        [
            str(emb.ids[i]),
            np.array2string(emb.text[i, :4], precision=3),
            np.array2string(emb.image[i, :4], precision=3),
        ]
        for i in range(min(nrows, len(emb)))
    ]
    rows.append(["shape", str(list(emb.text.shape)), str(list(emb.image.shape))])
    return TablePreview(
        {
            "columns": ["id", "text[:4]", "image[:4]"],
            "index": list(range(len(rows))),
            "data": rows,
        }
    )
