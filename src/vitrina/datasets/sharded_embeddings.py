"""Sharded embeddings: parquet shards + manifest, read back as one memory-mapped ``Embeddings``."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from kedro.io import AbstractDataset, DatasetError
from kedro_datasets._typing import TablePreview

from vitrina.embeddings import MODALITIES, Embeddings, EmbeddingShards
from vitrina.shards import ShardError, ShardSpec, ShardStore
from vitrina.utils import atomic_path

from .embeddings import EmbeddingsDataset, table_preview

logger = logging.getLogger(__name__)

VIEWS = ("ids.npy", "text.npy", "image.npy")


def _vectors(table: pa.Table, name: str) -> np.ndarray:
    """A fixed-size list column as ``float32 [rows, D]``."""
    col = table.column(name).combine_chunks()
    width = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)


def _table(emb: Embeddings) -> pa.Table:
    """``product_id`` (string), ``text`` and ``image`` (fixed-size float32 lists)."""
    return pa.table(
        {
            "product_id": pa.array(emb.ids.tolist(), pa.string()),
            **{
                m: pa.FixedSizeListArray.from_arrays(
                    pa.array(getattr(emb, m).reshape(-1), pa.float32()), getattr(emb, m).shape[1]
                )
                for m in MODALITIES
            },
        }
    )


def _write_npy(path: Path, parts, dtype: np.dtype, width: int | None, rows: int) -> None:
    """Write ``rows`` rows given as a stream of arrays to ``path`` as ``.npy`` with plain
    file writes (no memory map: the pages never count in the writer's RSS)."""
    shape = (rows,) if width is None else (rows, width)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh,
            {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape},
        )
        for part in parts:
            fh.write(np.ascontiguousarray(part, dtype=dtype).tobytes())


