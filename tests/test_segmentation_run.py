"""End to end: segmentation, review commands, mask export and ret_meta POST, as a user runs
them, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import kedro_cli, make_project

SEGMENTATION_ENV = {
    "parameters_segmentation.yml": """
        segmentation:
          ground_truth_dir: data/01_raw/demo_test/masks
          batch_size: 16
        ret_meta:
          predictions_from: [category]
    """,
    # One small task, trained on approved images with their masks applied (seed 001).
    "parameters_classification.yml": """
        classification:
          review: {approved_only: true, mask: remove_background}
          training: {max_epochs: 1, num_threads: 1}
          export: {formats: [onnx]}
          tasks: {tags: null, subcategory_retrieval: null}
        classification_inference:
          review: {mask: remove_background}
    """,
}


class _Receiver(BaseHTTPRequestHandler):
    bodies: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        type(self).bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args):
        pass


def _vitrina(project: Path, *args: str) -> str:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("vitrina")), *args],
        cwd=project, capture_output=True, text=True, timeout=120, env={**os.environ},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.slow
def test_segment_review_export_and_post(tmp_path, monkeypatch, review_db_url):
    project = make_project(tmp_path / "project", n_products=60, extra_env=SEGMENTATION_ENV)
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.bodies = []
    monkeypatch.setenv("KEDRO_ENV", "test")
    monkeypatch.setenv("VITRINA_REVIEW_DB_URL", review_db_url)
    monkeypatch.setenv("VITRINA_RET_META_URL", f"http://127.0.0.1:{server.server_address[1]}/meta")
    try:
        kedro_cli(project, "run", "--pipelines", "ingestion,image_processing,segmentation")
        report_dir = project / "data" / "08_reporting" / "test"
        metrics = json.loads((report_dir / "segmentation_metrics.json").read_text())
        n_images = len(
            pd.read_parquet(project / "data/02_intermediate/test/image_manifest.parquet")
        )
        assert metrics["processed"] == n_images and metrics["failed"] == 0
        assert metrics["n_with_ground_truth"] == n_images and metrics["mean_iou"] > 0.8
        report = pd.read_csv(report_dir / "segmentation_report.csv")
        first = report["product_id"].iloc[0]

        assert "changed" in _vitrina(project, "review", "mark-approved", "--all")
        out = _vitrina(project, "review", "reject", first, "NO-SUCH-ID")
        assert "1 unknown ids" in out

        kedro_cli(project, "run", "--pipelines",
                  "segmentation,mask_export,classification,classification_inference,ret_meta")  # fmt: skip
        metrics = json.loads((report_dir / "segmentation_metrics.json").read_text())
        assert (metrics["processed"], metrics["skipped"]) == (0, n_images)
        masks = project / "data" / "07_model_output" / "test" / "masks"
        assert len(list(masks.glob("*.png"))) == n_images - 1  # approved only
        assert not (masks / f"{first}.png").exists()
        meta = json.loads((project / "data/07_model_output/test/ret_meta.json").read_text())
        entries = [e for group in meta["groups"].values() for e in group]
        assert len(entries) == n_images
        assert {e["status"] for e in entries} == {"approved", "rejected"}
        summary = pd.read_csv(report_dir / "review_summary.csv").set_index("status")["n_images"]
        assert (summary["approved"], summary["rejected"], summary["bad"]) == (n_images - 1, 1, 0)
        review = pd.read_csv(report_dir / "classification" / "category_review_report.csv")
        assert review.set_index("step").loc["not approved", "n_images"] == 1
        items = pd.read_parquet(
            project / "data/05_model_input/test/classification/category_items.parquet"
        )
        assert first not in set(items["product_id"]) and len(items) > n_images // 2
        assert all("masked_images/remove_background" in p for p in items["image_path"])
        predicted = {e["product_id"]: e["predictions"] for e in entries}
        assert all(set(p) == {"category"} for p in predicted.values())  # every image scored
        assert 0 < predicted[first]["category"]["score"] <= 1
        assert _Receiver.bodies == [meta]
    finally:
        server.shutdown()
