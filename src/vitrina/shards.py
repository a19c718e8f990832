"""Shards: the resumable unit of work of the embeddings and image_processing steps.

A step cuts its products into shards of ``shard_size`` rows, writes each shard as one
parquet file (atomically, with page checksums) and records it in a JSON manifest
(atomically, after every shard)::

    <directory>/manifest.json       {"format", "kind", "fingerprint", "shard_size",
                                     "num_rows", "num_shards", "shards": {i: entry},
                                     "completed", ...step-specific fields}
    <directory>/shard-00000.parquet ...

An entry holds the shard's file, row count, byte size and ``inputs`` (a digest of the
shard's input rows). A rerun reuses a shard when the manifest's ``fingerprint`` (model or
settings) and the shard's ``inputs`` digest are unchanged and its file is intact (the
parquet footer reads and gives the recorded rows and size), so a killed run resumes at the
shard it was on, and a changed model, setting or product recomputes only what it changes.

Why our own code: kedro-datasets' ``PartitionedDataset`` saves partitions lazily but has
no manifest, no fingerprint and no resume (it calls every partition's callable on every
save); the format here is plain parquet + JSON that pyarrow, pandas or Spark read as they
are.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vitrina.utils import atomic_path

logger = logging.getLogger(__name__)

FORMAT = "vitrina.shards/1"
MANIFEST = "manifest.json"


class ShardError(ValueError):
    """A shard file or manifest that cannot be used (the message names the file)."""


def digest(*parts: Any) -> str:
    """SHA-256 hex digest over ``parts``: bytes, numpy arrays (dtype, shape and bytes),
    sequences of strings (each length-prefixed) or anything JSON can write (sorted keys)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            h.update(b"b%d:" % len(part) + part)
        elif isinstance(part, np.ndarray) and part.dtype.kind != "O":
            arr = np.ascontiguousarray(part)
            h.update(f"a{arr.dtype.str}{arr.shape}:".encode() + arr.tobytes())
        elif isinstance(part, (list, tuple, np.ndarray)) and all(isinstance(s, str) for s in part):
            for s in part:
                data = s.encode("utf-8", "surrogatepass")
                h.update(b"s%d:" % len(data) + data)
            h.update(b"|")
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def shard_bounds(num_rows: int, shard_size: Any, key: str = "shard_size") -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` cutting ``num_rows`` rows into shards of ``shard_size``
    (the last one shorter); one empty shard for zero rows.

    Raises:
        ValueError: ``shard_size`` is not a positive integer (names ``key`` and the value).
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, (int, np.integer)):
        raise ValueError(f"{key} must be a positive integer number of products, got {shard_size!r}")
    if shard_size <= 0:
        raise ValueError(f"{key} must be a positive number of products, got {shard_size}")
    size = int(shard_size)
    return [(a, min(a + size, num_rows)) for a in range(0, max(num_rows, 1), size)]


def shard_file(index: int) -> str:
    """The file name of shard ``index``: ``shard-00000.parquet``."""
    return f"shard-{index:05d}.parquet"


def read_shard(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """Read one shard, verifying its page checksums.

    Raises:
        ShardError: the file is missing, truncated or corrupt (names the file).
    """
    try:
        return pq.read_table(path, columns=columns, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as exc:
        raise ShardError(f"shard '{path}' cannot be read ({type(exc).__name__}: {exc})") from exc


@dataclass(frozen=True)
class ShardSpec:
    """One shard of work: rows ``start:stop`` of the step's input, ``inputs`` their digest."""

    index: int
    start: int
    stop: int
    inputs: str

    @property
    def rows(self) -> int:
        return self.stop - self.start


class ShardStore:
    """The shard files and manifest of one step's output folder.

    Args:
        directory: the folder (created on :meth:`open`).
        kind: what the shards hold (``embeddings``, ``images``), recorded in the manifest.
        fingerprint: digest of everything besides the rows that makes a shard (model
            weights, processing settings); a different one rebuilds every shard.
    """

    def __init__(self, directory: str | Path, kind: str, fingerprint: str) -> None:
        self.directory = Path(directory)
        self.kind = kind
        self.fingerprint = fingerprint
        self.manifest: dict[str, Any] = {}

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    @staticmethod
    def read_manifest(directory: str | Path) -> dict[str, Any] | None:
        """The manifest of ``directory``, or ``None`` when there is none.

        Raises:
            ShardError: the file is not a JSON object of this format (names the file).
        """
        path = Path(directory) / MANIFEST
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ShardError(f"shard manifest '{path}' is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ShardError(f"'{path}' is not a {FORMAT} manifest")
        return data

    def _usable(self, entry: dict[str, Any], spec: ShardSpec) -> str | None:
        """Why the recorded ``entry`` cannot stand for ``spec`` (``None``: it can)."""
        if entry.get("inputs") != spec.inputs:
            return "its products changed"
        path = self.directory / entry["file"]
        try:
            if path.stat().st_size != entry.get("bytes"):
                return (
                    f"'{path}' has {path.stat().st_size} bytes, the manifest {entry.get('bytes')}"
                )
            rows = pq.read_metadata(path).num_rows
        except (OSError, pa.ArrowException) as exc:
            return f"'{path}' is missing or unreadable ({type(exc).__name__})"
        return None if rows == spec.rows else f"'{path}' has {rows} rows, expected {spec.rows}"

    def open(
        self, specs: Sequence[ShardSpec], carry: Sequence[str] = (), **fields: Any
    ) -> list[int]:
        """Start (or resume) writing ``specs``; return the indices still to compute.

        Finished shards whose fingerprint, inputs digest and file check out are kept;
        the rest are logged with the reason and recomputed. Files of shards the new plan
        no longer has are deleted. ``fields`` are recorded in the manifest, and the old
        manifest's ``carry`` fields when some of its shards are kept.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            old = self.read_manifest(self.directory) or {}
        except ShardError as exc:
            logger.warning("%s: rebuilding every shard", exc)
            old = {}
        entries = old.get("shards", {})
        if old and old.get("fingerprint") != self.fingerprint:
            logger.warning(
                "%s shards in %s were made by another %s (fingerprint %s…, now %s…): "
                "rebuilding all %d shards",
                self.kind,
                self.directory,
                "model" if self.kind == "embeddings" else "setting",
                str(old.get("fingerprint"))[:12],
                self.fingerprint[:12],
                len(specs),
            )
            entries = {}
        kept, pending, reasons = {}, [], []
        for spec in specs:
            entry = entries.get(str(spec.index))
            reason = "not written yet" if entry is None else self._usable(entry, spec)
            if reason is None:
                kept[str(spec.index)] = entry
            else:
                pending.append(spec.index)
                if entry is not None:
                    reasons.append(f"shard {spec.index}: {reason}")
        if reasons:
            logger.warning("%s: recomputing %s", self.directory, "; ".join(reasons[:5]))
        wanted = {shard_file(s.index) for s in specs}
        for path in self.directory.glob("shard-*.parquet"):
            if path.name not in wanted:
                path.unlink(missing_ok=True)
        carried = {k: old[k] for k in carry if k in old} if kept else {}
        self.manifest = {
            **carried,
            "format": FORMAT,
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "num_rows": sum(s.rows for s in specs),
            "num_shards": len(specs),
            **fields,
            "shards": kept,
            "completed": False,
        }
        self._save_manifest()
        logger.info(
            "%s: %d of %d shards done, %d to compute",
            self.directory,
            len(kept),
            len(specs),
            len(pending),
        )
        return pending

    def write(self, spec: ShardSpec, table: pa.Table) -> None:
        """Write ``table`` as shard ``spec.index`` and record it in the manifest.

        Raises:
            ShardError: the table has another row count than ``spec``.
        """
        if table.num_rows != spec.rows:
            raise ShardError(f"shard {spec.index} has {table.num_rows} rows, expected {spec.rows}")
        path = self.directory / shard_file(spec.index)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, write_page_checksum=True)
        self.manifest["shards"][str(spec.index)] = {
            "file": path.name,
            "rows": spec.rows,
            "bytes": path.stat().st_size,
            "inputs": spec.inputs,
        }
        self._save_manifest()

    def finish(self, **fields: Any) -> None:
        """Mark the output complete (every shard written), recording ``fields``."""
        self.manifest.update(fields, completed=True)
        self._save_manifest()

    def tables(self, columns: Sequence[str] | None = None) -> Iterable[pa.Table]:
        """The shards in order, one table at a time (:func:`read_shard`)."""
        for i in range(self.manifest["num_shards"]):
            yield read_shard(self.directory / self.manifest["shards"][str(i)]["file"], columns)

    def _save_manifest(self) -> None:
        with atomic_path(self.manifest_path) as tmp:
            tmp.write_text(json.dumps(self.manifest, indent=1, sort_keys=True))
