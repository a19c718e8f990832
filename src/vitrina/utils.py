"""Small shared helpers: atomic file writes, stale temporaries, devices, thread limits,
SQLite transactions that lock up front."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Seconds an SQLite connection waits for another connection's write lock (SQLite's
#: ``busy_timeout``; pysqlite's default of 5 s is short for several workers on a loaded
#: machine).
SQLITE_BUSY_TIMEOUT_S = 60

#: Marks the temporary names of :func:`atomic_path`: ``.<name>.tmp-<pid>-<random><suffix>``.
TMP_MARK = ".tmp-"
_TMP_NAME = re.compile(r"^\..+\.(?:tmp|old)-(?:(?P<pid>\d+)-)?[^/]*$")


def new_temporary(path: str | Path, *, is_dir: bool = False) -> Path:
    """Create an empty file (or folder) beside ``path`` under a fresh temporary name.

    The name is ``.<name>.tmp-<pid>-<8 hex><suffix>`` (folders: no suffix); the mode is
    ``0o666`` (``0o777``) less the umask, as for any plainly created file or folder.
    Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        name = f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
        tmp = path.with_name(name + ("" if is_dir else path.suffix))
        try:
            if is_dir:
                tmp.mkdir(mode=0o777)
            else:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")  # pragma: no cover


@contextlib.contextmanager
def atomic_path(path: str | Path, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success.

    The temporary file (or directory, with ``is_dir=True``) lives in the same directory
    as ``path`` so the final ``os.replace`` is atomic on POSIX file systems: readers see
    either the old complete artefact or the new complete one, never a half-written file.
    If the body raises, the temporary path is removed and ``path`` is left untouched.
    An existing directory at ``path`` is replaced (moved aside, then deleted).

    The temporary name, ``.<name>.tmp-<pid>-<random><suffix>``, carries the writer's
    process id, so a later run can delete what a killed writer left
    (:func:`remove_stale_temporaries`). The result has the permissions of a plainly
    created file or folder (``0o666`` / ``0o777`` less the umask), not ``mkstemp``'s 0600.
    """
    path = Path(path)
    tmp = new_temporary(path, is_dir=is_dir)
    try:
        yield tmp
        if is_dir and path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(root: str | Path, min_age_s: float = 3600.0) -> list[Path]:
    """Delete the temporary files and folders that killed writers left under ``root``.

    A name written by :func:`atomic_path` (``.<name>.tmp-<pid>-...`` or ``.old-<pid>-``)
    is stale when process ``pid`` no longer runs; a temporary name without a process id
    (older Vitrina versions, ``mkstemp``) when it is older than ``min_age_s`` seconds.
    Live writers' files are left alone, so concurrent runs are safe.

    Returns:
        The paths removed (absent ``root``: none).
    """
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    now = time.time()
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            match = _TMP_NAME.match(name)
            if not match:
                continue
            path = Path(folder, name)
            pid = match.group("pid")
            try:
                stale = not _pid_alive(int(pid)) if pid else now - path.lstat().st_mtime > min_age_s
            except OSError:
                continue
            if not stale:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        dirs[:] = [d for d in dirs if not _TMP_NAME.match(d)]
    return removed


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


def sqlite_begin_immediate(engine: Any, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S) -> None:
    """Make every transaction of the SQLAlchemy ``engine`` (SQLite, pysqlite driver) start
    with ``BEGIN IMMEDIATE``, which takes SQLite's write lock before the first read, and
    wait up to ``busy_timeout_s`` seconds for that lock (``PRAGMA busy_timeout``).

    Why: pysqlite's legacy transaction control emits ``BEGIN`` (deferred) only before the
    first INSERT/UPDATE/DELETE, so a read-check-write (``SELECT ... FOR UPDATE``, which
    SQLite ignores, then ``UPDATE``) runs its read outside any transaction: two processes
    can both pass the check. With the write lock taken first, the second waits (for the
    connection's busy timeout) and then reads the first one's committed row; two writers
    also never deadlock on a lock upgrade.

    Source: SQLAlchemy's SQLite dialect documentation, "Serializable isolation /
    Savepoints / Transactional DDL" (2.1: "Enabling Non-Legacy SQLite Transactional
    Modes"): on ``connect`` set ``dbapi_connection.isolation_level = None`` (pysqlite
    emits no BEGIN of its own; it still commits and rolls back), on ``begin`` emit the
    BEGIN. Applies to connections opened after the call (dispose the pool of an engine
    that has connected already).
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_driver_begin(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # the driver leaves BEGIN to us
        dbapi_connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
