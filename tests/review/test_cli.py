"""``vitrina review ...`` on a project copy, over both backends."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tests.conftest import make_project
from vitrina.review.cli import review
from vitrina.store import ReviewStore


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = make_project(tmp_path / "project")
    monkeypatch.chdir(root)
    monkeypatch.setenv("KEDRO_ENV", "test")
    return root


@pytest.fixture
def db(project, review_db_url, monkeypatch):
    monkeypatch.setenv("VITRINA_REVIEW_DB_URL", review_db_url)
    store = ReviewStore(review_db_url)
    store.upsert_images(
        "test", [{"product_id": f"P{i}", "image_path": f"{i}.jpg"} for i in range(5)]
    )
    yield store
    store.close()


def _run(*args: str):
    return CliRunner().invoke(review, ["--reviewer", "ann", *args], catch_exceptions=False)


def test_status_commands(db):
    result = _run("approve", "P0", "P1", "nope")
    assert result.exit_code == 0
    assert "approved: 2 changed, 0 already so" in result.stdout
    assert "1 unknown ids (no image in the store): nope" in result.stderr
    assert _run("reject", "P2").exit_code == 0
    assert _run("bad", "P1").exit_code == 0
    status = db.images("test").set_index("product_id")["status"].to_dict()
    assert status == {"P0": "approved", "P1": "bad", "P2": "rejected", "P3": "unchecked",
                      "P4": "unchecked"}  # fmt: skip
    assert set(db.events("test")["reviewer"]) == {"ann"}


def test_push_badlist_counts_unknown_ids(db, tmp_path):
    badlist = tmp_path / "badlist.txt"
    badlist.write_text("# bad pictures\nP3\n\n  P4  \nghost-1  # typo\nghost-2\n", encoding="utf-8")
    result = _run("push-badlist", str(badlist))
    assert result.exit_code == 0
    assert "bad-list badlist.txt (4 ids): 2 changed" in result.stdout
    assert "2 unknown ids (no image in the store): ghost-1, ghost-2" in result.stderr
    assert db.events("test")["source"].tolist() == ["badlist", "badlist"]
    assert _run("push-badlist", str(tmp_path / "missing.txt")).exit_code == 2


def test_mark_approved_needs_all(db):
    db.set_status("test", ["P0"], "rejected", "bob")
    assert _run("mark-approved").exit_code == 2  # --all is required
    result = _run("mark-approved", "--all")
    assert "approved: 4 changed" in result.stdout
    assert db.approved_ids("test") == {"P1", "P2", "P3", "P4"}


def test_catalogue_option_and_entry_point(db):
    from vitrina.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["review", "--catalogue", "test", "approve", "P4"])
    assert info.value.code == 0
    assert db.approved_ids("test") == {"P4"}
    assert "unknown" in _run("--catalogue", "other", "approve", "P3").stderr


def test_default_sqlite_file_lives_in_the_project(project, monkeypatch):
    monkeypatch.delenv("VITRINA_REVIEW_DB_URL", raising=False)
    result = _run("approve", "P0")
    assert result.exit_code == 0 and "unknown ids" in result.stderr  # a new, empty store
    assert (project / "data" / "07_model_output" / "review.db").is_file()


def test_unreachable_database_is_a_clear_error(project, monkeypatch):
    monkeypatch.setenv("VITRINA_REVIEW_DB_URL", "postgresql+psycopg://rev:hunter2@127.0.0.1:9/r")
    result = CliRunner().invoke(review, ["approve", "P0"])
    assert result.exit_code == 1
    assert "Cannot connect to the review database postgresql+psycopg://rev:***@127.0.0.1:9/r" in (
        result.stderr
    )
    assert "hunter2" not in result.output
