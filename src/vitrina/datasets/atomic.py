"""Atomic saves for every file-based Kedro dataset (kedro-datasets' writers write in place).

kedro-datasets (``pandas.ParquetDataset``, ``pandas.CSVDataset``, ``json.JSONDataset``,
``text.TextDataset``, ``matplotlib.MatplotlibDataset``, ``plotly.HTMLDataset`` and
kedro-mlflow's ``MlflowArtifactDataset`` around them) open their target with
``self._fs.open(path, "wb")``, which truncates the previous file first: a process killed
during the save leaves a partial file where the last good one was. Kedro has no atomic
option, so :func:`make_atomic` swaps a dataset's local fsspec file system for
:class:`AtomicLocalFileSystem`, whose write handles go to a temporary name beside the
target (:func:`vitrina.utils.atomic_path`) and are renamed onto it only when the ``with``
block that wrote them ends without an error. The project hook does this for every dataset
of a run (``vitrina.hooks.RunChecks``), so new catalogue entries are covered too.
Vitrina's own datasets write through :func:`~vitrina.utils.atomic_path` themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from vitrina.utils import atomic_path


class AtomicWriteHandle:
    """A file opened for writing on a temporary path; renamed onto its target on success.

    Leaving a ``with`` block with an exception, or :meth:`discard`, deletes the temporary
    file and leaves the target as it was; :meth:`close` (or a clean ``with`` exit)
    moves the complete file into place. Every other attribute is the open file's.
    """

    def __init__(self, path: str | Path, mode: str, **open_args: Any) -> None:
        self._target = atomic_path(path)
        self._tmp = self._target.__enter__()
        try:
            self._file = open(self._tmp, mode, **open_args)  # noqa: SIM115
        except BaseException as exc:
            self._target.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._done = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __iter__(self):
        return iter(self._file)

    def __enter__(self) -> AtomicWriteHandle:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._finish(exc_type, exc, tb)

    def close(self) -> None:
        """Flush, close and move the file onto its target (once)."""
        self._finish(None, None, None)

    def discard(self) -> None:
        """Close and delete the temporary file; the target is left as it was."""
        exc = RuntimeError("discarded")
        self._finish(RuntimeError, exc, None)

    @property
    def closed(self) -> bool:
        return self._done or self._file.closed

    def _finish(self, exc_type, exc, tb) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._file.close()
        except BaseException as close_exc:
            self._target.__exit__(type(close_exc), close_exc, close_exc.__traceback__)
            raise
        if exc_type is None:
            self._target.__exit__(None, None, None)
        else:
            try:  # atomic_path removes the temporary file and re-raises: swallow that
                self._target.__exit__(exc_type, exc, tb)
            except BaseException as again:
                if again is not exc:
                    raise


class AtomicLocalFileSystem:
    """A local fsspec file system whose ``open(path, "w"/"wb"/"x")`` writes atomically.

    Wraps the dataset's own :class:`~fsspec.implementations.local.LocalFileSystem` (its
    ``auto_mkdir`` and other settings stay); reads, appends and every other method go to
    it unchanged.
    """

    def __init__(self, fs: LocalFileSystem) -> None:
        self.wrapped = fs

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "wrapped":  # unpickling (ParallelRunner) asks first
            raise AttributeError(name)
        return getattr(self.wrapped, name)

    def open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        """``fs.open``; write modes (``w``, ``x``, without ``+``/``a``) are atomic."""
        if not any(m in mode for m in "wx") or "+" in mode:
            return self.wrapped.open(path, mode, **kwargs)
        local = self.wrapped._strip_protocol(path)
        keep = ("encoding", "errors", "newline", "buffering")
        return AtomicWriteHandle(local, mode, **{k: v for k, v in kwargs.items() if k in keep})


def make_atomic(dataset: Any) -> bool:
    """Make ``dataset``'s saves atomic when it writes through a local fsspec file system.

    Returns:
        True when the dataset writes atomically after the call (it was wrapped now or
        before); False when it has no local ``_fs`` (memory, MLflow metrics, Vitrina's own
        datasets, which write through :func:`~vitrina.utils.atomic_path` themselves).
    """
    fs = getattr(dataset, "_fs", None)
    if isinstance(fs, AtomicLocalFileSystem):
        return True
    if isinstance(fs, LocalFileSystem):
        dataset._fs = AtomicLocalFileSystem(fs)
        return True
    return False


def make_catalog_atomic(catalog: Any, names: Iterable[str]) -> list[str]:
    """:func:`make_atomic` for the datasets ``names`` of ``catalog`` (factories resolved).

    Returns:
        The names of the datasets whose saves are now atomic through this module.
    """
    wrapped = []
    for name in names:
        dataset = catalog.get(name) if hasattr(catalog, "get") else None
        if dataset is not None and make_atomic(dataset):
            wrapped.append(name)
    return wrapped
