"""The review store on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from vitrina.store import (
    ReviewStore,
    StoreConnectionError,
    approved_image_ids,
    create_store_engine,
    current_revision,
    migrate,
    redact,
    resolve_url,
)


def _images(n: int = 3, prefix: str = "P", hash_: str = "h") -> list[dict]:
    return [
        {
            "product_id": f"{prefix}{i}",
            "image_path": f"{prefix}{i}.jpg",
            "processed_path": f"data/x/{prefix}{i}.jpg",
            "content_hash": f"{hash_}{i}",
            "width": 64,
            "height": 48,
        }
        for i in range(n)
    ]


@pytest.fixture
def store(review_db_url):
    store = ReviewStore(review_db_url)
    yield store
    store.close()


def test_images_start_unchecked_and_upserts_are_idempotent(store):
    ids = store.upsert_images("demo", _images())
    assert sorted(ids) == [("P0", "P0.jpg"), ("P1", "P1.jpg"), ("P2", "P2.jpg")]
    assert store.upsert_images("demo", _images()) == ids
    assert store.upsert_images("other", _images()).keys() == ids.keys()  # catalogues apart
    images = store.images("demo")
    assert len(images) == 3
    assert set(images["status"]) == {"unchecked"}
    assert images.loc[0, "width"] == 64 and images.loc[0, "processed_path"] == "data/x/P0.jpg"
    assert store.events("demo").empty


def test_changed_content_sends_approved_images_back_to_review_but_keeps_bad(store):
    store.upsert_images("demo", _images())
    store.set_status("demo", ["P0"], "approved", "ann")
    store.set_status("demo", ["P1"], "bad", "ann")
    store.upsert_images("demo", _images(hash_="new"))
    status = store.images("demo").set_index("product_id")["status"]
    assert status.to_dict() == {"P0": "unchecked", "P1": "bad", "P2": "unchecked"}
    last = store.events("demo").iloc[-1]
    assert (last.product_id, last.old_status, last.new_status) == ("P0", "approved", "unchecked")
    assert last.note == "image content changed"


def test_masks_are_unique_per_image_model_and_version(store):
    ids = store.upsert_images("demo", _images(2))
    rows = [
        {"image_id": i, "model": "fg", "model_version": "1", "rle": "{}", "area_fraction": 0.5,
         "score": 0.7, "image_hash": "h"}
        for i in ids.values()
    ]  # fmt: skip
    assert store.add_masks(rows) == 2
    store.add_masks([{**r, "area_fraction": 0.25} for r in rows])  # replaces
    store.add_masks([{**r, "model_version": "2"} for r in rows])  # a new version adds
    masks = store.masks("demo")
    assert len(masks) == 4
    assert sorted(masks.loc[masks.model_version == "1", "area_fraction"]) == [0.25, 0.25]
    assert store.mask_hashes("demo", "fg", "1") == {("P0", "P0.jpg"): "h", ("P1", "P1.jpg"): "h"}
    assert store.mask_hashes("demo", "fg", "3") == {}
    with store.engine.connect() as conn:  # the constraint itself, not only the upsert
        with pytest.raises(sa.exc.IntegrityError):
            conn.execute(
                sa.text(
                    "INSERT INTO masks (image_id, model, model_version, rle, area_fraction, "
                    "created_at) VALUES (:i, 'fg', '1', '{}', 0.1, CURRENT_TIMESTAMP)"
                ),
                {"i": next(iter(ids.values()))},
            )


def test_status_commands_write_review_events_and_count_unknown_ids(store):
    store.upsert_images("demo", _images(4))
    change = store.set_status("demo", ["P0", "P1", "nope", "P0"], "approved", "ann")
    assert (change.changed, change.unchanged, change.unknown) == (2, 0, ["nope"])
    change = store.set_status("demo", ["P0"], "approved", "bob")
    assert (change.changed, change.unchanged) == (0, 1)
    bad = store.push_badlist("demo", ["P1", "ghost1", "ghost2"], "lead")
    assert (bad.changed, bad.unknown) == (1, ["ghost1", "ghost2"])
    store.set_status("demo", ["P2"], "rejected", "ann")
    marked = store.mark_all_approved("demo", "lead")
    assert marked.changed == 1  # only P3 was unchecked
    status = store.images("demo").set_index("product_id")["status"].to_dict()
    assert status == {"P0": "approved", "P1": "bad", "P2": "rejected", "P3": "approved"}
    assert approved_image_ids(store, "demo") == {"P0", "P3"}
    events = store.events("demo")
    assert list(events["source"]) == ["cli", "cli", "badlist", "cli", "mark_approved"]
    assert list(events["reviewer"]) == ["ann", "ann", "lead", "ann", "lead"]
    assert events.iloc[2][["old_status", "new_status"]].tolist() == ["approved", "bad"]
    with pytest.raises(ValueError, match="unchecked, approved, rejected, bad"):
        store.set_status("demo", ["P0"], "fine", "ann")


def test_approved_ids_exclude_products_with_a_bad_image(store):
    store.upsert_images("demo", [*_images(2), {"product_id": "P0", "image_path": "P0-back.jpg"}])
    store.set_status("demo", ["P0", "P1"], "approved", "ann")
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE images SET status = 'bad' WHERE image_path = 'P0-back.jpg'"))
    assert store.approved_ids("demo") == {"P1"}


def test_long_id_lists_are_bound_in_chunks(store):
    store.upsert_images("demo", _images(1200))
    change = store.set_status("demo", [f"P{i}" for i in range(1300)], "approved", "ann")
    assert change.changed == 1200 and len(change.unknown) == 100
    assert len(store.approved_ids("demo")) == 1200


def test_sql_injection_shaped_ids_are_plain_values(store):
    evil = "x'); DROP TABLE images; --"
    quote = 'a" OR 1=1 --'
    ids = store.upsert_images("demo'--", [{"product_id": evil, "image_path": quote}, *_images(1)])
    assert (evil, quote) in ids
    assert store.set_status("demo'--", [evil], "approved", "r'; DELETE FROM masks; --").changed == 1
    assert store.approved_ids("demo'--") == {evil}
    assert store.set_status("demo'--", ["' OR '1'='1"], "bad", "x").unknown == ["' OR '1'='1"]
    assert set(store.images("demo'--")["product_id"]) == {evil, "P0"}
    assert store.events("demo'--")["reviewer"].tolist() == ["r'; DELETE FROM masks; --"]
    assert {"images", "masks", "review_events"} <= set(sa.inspect(store.engine).get_table_names())


def test_two_stores_writing_at_once_never_duplicate_rows(review_db_url):
    stores = [ReviewStore(review_db_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    errors = []

    def work(store):
        try:
            barrier.wait()
            for start in range(0, 60, 10):
                batch = _images(60)[start : start + 10]
                ids = store.upsert_images("demo", batch)
                store.add_masks(
                    [{"image_id": i, "model": "fg", "model_version": "1", "rle": "{}",
                      "area_fraction": 0.1} for i in ids.values()]
                )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(stores[0].images("demo")) == 60
    assert len(stores[1].masks("demo")) == 60
    for s in stores:
        s.close()


# ------------------------------------------------------------------ migrations
def test_an_older_schema_is_migrated_forward_without_data_loss(review_db_url):
    engine = create_store_engine(review_db_url)
    migrate(engine, "0001")  # the first schema: no review_events, no reviewer column
    assert current_revision(engine) == "0001"
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO images (catalogue, product_id, image_path, content_hash, width, "
                "height, status) VALUES (:c, :p, :i, :h, 10, 20, 'approved')"
            ),
            {"c": "demo", "p": "OLD1", "i": "OLD1.jpg", "h": "abc"},
        )
        image_id = conn.execute(sa.text("SELECT id FROM images")).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO masks (image_id, model, model_version, image_hash, rle, score, "
                "area_fraction, created_at) VALUES (:i, 'fg', '1', 'abc', '{}', 0.5, 0.25, :t)"
            ),
            {"i": image_id, "t": "2026-01-01 00:00:00"},
        )
    assert "review_events" not in sa.inspect(engine).get_table_names()
    engine.dispose()

    store = ReviewStore(review_db_url)  # opening migrates to head
    assert current_revision(store.engine) == "0002"
    images = store.images("demo")
    assert images[["product_id", "status", "width", "height"]].values.tolist() == [
        ["OLD1", "approved", 10, 20]
    ]
    assert images.loc[0, "updated_at"] is not None and images.loc[0, "reviewer"] is None
    assert store.masks("demo")[["product_id", "area_fraction"]].values.tolist() == [["OLD1", 0.25]]
    assert store.approved_ids("demo") == {"OLD1"}
    store.set_status("demo", ["OLD1"], "rejected", "ann")  # the new table works
    assert store.events("demo")["new_status"].tolist() == ["rejected"]
    store.close()


# ------------------------------------------------------------------ connection
def test_an_unreachable_database_is_named_without_its_password():
    url = "postgresql+psycopg://vitrina:s3cr3t-pw@127.0.0.1:9/review"
    with pytest.raises(StoreConnectionError) as info:
        ReviewStore(url)
    message = str(info.value)
    assert "postgresql+psycopg://vitrina:***@127.0.0.1:9/review" in message
    assert "s3cr3t-pw" not in message
    assert "s3cr3t-pw" not in repr(info.value.__cause__ or "")


def test_an_unopenable_sqlite_file_is_a_clear_error(tmp_path):
    folder = tmp_path / "is_a_folder.db"
    folder.mkdir()
    with pytest.raises(StoreConnectionError, match="is_a_folder.db"):
        ReviewStore(f"sqlite:///{folder}")


def test_url_resolution_and_redaction(tmp_path):
    assert resolve_url(None) == "sqlite:///data/07_model_output/review.db"
    assert resolve_url({"url": "sqlite:///x.db"}) == "sqlite:///x.db"
    with pytest.raises(ValueError, match="not a database URL"):
        resolve_url({"url": "no-scheme-here"})
    assert redact("postgresql+psycopg://u:pw@h/db") == "postgresql+psycopg://u:***@h/db"
    store = ReviewStore(f"sqlite:///{tmp_path / 'sub' / 'dir' / 'r.db'}")  # parent created
    assert (tmp_path / "sub" / "dir" / "r.db").is_file()
    store.close()
