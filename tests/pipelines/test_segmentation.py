"""Segmentation, mask export and ret_meta nodes on small pictures, over both backends."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError
from PIL import Image, ImageDraw

from vitrina.datasets import JSONPostDataset
from vitrina.models.segmentation import decode_rle, mask_iou
from vitrina.pipelines.mask_export.nodes import export_masks
from vitrina.pipelines.ret_meta.nodes import build_ret_meta, select_groups
from vitrina.pipelines.segmentation.nodes import segment_images
from vitrina.store import ReviewStore

IMAGE_PARAMS = {"size": 64, "mode": "pad"}
EVIL = "x'); DROP TABLE masks; --"


def _params(**overrides) -> dict:
    return {"catalogue": "demo", "segmenter": "foreground", "foreground": {}, "process_all": False,
            "batch_size": 3, "ground_truth_dir": None, **overrides}  # fmt: skip


def _draw(n: int, folder: Path, truth: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``n`` 64 px pictures of a polygon on a grey background (and their true masks)."""
    folder.mkdir(parents=True, exist_ok=True)
    products, manifest = [], []
    for i in range(n):
        pid = EVIL if i == 1 else f"P{i}"
        img = Image.new("RGB", (64, 64), (236, 236, 232))
        mask = Image.new("L", (64, 64), 0)
        poly = [(18 + i % 3, 10), (46, 12 + i % 4), (52, 54), (12, 52)]
        ImageDraw.Draw(img).polygon(poly, fill=(30 + 20 * i % 200, 60, 170))
        ImageDraw.Draw(mask).polygon(poly, fill=255)
        img.save(folder / f"p{i}.png")
        if truth is not None:
            truth.mkdir(parents=True, exist_ok=True)
            mask.save(truth / f"src{i}.png")
        products.append({"product_id": pid, "image_path": f"src{i}.jpg", "group_id": f"G{i // 2}"})
        manifest.append({"product_id": pid, "processed_path": str(folder / f"p{i}.png")})
    return pd.DataFrame(products), pd.DataFrame(manifest)


@pytest.fixture
def store(review_db_url):
    store = ReviewStore(review_db_url)
    yield store
    store.close()


def test_segments_writes_unchecked_rows_then_skips_same_content(store, tmp_path):
    products, manifest = _draw(5, tmp_path / "img", tmp_path / "truth")
    params = _params(ground_truth_dir=str(tmp_path / "truth"))
    report, metrics = segment_images(products, manifest, store, params, IMAGE_PARAMS)
    assert list(report["outcome"]) == ["processed"] * 5
    assert (metrics["processed"], metrics["skipped"], metrics["failed"]) == (5, 0, 0)
    assert metrics["n_with_ground_truth"] == 5 and metrics["mean_iou"] > 0.9
    images = store.images("demo")
    assert set(images["status"]) == {"unchecked"} and EVIL in set(images["product_id"])
    masks = store.masks("demo")
    assert len(masks) == 5 and (masks["area_fraction"] > 0.3).all()
    assert decode_rle(masks.loc[0, "rle"]).shape == (64, 64)

    report2, metrics2 = segment_images(products, manifest, store, params, IMAGE_PARAMS)
    assert list(report2["outcome"]) == ["skipped"] * 5
    assert metrics2["mean_iou"] == metrics["mean_iou"]  # from the stored masks
    again, _ = segment_images(
        products, manifest, store, {**params, "process_all": True}, IMAGE_PARAMS
    )
    assert list(again["outcome"]) == ["processed"] * 5
    assert len(store.masks("demo")) == 5


def test_changed_content_is_segmented_again(store, tmp_path):
    products, manifest = _draw(3, tmp_path / "img")
    segment_images(products, manifest, store, _params(), IMAGE_PARAMS)
    store.set_status("demo", ["P0"], "approved", "ann")
    Image.new("RGB", (64, 64), (20, 20, 20)).save(manifest.loc[0, "processed_path"])
    report, _ = segment_images(products, manifest, store, _params(), IMAGE_PARAMS)
    assert list(report["outcome"]) == ["processed", "skipped", "skipped"]
    assert store.images("demo").set_index("product_id").loc["P0", "status"] == "unchecked"


