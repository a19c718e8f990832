"""End to end: the main job through KedroSession, the probing pipeline alone, kedro-viz."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

pytestmark = pytest.mark.slow

REPORTING = Path("data/08_reporting/test")


def run(project: Path, pipeline: str | None = None, params: dict | None = None, env: str = "test") -> None:
    """``kedro run [--pipeline=...] --env=... --params=...`` through a KedroSession."""
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=params or {}) as session:
        session.run(pipeline_names=[pipeline] if pipeline else None)
    mlflow.end_run()  # kedro-mlflow leaves its run open in-process; a CLI run exits instead


def test_main_job_then_probing_alone(kedro_project):
    for name in ("ingestion", "image_processing", "embeddings"):
        run(kedro_project, name)
    assert not (REPORTING / "probing_metrics.csv").exists()
    run(kedro_project, "probing")

    metrics = pd.read_csv(REPORTING / "probing_metrics.csv")
    assert list(metrics.columns) == [
        "model",
        "modality",
        "task",
        "probe",
        "metric",
        "value",
        "n_train",
        "n_test",
    ]
    combos = metrics[["model", "modality", "task", "probe"]].drop_duplicates()
    assert set(metrics.task) == {
        "male_female",
        "adult_child",
        "is_adult",
        "category",
        "subcategory",
    }
    assert set(metrics.modality) == {"text", "image", "text+image"}
    assert set(metrics.model) == {"tiny_ruclip", "tfidf_svd"}
    assert len(combos) == 2 * 3 * 5 * 2
    assert metrics["value"].between(0, 1).all()
    # The demo titles name the category, so every model's text probe must beat chance.
    f1 = metrics[
        (metrics.metric == "macro_f1") & (metrics.modality == "text") & (metrics.task == "category")
    ]
    assert (f1["value"] > 0.5).all(), f1

    quality = pd.read_csv(REPORTING / "ingestion_quality_report.csv").set_index("reason")["n_rows"]
    assert quality["missing_title"] == 2 and quality["duplicate_product_id"] == 1
    assert quality["unsafe_image_path"] == 1 and quality["missing_image"] == 2
    assert pd.read_csv(REPORTING / "image_quality_report.csv")["reason"].tolist() == [
        "decode_error"
    ]
    assert (REPORTING / "probing_chart.png").stat().st_size > 10_000
    assert "# Probing summary" in (REPORTING / "probing_summary.md").read_text()

    with __import__("numpy").load("data/04_feature/test/embeddings/tiny_ruclip.npz") as npz:
        assert npz["text"].dtype.name == "float32" and npz["text"].shape[0] == npz["ids"].shape[0]

    mlflow.set_tracking_uri(f"sqlite:///{kedro_project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["vitrina"], order_by=["start_time DESC"])
    probing = runs.iloc[0]
    assert probing["tags.kedro_env"] == "test" and probing["tags.kedro_pipeline"] == "probing"
    assert probing["metrics.probing.tfidf_svd.text.category.logreg.macro_f1"] > 0.5
    assert "params.probing.test_size" in runs.columns


def test_probing_without_embeddings_names_what_is_missing(kedro_project):
    run(kedro_project, "ingestion")
    run(kedro_project, "image_processing")
    with pytest.raises(
        Exception,
        match=r"embeddings/\w+.npz' does not exist: run `kedro run --pipeline=embeddings`",
    ):
        run(kedro_project, "probing")


def test_kedro_viz_build_lists_pipelines(kedro_project):
    result = subprocess.run(
        [str(Path(sys.executable).with_name("kedro")), "viz", "build", "--include-previews"],
        cwd=kedro_project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    main = json.loads((kedro_project / "build" / "api" / "main").read_text())
    pipelines = {p["id"] for p in main["pipelines"]}
    assert {"__default__", "ingestion", "image_processing", "embeddings", "probing"} <= pipelines
    names = {n["name"] for n in main["nodes"]}
    assert "tiny_ruclip.embeddings" in names
