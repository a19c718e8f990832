"""Small shared helpers: atomic file writes and device selection."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success.

    The temporary file (or directory, with ``is_dir=True``) lives in the same directory
    as ``path`` so the final ``os.replace`` is atomic on POSIX file systems: readers see
    either the old complete artefact or the new complete one, never a half-written file.
    If the body raises, the temporary path is removed and ``path`` is left untouched.
    An existing directory at ``path`` is replaced (moved aside, then deleted).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=path.suffix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if is_dir and path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def resolve_device(device: str = "auto") -> str:
    """Map ``"auto"`` to ``"cuda"`` when a CUDA device is visible, else ``"cpu"``.

    Any other value (``"cpu"``, ``"cuda:1"``, ``"mps"``) is returned unchanged.
    """
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def limit_threads(threads: int | None) -> Iterator[None]:
    """Cap torch intra-op threads and OpenMP/BLAS pools (gradient boosting, FAISS, NumPy)
    at ``threads`` inside the block, then restore them; ``None`` (or 0) leaves them alone.

    On a machine whose cores are shared, OpenMP pools that spin for busy cores are far
    slower than one thread (the pair MLP trained 6x slower with 2 threads than with 1 on
    two loaded cores), hence a per-run knob that never leaks into later nodes.
    """
    if not threads:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        with threadpool_limits(limits=int(threads)):
            yield
    finally:
        torch.set_num_threads(before)
