"""The ``Embeddings`` value type: per-product text and image vectors of one model.

It sits below every package that uses it: the models (``vitrina.models``), the Kedro
datasets that read and write it (:class:`vitrina.datasets.embeddings.EmbeddingsDataset`)
and the pipelines, so model code never imports a Kedro dataset module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: The embedding modalities every model produces (``text+image`` is their concatenation).
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