def test_an_image_deleted_after_its_row_was_written_is_reported(store, tmp_path):
    products, manifest = _draw(4, tmp_path / "img")
    segment_images(products, manifest, store, _params(), IMAGE_PARAMS)
    Path(manifest.loc[2, "processed_path"]).unlink()
    Path(manifest.loc[3, "processed_path"]).write_bytes(b"not an image")
    report, metrics = segment_images(
        products, manifest, store, _params(process_all=True), IMAGE_PARAMS
    )
    assert list(report["outcome"]) == ["processed", "processed", "failed", "failed"]
    assert report.loc[2, "reason"] == "missing_image"
    assert report.loc[3, "reason"].startswith("decode_error")
    assert metrics["failed_by_reason"] == {"missing_image": 1, "decode_error": 1}
    store.set_status("demo", ["P2"], "approved", "ann")  # its row and mask are still there
    index = export_masks(store, metrics, {"catalogue": "demo", "output_dir": str(tmp_path / "out"),
                                          "statuses": "approved"})  # fmt: skip
    assert index[["product_id", "note", "overlay_path"]].values.tolist() == [
        ["P2", "missing_image", ""]
    ]
    assert (tmp_path / "out" / "P2.png").is_file()


class _Boom(RuntimeError):
    pass


def test_a_killed_run_loses_at_most_one_batch_and_resumes(store, tmp_path, monkeypatch):
    from vitrina.models.segmentation import foreground

    products, manifest = _draw(8, tmp_path / "img")
    real = foreground.ForegroundSegmenter.segment
    calls = {"n": 0}

    def dying(self, image):
        calls["n"] += 1
        if calls["n"] == 5:  # in the second batch of 3
            raise _Boom("killed")
        return real(self, image)

    monkeypatch.setattr(foreground.ForegroundSegmenter, "segment", dying)
    with pytest.raises(_Boom):
        segment_images(products, manifest, store, _params(), IMAGE_PARAMS)
    assert len(store.masks("demo")) == 3  # the first batch was committed
    monkeypatch.setattr(foreground.ForegroundSegmenter, "segment", real)
    report, _ = segment_images(products, manifest, store, _params(), IMAGE_PARAMS)
    assert list(report["outcome"]) == ["skipped"] * 3 + ["processed"] * 5
    assert len(store.masks("demo")) == 8


def test_two_runs_at_once_write_each_row_once(review_db_url, tmp_path):
    products, manifest = _draw(9, tmp_path / "img")
    stores = [ReviewStore(review_db_url) for _ in range(2)]
    errors, barrier = [], threading.Barrier(2)

    def run(store):
        try:
            barrier.wait()
            segment_images(products, manifest, store, _params(batch_size=2), IMAGE_PARAMS)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert len(stores[0].images("demo")) == 9
    masks = stores[1].masks("demo")
    assert len(masks) == 9 and masks["image_id"].is_unique
    [s.close() for s in stores]


def test_mask_export_writes_approved_or_all_atomically(store, tmp_path):
    products, manifest = _draw(4, tmp_path / "img")
    _, metrics = segment_images(products, manifest, store, _params(), IMAGE_PARAMS)
    out = tmp_path / "masks"
    params = {"catalogue": "demo", "output_dir": str(out), "statuses": "all"}
    assert len(export_masks(store, metrics, params)) == 4
    assert len(list(out.glob("*.png"))) == 4 and len(list((out / "overlays").glob("*.png"))) == 4
    store.set_status("demo", ["P0", EVIL], "approved", "ann")
    index = export_masks(store, metrics, {**params, "statuses": "approved"})
    assert sorted(index["product_id"]) == sorted(["P0", EVIL])
    names = sorted(p.name for p in out.glob("*.png"))
    assert len(names) == 2 and "P0.png" in names  # the other two are gone
    assert all(";" not in n and "'" not in n and " " not in n for n in names)
    saved = np.asarray(Image.open(out / "P0.png")) > 127
    stored = store.masks("demo", status="approved").set_index("product_id").loc["P0", "rle"]
    assert mask_iou(saved, decode_rle(stored)) == 1.0
    with pytest.raises(ValueError, match="not in"):
        export_masks(store, metrics, {**params, "statuses": ["great"]})


