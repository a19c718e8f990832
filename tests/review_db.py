"""A real PostgreSQL server for the tests, and review-database URLs over both backends.

The server comes from the ``pgserver`` wheel (PostgreSQL binaries from the package index);
where it cannot start, from Debian's ``postgresql`` package (``/usr/lib/postgresql/*/bin``).
It is started once per session, in a temporary folder, and stopped at the end. Each test
gets a database of its own.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
import warnings
from pathlib import Path

import pytest

BACKENDS = ("sqlite", "postgresql")


class _Server:
    """``host`` (socket folder) of a running server whose superuser is ``postgres``."""

    def __init__(self, host: str, stop) -> None:
        self.host = host
        self.stop = stop

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://postgres@/{database}?host={self.host}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(
            host=self.host, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql)


def _pgserver(folder: Path) -> _Server:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR not set
        import pgserver

        server = pgserver.get_server(folder, cleanup_mode="stop")
    host = server.get_uri().split("host=", 1)[1]
    return _Server(host, server.cleanup)


def _debian(folder: Path) -> _Server:
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdb:
        raise RuntimeError("no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)")
    bin_dir = Path(initdb[-1]).parent
    data, sock = folder / "data", folder / "sock"
    sock.mkdir(parents=True)
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as Debian's postgres user
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
        shutil.chown(sock, "postgres")
    subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
                   check=True, capture_output=True)  # fmt: skip
    options = f"-k {sock} -c listen_addresses=''"
    ctl = [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data)]
    subprocess.run([*ctl, "-o", options, "-w", "-l", str(folder / "log"), "start"],
                   check=True, capture_output=True)  # fmt: skip
    return _Server(
        str(sock), lambda: subprocess.run([*ctl, "-m", "fast", "stop"], capture_output=True)
    )


@pytest.fixture(scope="session")
def pg_server():
    """A running PostgreSQL server (stopped after the session), or a skip with the reason.

    Its folder is directly under the system's temporary directory: as root, both ways run
    the server as another user, who cannot enter pytest's private ``pytest-of-root``.
    """
    errors = []
    server = None
    folders = []
    for start in (_pgserver, _debian):
        folders.append(Path(tempfile.mkdtemp(prefix=f"vitrina-pg{start.__name__}-")))
        folders[-1].chmod(0o755)
        try:
            server = start(folders[-1])
            break
        except Exception as exc:  # noqa: BLE001 - try the next way, report all
            errors.append(f"{start.__name__.strip('_')}: {type(exc).__name__}: {exc}")
    try:
        if server is None:
            pytest.skip("no PostgreSQL server could be started: " + "; ".join(errors))
        yield server
        server.stop()
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=BACKENDS)
def review_db_url(request, tmp_path):
    """A fresh, empty review database on each backend: SQLite file, PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'review.db'}"
        return
    server = request.getfixturevalue("pg_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    server.admin(f"CREATE DATABASE {name}")
    yield server.url(name)
    server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
