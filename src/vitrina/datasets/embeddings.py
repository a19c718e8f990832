"""NPZ embeddings: the ``Embeddings`` container and its Kedro dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError
from kedro_datasets._typing import TablePreview

from vitrina.utils import atomic_path

MODALITIES = ("text", "image")


@dataclass(frozen=True)
class Embeddings:
    """Per-product text and image embeddings of one model.

    Attributes:
        ids: product ids, ``str`` array of shape ``[N]``, unique.
        text: ``float32`` array ``[N, D_text]``, rows L2-normalised.
        image: ``float32`` array ``[N, D_image]``, rows L2-normalised.

    Raises:
        ValueError: on duplicate ids, a row count that differs between arrays, arrays that
            are not 2-D, or non-finite values.
    """

    ids: np.ndarray
    text: np.ndarray
    image: np.ndarray

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids).astype(str)
        object.__setattr__(self, "ids", ids)
        n = len(ids)
        if len(np.unique(ids)) != n:
            raise ValueError(
                f"Embeddings ids are not unique ({n - len(np.unique(ids))} duplicates)"
            )
        for name in MODALITIES:
            arr = np.asarray(getattr(self, name), dtype=np.float32)
            if arr.ndim != 2 or arr.shape[0] != n:
                raise ValueError(
                    f"Embeddings '{name}' must have shape [N={n}, D], got {list(arr.shape)}"
                )
            if not np.isfinite(arr).all():
                bad = int((~np.isfinite(arr)).any(axis=1).sum())
                raise ValueError(f"Embeddings '{name}' has {bad} rows with NaN or inf values")
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return len(self.ids)

    def modality(self, name: str) -> np.ndarray:
        """Return ``text``, ``image`` or ``text+image`` (the two concatenated, ``[N, Dt+Di]``)."""
        if name == "text+image":
            return np.concatenate([self.text, self.image], axis=1)
        if name in MODALITIES:
            return getattr(self, name)
        raise KeyError(f"Unknown modality {name!r}; expected one of text, image, text+image")

    def align(self, product_ids: Any) -> Embeddings:
        """Rows reordered to ``product_ids``.

        Raises:
            ValueError: naming the count and a few examples of ids that have no embedding.
        """
        product_ids = np.asarray(product_ids).astype(str)
        index = {pid: i for i, pid in enumerate(self.ids)}
        missing = [str(pid) for pid in product_ids if pid not in index]
        if missing:
            raise ValueError(
                f"{len(missing)} of {len(product_ids)} products have no embedding "
                f"(e.g. {missing[:5]}); the embeddings are stale for these products: "
                "rerun `kedro run --pipeline=embeddings`"
            )
        rows = np.fromiter(
            (index[pid] for pid in product_ids), dtype=np.int64, count=len(product_ids)
        )
        return Embeddings(ids=self.ids[rows], text=self.text[rows], image=self.image[rows])


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
        emb = self.load()
        rows = []
        for i in range(min(nrows, len(emb))):
            rows.append(
                [
                    str(emb.ids[i]),
                    np.array2string(emb.text[i, :4], precision=3),
                    np.array2string(emb.image[i, :4], precision=3),
                ]
            )
        rows.append(["shape", str(list(emb.text.shape)), str(list(emb.image.shape))])
        return TablePreview(
            {
                "columns": ["id", "text[:4]", "image[:4]"],
                "index": list(range(len(rows))),
                "data": rows,
            }
        )
