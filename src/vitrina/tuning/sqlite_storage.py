"""Optuna's RDB storage on SQLite, safe for several worker processes on one file.

Optuna's ``RDBStorage`` serialises concurrent claims of a trial with ``SELECT ... FOR
UPDATE``, which SQLite ignores; :class:`SQLiteImmediateStorage` makes every transaction
take SQLite's write lock up front instead (``BEGIN IMMEDIATE``,
:func:`vitrina.utils.sqlite_begin_immediate`). Optuna does not set this up itself.
"""

from __future__ import annotations

from typing import Any

import optuna

from vitrina.utils import sqlite_begin_immediate


class SQLiteImmediateStorage(optuna.storages.RDBStorage):
    """Optuna's ``RDBStorage`` on an SQLite file whose transactions are ``BEGIN IMMEDIATE``.

    Why: Optuna claims a WAITING trial (an enqueued one: the defaults trial, a heartbeat
    retry) in ``RDBStorage.set_trial_state_values`` by reading the row ``FOR UPDATE``,
    checking it is WAITING and setting it RUNNING; ``fail_stale_trials`` fails a dead
    worker's trial by the same read-check-write. On SQLite (no ``FOR UPDATE``, and
    pysqlite runs the read outside any transaction) two processes can both pass the
    check: both run one trial, or both fail a stale trial and enqueue two retries of it.
    With the write lock taken before the read, the second waits (up to
    :data:`vitrina.utils.SQLITE_BUSY_TIMEOUT_S`), then sees RUNNING (or FAIL) and moves on.

    The hook is added after Optuna's table creation, so the pool is emptied (no
    connection without it survives); also after unpickling, which makes a new engine. An
    in-memory database (one process only, emptied with the pool) is left as it is.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._begin_immediate()

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._begin_immediate()

    def _begin_immediate(self) -> None:
        if self.engine.url.database not in (None, "", ":memory:"):
            sqlite_begin_immediate(self.engine)
            self.engine.dispose()