def test_ret_meta_per_group_with_and_without_predictions(store, tmp_path):
    products, manifest = _draw(4, tmp_path / "img")
    _, metrics = segment_images(products, manifest, store, _params(), IMAGE_PARAMS)
    store.set_status("demo", ["P2"], "approved", "ann")
    params = {"catalogue": "demo", "groups": None}
    meta = build_ret_meta(products, store, metrics, params)
    assert list(meta["groups"]) == ["G0", "G1"]
    g1 = meta["groups"]["G1"]
    assert [(e["product_id"], e["status"]) for e in g1] == [("P2", "approved"), ("P3", "unchecked")]
    assert g1[0]["predictions"] == {}
    assert 0.3 < g1[0]["mask"]["area_fraction"] < 0.7 and g1[0]["mask"]["size"] == [64, 64]
    x0, y0, x1, y1 = g1[0]["mask"]["bbox"]
    assert x0 >= 10 and x1 <= 54 and y0 >= 8 and y1 <= 56
    json.dumps(meta)  # JSON-ready

    predictions = pd.DataFrame(
        {"product_id": ["P2", "P2", "P2", EVIL], "task": ["category", "category", "gender", "gender"],
         "label": ["Платье", "Юбка", "female", "male"], "score": [0.4, 0.9, 0.8, 0.7]}
    )  # fmt: skip
    meta = build_ret_meta(products, store, metrics, {**params, "groups": ["G1", "G0"]}, predictions)
    assert meta["groups"]["G1"][0]["predictions"] == {
        "category": {"label": "Юбка", "score": 0.9},
        "gender": {"label": "female", "score": 0.8},
    }
    assert meta["groups"]["G0"][1]["predictions"]["gender"]["label"] == "male"
    assert list(select_groups(meta, ["G0"])["groups"]) == ["G0"]
    with pytest.raises(ValueError, match=r"\['G9'\] not in"):
        select_groups(meta, ["G9"])
    with pytest.raises(ValueError, match=r"predictions lack columns \['score'\]"):
        build_ret_meta(products, store, metrics, params, predictions.drop(columns="score"))


# ------------------------------------------------------------------ POST endpoint
class _Receiver(BaseHTTPRequestHandler):
    received: list = []
    status = 200

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, self.headers.get("Authorization"), json.loads(body)))
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    _Receiver.received, _Receiver.status = [], 200
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Receiver
    server.shutdown()


def test_json_post_dataset_posts_to_a_local_server(receiver):
    base, handler = receiver
    JSONPostDataset(credentials={"url": f"{base}/meta", "token": "t0k"}).save({"a": [1, "б"]})
    assert handler.received == [("/meta", "Bearer t0k", {"a": [1, "б"]})]
    JSONPostDataset(credentials={"url": ""}).save({"a": 1})  # no URL: nothing sent
    assert len(handler.received) == 1
    handler.status = 500
    with pytest.raises(DatasetError, match=r"POST to http://127.0.0.1:\d+/meta answered 500"):
        JSONPostDataset(credentials={"url": f"{base}/meta?key=secret"}).save({})
    with pytest.raises(DatasetError, match="write-only"):
        JSONPostDataset().load()


def test_json_post_dataset_names_an_unreachable_server_without_credentials():
    ds = JSONPostDataset(credentials={"url": "http://user:pw@127.0.0.1:9/x?token=abc"}, timeout=5)
    with pytest.raises(DatasetError) as info:
        ds.save({})
    assert "http://127.0.0.1:9/x" in str(info.value)
    assert "pw" not in str(info.value) and "abc" not in str(info.value)


@pytest.mark.parametrize("size", [(240, 320), (320, 240), (100, 100), (3, 7), (333, 334)])
def test_pad_box_is_where_resize_square_puts_the_picture(size):
    from vitrina.pipelines.image_processing.nodes import pad_box, resize_square

    out = np.asarray(resize_square(Image.new("RGB", size, (255, 0, 0)), 64, "pad", (0, 0, 255)))
    ys, xs = np.nonzero(out[..., 0] > 128)
    assert pad_box(*size, 64) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_padding_is_left_out_of_the_segmentation(store, tmp_path):
    from vitrina.pipelines.image_processing.nodes import resize_square

    photo = Image.new("RGB", (48, 64), (226, 226, 229))  # a grey studio background
    ImageDraw.Draw(photo).rectangle((12, 16, 36, 50), fill=(255, 255, 255))  # a white shirt
    ImageDraw.Draw(photo).rectangle((12, 16, 36, 50), outline=(120, 120, 120))
    resize_square(photo, 64, "pad", (255, 255, 255)).save(tmp_path / "p.png")
    products = pd.DataFrame({"product_id": ["W"], "image_path": ["w.jpg"]})
    manifest = pd.DataFrame({"product_id": ["W"], "processed_path": [str(tmp_path / "p.png")],
                             "source_width": [48], "source_height": [64]})  # fmt: skip
    segment_images(products, manifest, store, _params(), IMAGE_PARAMS)
    mask = decode_rle(store.masks("demo").loc[0, "rle"])
    assert not mask[:, :8].any() and not mask[:, -8:].any()  # padding: 8 px each side
    truth = np.zeros((64, 64), bool)
    truth[16:51, 8 + 12 : 8 + 37] = True
    assert mask_iou(mask, truth) > 0.8
