"""Classification on reviewed images (approved only, masks applied) and ret_meta predictions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vitrina.models.segmentation import rle_json
from vitrina.pipelines.classification.review import apply_review
from vitrina.pipelines.ret_meta.nodes import build_ret_meta, collect_predictions, prediction_rows
from vitrina.store import ReviewStore

BLUE = (20, 40, 200)


@pytest.fixture
def store(review_db_url):
    store = ReviewStore(review_db_url)
    yield store
    store.close()


def _catalogue(tmp_path, store: ReviewStore, n: int = 4, n_masks: int = 3) -> pd.DataFrame:
    """``n`` blue 32 px pictures on a grey border, in the store; masks (the blue square
    rows 8..23, columns 4..27) for the first ``n_masks``."""
    manifest = []
    for i in range(n):
        picture = np.full((32, 32, 3), 128, np.uint8)
        picture[8:24, 4:28] = BLUE
        path = tmp_path / f"p{i}.png"
        Image.fromarray(picture).save(path)
        manifest.append({"product_id": f"P{i}", "processed_path": str(path)})
    ids = store.upsert_images("demo", [{"product_id": m["product_id"], "image_path": f"P{i}.jpg"}
                                       for i, m in enumerate(manifest)])  # fmt: skip
    mask = np.zeros((32, 32), bool)
    mask[8:24, 4:28] = True
    store.add_masks([
        {"image_id": ids[(f"P{i}", f"P{i}.jpg")], "model": "foreground", "model_version": "1",
         "rle": rle_json(mask), "area_fraction": float(mask.mean())}
        for i in range(n_masks)
    ])  # fmt: skip
    return pd.DataFrame(manifest)


def _review(tmp_path, **overrides) -> dict:
    return {"catalogue": "demo", "approved_only": False, "mask": None, "segmenter": None,
            "masked_dir": str(tmp_path / "masked"), **overrides}  # fmt: skip


def _counts(report: pd.DataFrame) -> dict[str, int]:
    return dict(zip(report["step"], report["n_images"], strict=True))


def test_without_review_options_the_manifest_passes_through_and_the_store_is_not_read(tmp_path):
    manifest = pd.DataFrame({"product_id": ["A"], "processed_path": ["a.png"]})
    out, report = apply_review(manifest, None, _review(tmp_path))  # None: touching it would fail
    pd.testing.assert_frame_equal(out, manifest)
    assert report.empty


def test_approved_only_keeps_approved_images_and_never_bad_listed_ones(store, tmp_path):
    manifest = _catalogue(tmp_path, store)
    store.set_status("demo", ["P0", "P2"], "approved", "ann")
    store.set_status("demo", ["P3"], "bad", "ann")
    out, report = apply_review(manifest, store, _review(tmp_path, approved_only=True))
    assert list(out["product_id"]) == ["P0", "P2"]
    assert _counts(report) == {"not approved": 2}
    store.set_status("demo", ["P0", "P2"], "rejected", "ann")
    with pytest.raises(ValueError, match="no image of catalogue 'demo' left.*4 not approved"):
        apply_review(manifest, store, _review(tmp_path, approved_only=True))


def test_remove_background_masks_pictures_once_and_leaves_unmasked_images_out(store, tmp_path):
    manifest = _catalogue(tmp_path, store)
    out, report = apply_review(manifest, store, _review(tmp_path, mask="remove_background"))
    assert list(out["product_id"]) == ["P0", "P1", "P2"]
    assert _counts(report) == {"no mask": 1, "unreadable": 0, "masked": 3}
    masked = np.asarray(Image.open(out.loc[0, "processed_path"]))
    assert masked.shape == (32, 32, 3)
    assert tuple(masked[0, 0]) == (255, 255, 255) and tuple(masked[16, 16]) == BLUE
    written = {p: (tmp_path / p).stat().st_mtime_ns for p in out["processed_path"]}
    again, _ = apply_review(manifest, store, _review(tmp_path, mask="remove_background"))
    assert list(again["processed_path"]) == list(out["processed_path"])  # reused, not rewritten
    assert {p: (tmp_path / p).stat().st_mtime_ns for p in again["processed_path"]} == written


def test_crop_cuts_to_the_mask_box_and_only_the_named_segmenters_masks_count(store, tmp_path):
    manifest = _catalogue(tmp_path, store)
    out, _ = apply_review(manifest, store, _review(tmp_path, mask="crop", segmenter="foreground"))
    assert Image.open(out.loc[0, "processed_path"]).size == (24, 16)  # width x height of the box
    with pytest.raises(ValueError, match=r"\(4 no mask; 0 unreadable; 0 masked\)"):
        apply_review(manifest, store, _review(tmp_path, mask="crop", segmenter="yolo"))


def test_an_image_deleted_after_its_mask_was_stored_is_counted_not_fatal(store, tmp_path):
    manifest = _catalogue(tmp_path, store)
    (tmp_path / "p1.png").unlink()
    out, report = apply_review(manifest, store, _review(tmp_path, mask="crop"))
    assert list(out["product_id"]) == ["P0", "P2"]
    assert _counts(report)["unreadable"] == 1


def test_a_mask_mode_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(
        ValueError, match=r"mask\n  Input should be 'remove_background' or 'crop'.*'blur'"
    ):
        apply_review(pd.DataFrame(), None, _review(tmp_path, mask="blur"))


def test_prediction_rows_take_each_kinds_label_and_score():
    multiclass = pd.DataFrame({"product_id": ["A", "B", None], "status": ["ok", "decode_error", "ok"],
                               "label_1": ["dress", "", "top"], "prob_1": [0.9, np.nan, 0.8]})  # fmt: skip
    assert prediction_rows("category", multiclass).to_dict("records") == [
        {"product_id": "A", "task": "category", "label": "dress", "score": 0.9}
    ]
    multilabel = pd.DataFrame({"product_id": ["A", "B"], "status": ["ok", "ok"],
                               "labels": ["red|striped", None], "scores": ["0.7000;0.9500", ""]})  # fmt: skip
    rows = prediction_rows("tags", multilabel)
    assert list(rows["label"]) == ["red|striped", ""] and list(rows["score"]) == [0.95, 0.0]
    metric = pd.DataFrame({"product_id": ["A"], "status": ["ok"], "label": ["sock"],
                           "similarities": ["0.8100;0.5000"]})  # fmt: skip
    assert prediction_rows("types", metric)["score"].tolist() == [0.81]
    with pytest.raises(ValueError, match="task 'x' have none of"):
        prediction_rows("x", pd.DataFrame({"product_id": ["A"], "foo": [1]}))


def test_ret_meta_carries_the_collected_predictions_per_image(store, tmp_path):
    manifest = _catalogue(tmp_path, store, n=2, n_masks=2)
    products = manifest.assign(group_id="G")
    table = pd.DataFrame({"product_id": ["P0", "P1"], "status": ["ok", "ok"],
                          "label_1": ["dress", "top"], "prob_1": [0.9, 0.6]})  # fmt: skip
    predictions = collect_predictions(["category"])(table)
    assert len(collect_predictions([])()) == 0
    meta = build_ret_meta(products, store, {"segmenter": "foreground", "segmenter_version": "1"},
                          {"catalogue": "demo"}, predictions)  # fmt: skip
    first = meta["groups"]["G"][0]
    assert first["predictions"] == {"category": {"label": "dress", "score": 0.9}}
    assert first["mask"]["bbox"] == [4, 8, 28, 24]
    json.dumps(meta)  # JSON-ready


def test_the_pipelines_read_the_reviewed_manifest_and_ret_meta_the_listed_tasks(monkeypatch):
    from vitrina.pipelines.classification import pipeline as classification
    from vitrina.pipelines.ret_meta import pipeline as ret_meta

    monkeypatch.setattr(classification, "classification_tasks", lambda: {"category": {}})
    built = classification.create_pipeline()
    train = next(n for n in built.nodes if n.name == "category.prepare_items")
    assert "category.classification_image_manifest" in train.inputs
    review = next(n for n in built.nodes if n.name == "category.apply_review")
    assert review.inputs == ["image_manifest", "review_store", "params:classification.review"]
    assert "review_store" in built.inputs() and "image_manifest" in built.inputs()
    monkeypatch.setattr(
        ret_meta, "project_parameters", lambda: {"ret_meta": {"predictions_from": ["category"]}}
    )
    assert "category.classification_predictions" in ret_meta.create_pipeline().inputs()


def test_review_progress_reads_the_database_through_kedro_datasets_sql(
    store, tmp_path, review_db_url
):
    from kedro_datasets.pandas import SQLQueryDataset

    from vitrina.pipelines.ret_meta.nodes import summarise_review

    _catalogue(tmp_path, store)
    store.upsert_images("other", [{"product_id": "X", "image_path": "X.jpg"}])
    store.set_status("demo", ["P0", "P1"], "approved", "ann")
    store.set_status("demo", ["P3"], "bad", "ann")
    sql = "SELECT catalogue, status, COUNT(*) AS n_images FROM images GROUP BY catalogue, status"
    counts = SQLQueryDataset(sql=sql, credentials={"con": review_db_url}).load()
    summary = summarise_review(counts, {"catalogue": "demo"}).set_index("status")
    assert summary["n_images"].to_dict() == {"unchecked": 1, "approved": 2, "rejected": 0, "bad": 1}
    assert summary["share"].sum() == pytest.approx(1.0)
