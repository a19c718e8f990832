"""End to end as a user runs it: train and register a classifier with ``kedro run``, download
it from the MLflow registry with ``vitrina models download``, classify with ``vitrina classify``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tests.conftest import kedro_cli

pytestmark = pytest.mark.slow


def vitrina(project: Path, *args: str, expect_failure: bool = False) -> str:
    result = subprocess.run([str(Path(sys.executable).with_name("vitrina")), *args], cwd=project,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    output = result.stdout + result.stderr
    assert (result.returncode != 0) == expect_failure, output[-3000:]
    return output


def test_train_register_download_and_classify(kedro_project, tmp_path):
    project = kedro_project
    kedro_cli(project, "run", "--pipelines=ingestion,image_processing")
    kedro_cli(
        project, "run", "--pipeline=classification", "--namespaces=category",
        "--params=classification.training.max_epochs=3,mlflow.register_models=true",
    )  # fmt: skip
    report = Path("data/08_reporting/test/classification")
    registration = json.loads((report / "category" / "registration.json").read_text())
    assert registration["registered"] and registration["name"] == "vitrina-test-category-classifier"
    output = Path("data/07_model_output/test/classification")
    assert set(pd.read_csv(output / "category_metrics.csv")["split"]) == {"validation", "test"}
    assert set(pd.read_csv(output / "category_baseline.csv")["model"]) == {"linear_probe_frozen"}

    out = vitrina(
        project, "models", "download", registration["model_uri"], "--dst", str(tmp_path / "dl")
    )
    model_dir = Path(out.split("classifier folder: ")[1].split()[0])
    assert (model_dir / "config.json").is_file()

    folder = tmp_path / "shop"
    folder.mkdir()
    manifest = pd.read_parquet("data/02_intermediate/test/image_manifest.parquet")
    for i, path in enumerate(manifest["processed_path"].head(4)):
        Image.open(path).save(folder / f"p{i}.jpg")
    (folder / "broken.jpg").write_bytes(b"not an image")
    csv = tmp_path / "predictions.csv"
    vitrina(
        project,
        "classify",
        "--model",
        str(model_dir),
        str(folder),
        "--output",
        str(csv),
        "--top-k",
        "2",
    )
    downloaded = pd.read_csv(csv)
    assert sorted(downloaded["status"]) == ["decode_error", "ok", "ok", "ok", "ok"]
    # The registry's copy and the trained model in the catalogue give the same answers.
    vitrina(
        project,
        "classify",
        "--task",
        "category",
        str(folder),
        "--output",
        str(tmp_path / "p2.csv"),
        "--top-k",
        "2",
    )
    local = pd.read_csv(tmp_path / "p2.csv")
    pd.testing.assert_frame_equal(downloaded.drop(columns="task"), local.drop(columns="task"))

    group = vitrina(project, "classify", "--task", "category", "--group", "category=Обувь")
    assert "Обувь" in group and "label_1" in group
    unknown = vitrina(project, "classify", "--task", "nope", str(folder), expect_failure=True)
    assert "unknown task 'nope'" in unknown and "category" in unknown
    untrained = vitrina(project, "classify", "--task", "tags", str(folder), expect_failure=True)
    assert "kedro run --pipeline=classification --namespaces=tags" in untrained

    # The run exported the model (every format, checked), and the Triton repository has it.
    export = json.loads((report / "category" / "export.json").read_text())
    assert set(export["artefacts"]) == {"onnx", "pt2", "torchscript", "int8"}
    assert Path(export["triton"]["onnx"]).is_file() and export["triton"]["version"] == 1
    assert (Path(export["out_dir"]) / "model_card.md").is_file()
    # vitrina export: any saved classifier folder. The registry's copy has the run's weights,
    # so the Triton repository's version 1 already holds it: no version is added.
    out = vitrina(project, "export", str(model_dir), "--formats", "onnx,int8",
                  "--output", str(tmp_path / "exp"))  # fmt: skip
    assert (
        "int8 accuracy" in out
        and "version 1 (unchanged" in out
        and (tmp_path / "exp" / "model.int8.onnx").is_file()
    )
    # torch and onnxruntime backends agree
    for b in ("torch", "onnxruntime"):
        vitrina(project, "classify", "--task", "category", "--backend", b, str(folder),
                "--output", str(tmp_path / f"{b}.csv"))  # fmt: skip
    t, o = (pd.read_csv(tmp_path / f"{b}.csv") for b in ("torch", "onnxruntime"))
    assert set(t["backend"]) == {"torch"} and set(o["backend"]) == {"onnxruntime"}
    assert (t["label_1"].fillna("") == o["label_1"].fillna("")).all()
    # a folder of a kind with no export path
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "config.json").write_text(json.dumps({"kind": "clip", "task": "x"}))
    refused = vitrina(project, "export", str(clip), expect_failure=True)
    assert "kind 'clip', which has no export path" in refused