class ShardedEmbeddingsDataset(AbstractDataset[EmbeddingShards | Embeddings, Embeddings]):
    """One model's embeddings as parquet shards in a folder, with a manifest.

    Layout of ``path`` (see :mod:`vitrina.shards`)::

        manifest.json                     fingerprint, shards, dims, dtype, completed
        shard-00000.parquet ...           product_id, text, image (fixed-size float32 lists)
        ids.npy, text.npy, image.npy      the memory-mapped view, written on completion

    Saving an :class:`~vitrina.embeddings.EmbeddingShards` computes only the shards the
    manifest lacks (a killed run resumes at the shard it was on; another model
    fingerprint rebuilds all, a shard whose products changed is recomputed, a truncated or
    corrupt shard file is detected and rewritten), each written atomically with the
    manifest updated after it; memory holds one shard at a time. Saving a plain
    ``Embeddings`` writes it as one shard. With the plan's ``export_npz`` and at most
    ``export_npz_max_rows`` products, ``<path>.npz`` is written too (the
    :class:`EmbeddingsDataset` format other tools read).

    Loading returns one :class:`Embeddings` whose ``text`` and ``image`` are memory-mapped
    ``float32 [N, D]`` arrays (``numpy.load(mmap_mode="r")``), so a 10M-product catalogue
    is read without 40 GB of RAM.

    Example catalogue entry::

        "{model}.embeddings":
          type: vitrina.datasets.ShardedEmbeddingsDataset
          path: data/04_feature/${globals:catalogue}/embeddings/{model}

    Raises (on load):
        DatasetError: no manifest (names the pipeline to run), an incomplete run (shards
            done / total), or an unreadable shard or view (names the file).
    """

    def __init__(
        self,
        path: str,
        export_npz_max_rows: int = 200_000,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = Path(path)
        self._export_max = int(export_npz_max_rows)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    @property
    def npz_path(self) -> Path:
        """The NPZ export beside the folder: ``<path>.npz``."""
        return self._path.with_name(self._path.name + ".npz")

    # ------------------------------------------------------------------ save
    def save(self, data: EmbeddingShards | Embeddings) -> None:
        if isinstance(data, Embeddings):
            n = len(data)
            data = EmbeddingShards(
                model=self._path.name,
                fingerprint="in-memory",
                ids=data.ids,
                bounds=[(0, n)],
                inputs=[""],
                compute=lambda _idx, emb=data: iter([(0, emb)]),
            )
            shutil.rmtree(self._path, ignore_errors=True)  # nothing to resume
        if not isinstance(data, EmbeddingShards):
            raise DatasetError(
                f"ShardedEmbeddingsDataset saves EmbeddingShards or Embeddings, got {type(data).__name__}"
            )
        specs = [
            ShardSpec(i, a, b, digest)
            for i, ((a, b), digest) in enumerate(zip(data.bounds, data.inputs, strict=True))
        ]
        store = ShardStore(self._path, "embeddings", data.fingerprint)
        was_complete = self._exists()  # (the views are stale until completed is set again)
        pending = store.open(specs, carry=["dims"], model=data.model, dtype="float32")
        ids = np.asarray(data.ids).astype(str)
        for index, emb in data.compute(pending):
            spec = specs[index]
            if not np.array_equal(emb.ids, ids[spec.start : spec.stop]):
                raise DatasetError(f"shard {index} of {data.model}: ids differ from the plan's")
            dims = {m: int(getattr(emb, m).shape[1]) for m in MODALITIES}
            if store.manifest.setdefault("dims", dims) != dims:
                raise DatasetError(
                    f"shard {index} of {data.model} has dims {dims}, earlier shards {store.manifest['dims']}"
                )
            store.write(spec, _table(emb))
        # nothing recomputed over a complete folder: its views and export stand
        unchanged = not pending and was_complete and self._views_match(store.manifest)
        if not unchanged:
            try:
                self._write_views(store)
            except ShardError as exc:
                raise DatasetError(str(exc)) from exc
        store.finish()
        if data.export_npz and not (unchanged and self.npz_path.exists()):
            self._export(len(ids))

    def _write_views(self, store: ShardStore) -> None:
        """``ids.npy``, ``text.npy``, ``image.npy`` from the shards, one shard at a time."""
        n, dims = store.manifest["num_rows"], store.manifest["dims"]
        width = max(
            [
                pc.max(pc.utf8_length(t.column("product_id"))).as_py() or 1
                for t in store.tables(["product_id"])
            ]
        )
        ids = np.dtype(f"<U{width}")
        parts = (
            t.column("product_id").to_numpy(zero_copy_only=False)
            for t in store.tables(["product_id"])
        )
        _write_npy(self._path / "ids.npy", parts, ids, None, n)
        for m in MODALITIES:
            parts = (_vectors(t, m) for t in store.tables([m]))
            _write_npy(self._path / f"{m}.npy", parts, np.dtype(np.float32), dims[m], n)

    def _export(self, n: int) -> None:
        if n > self._export_max:
            logger.info(
                "embeddings: %d products > export_npz_max_rows=%d, no NPZ export (%s)",
                n,
                self._export_max,
                self.npz_path,
            )
            return
        EmbeddingsDataset(str(self.npz_path)).save(self.load())

    # ------------------------------------------------------------------ load
    def _manifest(self) -> dict[str, Any]:
        try:
            manifest = ShardStore.read_manifest(self._path)
        except ShardError as exc:
            raise DatasetError(str(exc)) from exc
        if manifest is None:
            raise DatasetError(
                f"Embeddings folder '{self._path}' has no manifest.json: run "
                "`kedro run --pipeline=embeddings` (with the same --env) first"
            )
        if not manifest.get("completed"):
            raise DatasetError(
                f"Embeddings in '{self._path}' are incomplete ({len(manifest.get('shards', {}))} "
                f"of {manifest.get('num_shards')} shards): rerun `kedro run --pipeline=embeddings`, "
                "it resumes at the first missing shard"
            )
        return manifest

    def _views_match(self, manifest: dict[str, Any]) -> bool:
        try:
            self._views(manifest)
        except DatasetError:
            return False
        return True

    def load(self) -> Embeddings:
        arrays = self._views(self._manifest())
        try:
            return Embeddings(**arrays)
        except ValueError as exc:
            raise DatasetError(f"'{self._path}': {exc}") from exc

    def _views(self, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
        """The memory-mapped views, checked against the manifest's shape."""
        n, dims = manifest["num_rows"], manifest["dims"]
        arrays = {}
        for view in VIEWS:
            key = view.removesuffix(".npy")
            try:
                arr = np.load(self._path / view, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DatasetError(
                    f"'{self._path / view}' cannot be read ({exc}): rerun `kedro run --pipeline=embeddings`"
                ) from exc
            want = (n,) if key == "ids" else (n, dims[key])
            if arr.shape != want:
                raise DatasetError(
                    f"'{self._path / view}' has shape {list(arr.shape)}, the manifest {list(want)}"
                )
            arrays[key] = arr
        return arrays

    def _exists(self) -> bool:
        try:
            return bool((ShardStore.read_manifest(self._path) or {}).get("completed"))
        except ShardError:
            return False

    def preview(self, nrows: int = 5) -> TablePreview:
        """kedro-viz preview: the manifest's shape and the first ids with vector heads."""
        if not self._exists():
            return TablePreview(
                {"columns": ["status"], "index": [0], "data": [["not written yet"]]}
            )
        return table_preview(self.load(), nrows)


__all__ = ["ShardedEmbeddingsDataset"]
