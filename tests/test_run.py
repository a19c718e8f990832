"""End to end: the main job through KedroSession, then the probing pipeline alone."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from tests.conftest import kedro_cli, make_project

pytestmark = pytest.mark.slow

REPORTING = Path("data/08_reporting/test")


def run(
    project: Path, pipeline: str | None = None, params: dict | None = None, env: str = "test"
) -> None:
    """``kedro run [--pipeline=...] --env=... --params=...`` through a KedroSession.

    A CLI run is one process per run; several sessions in one test process need
    kedro-mlflow's process-wide hook (it remembers the last run id) and MLflow's run stack
    reset, or a session would reopen the previous session's MLflow run.
    """
    from kedro_mlflow.framework.hooks.mlflow_hook import mlflow_hook

    while mlflow.active_run():
        mlflow.end_run()
    mlflow_hook.run_id = None
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=params or {}) as session:
        session.run(pipeline_names=[pipeline] if pipeline else None)
    mlflow.end_run()  # kedro-mlflow leaves its run open in-process; a CLI run exits instead


#: Enough fine-tuning for the tiny random-weight model to learn something in seconds.
FINETUNE = {"clip_finetune": {"train": {"max_epochs": 3, "learning_rate": 5.0e-4}}}


def test_main_job_then_probing_alone(kedro_project):
    # ingestion → image_processing → clip_finetune → embeddings → probing, registering the
    # fine-tuned model in the MLflow model registry
    run(kedro_project, None, {**FINETUNE, "mlflow": {"register_models": True}})
    # The fine-tuned model: a versioned checkpoint in the ruCLIP layout, loadable as such.
    (version,) = list(Path("data/06_models/test/tiny_ruclip_finetuned").iterdir())
    saved = version / "tiny_ruclip_finetuned"
    assert sorted(p.name for p in saved.iterdir()) == [
        "bpe.model",
        "config.json",
        "pytorch_model.bin",
    ]
    run_dir = Path("data/06_models/test/clip_finetune")  # the Lightning run folder
    assert {"best.ckpt", "last.ckpt"} <= {p.name for p in (run_dir / "checkpoints").iterdir()}
    retrieval = pd.read_csv(REPORTING / "clip_finetune_retrieval.csv")
    r10 = retrieval[retrieval.metric == "recall@10"].groupby("stage")["value"].mean()
    assert r10["finetuned"] > r10["base"], retrieval
    assert (retrieval["n_val"] >= 10).all()
    history = pd.read_csv(REPORTING / "clip_finetune_history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    assert "fine-tuned" in (REPORTING / "clip_finetune_summary.md").read_text()

    # Probing alone, on the embeddings the main job wrote.
    (REPORTING / "probing_metrics.csv").unlink()
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
    assert set(metrics.model) == {"tiny_ruclip", "tiny_ruclip_finetuned", "tfidf_svd"}
    assert len(combos) == 3 * 3 * 5 * 2
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

    shards = __import__("json").loads(
        Path("data/04_feature/test/embeddings/tiny_ruclip/manifest.json").read_text()
    )
    assert shards["completed"] and shards["num_rows"] == shards["shards"]["0"]["rows"]
    with __import__("numpy").load("data/04_feature/test/embeddings/tiny_ruclip.npz") as npz:
        assert npz["text"].dtype.name == "float32" and npz["text"].shape[0] == npz["ids"].shape[0]

    mlflow.set_tracking_uri(f"sqlite:///{kedro_project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["vitrina"], order_by=["start_time DESC"])
    probing = runs.iloc[0]
    assert probing["tags.kedro_env"] == "test" and probing["tags.kedro_pipeline"] == "probing"
    assert probing["metrics.probing.tfidf_svd.text.category.logreg.macro_f1"] > 0.5
    assert "params.probing.test_size" in runs.columns
    main = runs.iloc[1]  # the main job: fine-tuning curves, retrieval and the model in MLflow
    assert main["tags.kedro_pipeline"] == "__default__"
    assert main["params.clip_finetune.train.max_epochs"] == "3"
    client = mlflow.MlflowClient()
    assert (
        len(client.get_metric_history(main.run_id, "clip_finetune-train_loss_step"))
        == history["step"].iloc[-1]
    )
    assert len(client.get_metric_history(main.run_id, "clip_finetune-val_t2i_recall_10")) == 3
    assert main["metrics.clip_finetune.finetuned.t2i_recall_10"] == pytest.approx(
        r10_t2i(retrieval)
    )
    artefacts = {a.path for a in client.list_artifacts(main.run_id, "clip_finetune/model")}
    assert artefacts == {
        f"clip_finetune/model/{f}" for f in ("bpe.model", "config.json", "pytorch_model.bin")
    }
    (version,) = client.search_model_versions("name='vitrina-test-clip'")
    assert version.run_id == main.run_id  # registered from the main job's run


def r10_t2i(retrieval: pd.DataFrame) -> float:
    row = retrieval[(retrieval.stage == "finetuned") & (retrieval.metric == "recall@10")]
    return float(row[row.direction == "text→image"]["value"].iloc[0])


#: Probing on one modality with a fixed L2 strength: the fresh-clone test checks commands,
#: not probes.
CHEAP_PROBING = """
probing:
  modalities: [text]
  probes:
    logreg: {C: 1.0, max_iter: 200}
    mlp: {max_iter: 50}
