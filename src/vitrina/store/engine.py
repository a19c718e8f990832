"""Connecting to the review database: URL resolution, engine set-up, migrations.

The URL comes from Kedro credentials (``review_db.url`` in ``conf/local/credentials.yml``;
``conf/base/credentials.yml`` reads ``$VITRINA_REVIEW_DB_URL`` and falls back to a SQLite
file under ``data/``), never from code. PostgreSQL goes through psycopg 3
(``postgresql+psycopg://user:password@host:5432/db``).

Opening a store runs Alembic's ``upgrade head`` on it, so an older database gains new
tables and columns with its rows kept. Two processes opening one database at once
migrate one after the other: PostgreSQL through a transaction-scoped advisory lock,
SQLite through ``BEGIN IMMEDIATE`` (every SQLite transaction of the store takes the
write lock up front, which also keeps two writers from deadlocking on a lock upgrade).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from vitrina.utils import sqlite_begin_immediate

logger = logging.getLogger(__name__)

#: Embedded default: no server needed (``make run``); relative to the project directory.
DEFAULT_URL = "sqlite:///data/07_model_output/review.db"
#: Environment variable ``conf/base/credentials.yml`` reads the URL from.
URL_ENV_VAR = "VITRINA_REVIEW_DB_URL"
#: Seconds a connection attempt (PostgreSQL) or a locked SQLite database is waited for.
CONNECT_TIMEOUT_S = 10
#: Key of the PostgreSQL advisory lock held while migrating (any constant 64-bit integer).
_MIGRATION_LOCK = 0x76697472696E61  # "vitrina"
_MIGRATIONS = Path(__file__).with_name("migrations")


class StoreConnectionError(RuntimeError):
    """The review database cannot be reached or opened; the message names the URL
    without its password."""


def redact(url: str | URL) -> str:
    """``url`` as text with its password replaced by ``***`` (safe for logs and errors)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def resolve_url(credentials: dict | None = None) -> str:
    """The database URL from a Kedro credentials entry (``{"url": ...}``), else the default.

    Raises:
        ValueError: the entry has no ``url`` string, or the URL cannot be parsed (the
            message never shows the password).
    """
    url = (credentials or {}).get("url") or DEFAULT_URL
    if not isinstance(url, str):
        raise ValueError(f"review_db credentials need a 'url' string, got {type(url).__name__}")
    try:
        make_url(url)
    except ArgumentError:
        raise ValueError(
            "review_db url is not a database URL (expected e.g. "
            "'postgresql+psycopg://user:password@host:5432/db' or 'sqlite:///data/review.db')"
        ) from None
    return url


def _message(exc: BaseException, url: URL) -> str:
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    text_ = detail[0] if detail else type(exc).__name__
    if url.password:
        text_ = text_.replace(str(url.password), "***")
    return text_


def create_store_engine(url: str) -> Engine:
    """An engine for ``url``, checked by one connection.

    SQLite: the file's parent directory is created; foreign keys on, WAL journal (readers
    do not block the writer), a 60 s busy timeout and ``BEGIN IMMEDIATE`` transactions.
    PostgreSQL: a 10 s connection timeout.

    Raises:
        StoreConnectionError: the database cannot be reached or opened.
    """
    parsed = make_url(url)
    kwargs: dict = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreConnectionError(
                    f"Cannot create the folder of the review database {redact(parsed)}: {exc}"
                ) from exc
    elif parsed.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise StoreConnectionError(
            f"Cannot use the review database {redact(parsed)}: {_message(exc, parsed)}"
        ) from None
    if engine.dialect.name == "sqlite":
        _sqlite_pragmas(engine)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (DBAPIError, OSError) as exc:
        engine.dispose()
        raise StoreConnectionError(
            f"Cannot connect to the review database {redact(parsed)}: {_message(exc, parsed)}"
        ) from None
    return engine


def _sqlite_pragmas(engine: Engine) -> None:
    """``BEGIN IMMEDIATE`` transactions (:func:`vitrina.utils.sqlite_begin_immediate`,
    SQLAlchemy's recipe, with SQLite's busy timeout), foreign keys and WAL on every
    connection."""
    sqlite_begin_immediate(engine)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()


def alembic_config() -> Config:
    """Alembic configuration of the migrations shipped in the package."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the database's schema to ``revision`` (Alembic ``upgrade``), under a lock.

    Raises:
        StoreConnectionError: the database went away during the migration.
    """
    config = alembic_config()
    alembic_logger = logging.getLogger("alembic")
    level = alembic_logger.level
    alembic_logger.setLevel(logging.WARNING)  # "Context impl ..." on every open otherwise
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            before = MigrationContext.configure(conn).get_current_revision()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            after = MigrationContext.configure(conn).get_current_revision()
    except (DBAPIError, OSError) as exc:
        raise StoreConnectionError(
            f"Cannot migrate the review database {redact(engine.url)}: {_message(exc, engine.url)}"
        ) from None
    finally:
        alembic_logger.setLevel(level)
    if before != after:
        logger.info("Review database %s migrated %s → %s", redact(engine.url), before, after)


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None: never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
