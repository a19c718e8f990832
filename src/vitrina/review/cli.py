"""``vitrina review ...``: status commands and the review page, on the project's database.

The database is the catalogue entry ``review_store``'s (its credentials key, ``review_db``
by default, from ``conf/<env>/credentials.yml``; ``conf/base/credentials.yml`` reads
``$VITRINA_REVIEW_DB_URL`` or uses the SQLite file under ``data/``), so the commands see
what the pipelines wrote. Ids are product ids of the catalogue (the ``catalogue`` global of
the environment unless ``--catalogue`` says otherwise).
"""

from __future__ import annotations

import getpass
from pathlib import Path

import click
from sqlalchemy.engine import make_url

from vitrina.config import project_root, resolve_conf
from vitrina.store import ReviewStore, StatusChange, StoreConnectionError, resolve_url


def project_store(env: str | None) -> tuple[ReviewStore, str]:
    """The review store and catalogue name of the project's environment ``env``.

    A relative SQLite path is taken relative to the project directory, as ``kedro run``
    (which runs there) takes it.
    """
    from kedro.config import OmegaConfigLoader

    from vitrina import settings

    conf_source, env = resolve_conf(None, env)
    loader = OmegaConfigLoader(conf_source, env=env, **settings.CONFIG_LOADER_ARGS)
    entry = loader["catalog"].get("review_store") or {}
    key = entry.get("credentials", "review_db")
    url = resolve_url(loader["credentials"].get(key))
    parsed = make_url(url)
    database = parsed.database or ""
    if (
        parsed.get_backend_name() == "sqlite"
        and database
        and not database.startswith((":memory:", "file:"))
    ):
        if not Path(database).is_absolute():
            url = parsed.set(database=str(project_root() / database)).render_as_string(False)
    catalogue = str(loader["globals"].get("catalogue", "demo"))
    return ReviewStore(url), catalogue


def _report(what: str, change: StatusChange) -> None:
    click.echo(f"{what}: {change.changed} changed, {change.unchanged} already so")
    if change.unknown:
        shown = ", ".join(change.unknown[:10]) + (" ..." if len(change.unknown) > 10 else "")
        click.echo(f"{len(change.unknown)} unknown ids (no image in the store): {shown}", err=True)


@click.group(name="review")
@click.option("--env", "-e", default=None, help="Kedro environment (default: KEDRO_ENV or local).")
@click.option("--catalogue", default=None, help="Catalogue name (default: the env's global).")
@click.option("--reviewer", default=None, help="Name recorded in review events (default: $USER).")
@click.pass_context
def review(ctx: click.Context, env: str | None, catalogue: str | None, reviewer: str | None):
    """Review masks: set statuses, push a bad-list, serve the review page."""
    ctx.ensure_object(dict)
    ctx.obj.update(env=env, catalogue=catalogue, reviewer=reviewer or getpass.getuser())


def _open(ctx: click.Context) -> tuple[ReviewStore, str, str]:
    try:
        store, catalogue = project_store(ctx.obj["env"])
    except (StoreConnectionError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    return store, ctx.obj["catalogue"] or catalogue, ctx.obj["reviewer"]


def _status_command(name: str, status: str) -> None:
    @review.command(name=name, help=f"Mark the images of products IDS as {status}.")
    @click.argument("ids", nargs=-1, required=True)
    @click.pass_context
    def command(ctx: click.Context, ids: tuple[str, ...]) -> None:
        store, catalogue, reviewer = _open(ctx)
        _report(status, store.set_status(catalogue, ids, status, reviewer, source="cli"))
        store.close()


_status_command("approve", "approved")
_status_command("reject", "rejected")
_status_command("bad", "bad")


def read_badlist(path: Path) -> list[str]:
    """Ids of a bad-list file: one per line, blank lines and ``#`` comments ignored.

    Raises:
        click.FileError: the file cannot be read as UTF-8 text.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.FileError(str(path), hint=str(exc)) from None
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


@review.command(name="push-badlist")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def push_badlist(ctx: click.Context, file: Path) -> None:
    """Mark the products listed in FILE (one id a line) as bad; unknown ids are counted."""
    ids = read_badlist(file)
    store, catalogue, reviewer = _open(ctx)
    _report(f"bad-list {file.name} ({len(ids)} ids)", store.push_badlist(catalogue, ids, reviewer))
    store.close()


@review.command(name="mark-approved")
@click.option("--all", "all_", is_flag=True, required=True, help="Every unchecked image.")
@click.pass_context
def mark_approved(ctx: click.Context, all_: bool) -> None:
    """Approve every unchecked image (rejected and bad ones are kept)."""
    store, catalogue, reviewer = _open(ctx)
    _report("approved", store.mark_all_approved(catalogue, reviewer))
    store.close()


@review.command()
@click.option("--port", default=8765, show_default=True, type=int)
@click.pass_context
def serve(ctx: click.Context, port: int) -> None:
    """Serve the review page on http://127.0.0.1:PORT (local only)."""
    from .web import serve as run

    store, catalogue, reviewer = _open(ctx)
    click.echo(f"Review page for {catalogue} ({store.url}): http://127.0.0.1:{port}/")
    run(store, catalogue, reviewer, project_root(), port)
