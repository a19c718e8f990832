"""The ``Embeddings`` value type: per-product text and image vectors of one model.

It sits below every package that uses it: the models (``vitrina.models``), the Kedro
datasets that read and write it (:class:`vitrina.datasets.embeddings.EmbeddingsDataset`)
and the pipelines, so model code never imports a Kedro dataset module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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
            # Row blocks, so a memory-mapped matrix is checked without a full-size mask.
            bad = sum(
                int((~np.isfinite(arr[a : a + 65536])).any(axis=1).sum())
                for a in range(0, n, 65536)
            )
            if bad:
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


@dataclass(frozen=True)
class EmbeddingShards:
    """A sharded embeddings result computed lazily, shard by shard: what the embeddings
    node returns and :class:`vitrina.datasets.ShardedEmbeddingsDataset` saves (computing
    only the shards its manifest lacks), like the lazy callables of Kedro's
    ``PartitionedDataset``.

    Attributes:
        model: the model's name (logs, manifest).
        fingerprint: digest of the model (weights, tokenizer, preprocessing, precision);
            shards made by another fingerprint are never reused.
        ids: all product ids, ``str [N]``, in output order.
        bounds: ``[(start, stop), ...]`` rows of each shard in ``ids``.
        inputs: per shard, the digest of its input rows (id, text, image file).
        compute: ``compute(indices)`` yields ``(index, Embeddings)`` for each of the shard
            indices, in any order.
        export_npz: also write the whole result as one NPZ (small catalogues).
    """

    model: str
    fingerprint: str
    ids: np.ndarray
    bounds: list[tuple[int, int]]
    inputs: list[str]
    compute: Callable[[Sequence[int]], Iterator[tuple[int, Embeddings]]]
    export_npz: bool = False

    def __len__(self) -> int:
        return len(self.ids)

    def collect(self) -> Embeddings:
        """Every shard computed in memory and concatenated in order (small catalogues, tests).

        Raises:
            ValueError: a shard's ids differ from the plan's.
        """
        parts = dict(self.compute(list(range(len(self.bounds)))))
        ordered = [parts[i] for i in range(len(self.bounds))]
        out = Embeddings(
            ids=np.concatenate([p.ids for p in ordered]),
            text=np.concatenate([p.text for p in ordered]),
            image=np.concatenate([p.image for p in ordered]),
        )
        if not np.array_equal(out.ids, np.asarray(self.ids).astype(str)):
            raise ValueError(f"embeddings of {self.model}: the shards' ids differ from the plan's")
        return out