"""


def test_a_fresh_clone_is_told_the_command_that_makes_missing_inputs_and_it_works(tmp_path):
    """``kedro run --pipelines=probing`` on a fresh clone names every missing input and one
    command that makes them; that command (it includes ``embeddings``, which needs the
    fine-tuned model) runs, and then probing does. Wrong names are answered with lists."""
    project = make_project(
        tmp_path / "fresh", n_products=120, extra_env={"parameters_probing.yml": CHEAP_PROBING}
    )
    failed = kedro_cli(project, "run", "--pipelines=probing", "--env=test", expect_failure=True)
    flat = " ".join(failed.split())
    for dataset in ("products", "image_manifest", "tiny_ruclip_finetuned.embeddings"):
        assert f"- {dataset} (" in flat
    command = re.search(r"Run `kedro run (--pipelines=[\w,]+ --env=test)` first", flat)
    assert command, flat[-2000:]
    assert command.group(1) == "--pipelines=ingestion,image_processing,embeddings --env=test"
    assert not (project / "data" / "04_feature").exists()  # nothing ran before the check
    bad = kedro_cli(
        project,
        "run",
        "--pipelines=ingestion,image_processing",
        "--env=test",
        "--params=image_processing.output_dir=/tmp/elsewhere,ingestion.max_products=0",
        expect_failure=True,
    )
    bad = " ".join(bad.split())
    assert "image_processing.output_dir = '/tmp/elsewhere': must lie inside" in bad
    assert "ingestion.max_products = 0: Input should be greater than or equal to 1" in bad
    assert not (project / "data" / "03_primary").exists()  # validated before the first node

    kedro_cli(project, "run", *command.group(1).split())
    assert (project / "data/04_feature/test/embeddings/tiny_ruclip_finetuned.npz").is_file()
    kedro_cli(project, "run", "--pipelines=probing", "--env=test")
    metrics = pd.read_csv(project / REPORTING / "probing_metrics.csv")
    assert set(metrics.model) == {"tiny_ruclip", "tiny_ruclip_finetuned", "tfidf_svd"}

    unknown = " ".join(
        kedro_cli(project, "run", "--pipeline=nope", "--env=test", expect_failure=True).split()
    )
    assert "No pipeline named 'nope' in this project. The pipelines are: captioning," in unknown
    env = " ".join(kedro_cli(project, "run", "--env=nope", expect_failure=True).split())
    assert (
        "Environment 'nope' does not exist" in env
        and "hm, local, ray, seed004_metric" in env
        and env.rstrip().count(", test") == 1
    )
    assert "maintenance mode" not in env
