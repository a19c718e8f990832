"""The export in MLflow: artefacts logged to the active run, the ONNX model registered.

kedro-mlflow opens a run for every ``kedro run``; the export node logs the export folder
(and the Triton model folder) into it under ``export/<task>/``. With
``mlflow.register_models: true`` the fp32 ONNX file is also logged with MLflow's ONNX
flavour (``mlflow.onnx.log_model``) and registered as ``<prefix>-<task>-classifier-onnx``,
beside the ``pyfunc`` model that ``register_classifier`` registers as
``<prefix>-<task>-classifier``.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def onnx_model_name(settings: dict[str, Any] | None, task: str) -> str:
    """``<mlflow.model_name_prefix>-<task>-classifier-onnx`` (prefix default ``vitrina``)."""
    prefix = str((settings or {}).get("model_name_prefix") or "vitrina")
    return f"{prefix}-{task}-classifier-onnx"


def log_export(report: dict[str, Any], mlflow_settings: dict[str, Any] | None) -> dict[str, Any]:
    """Log an export to MLflow and register its ONNX model when asked.

    Artefacts go to the active run only (none active: nothing is logged, and that is
    said); registration starts a run ``register-<name>`` when none is active, as
    :func:`vitrina.registry.log_and_register` does.

    Returns:
        ``{"logged": bool, "run_id", "registered": bool, "name", "version", "model_uri"}``.
    """
    import mlflow

    task = str(report["task"])
    record: dict[str, Any] = {"logged": False, "run_id": None, "registered": False,
                              "name": onnx_model_name(mlflow_settings, task), "version": None,
                              "model_uri": None}  # fmt: skip
    active = mlflow.active_run()
    if active is not None:
        mlflow.log_artifacts(report["out_dir"], artifact_path=f"export/{task}")
        if report.get("triton"):
            mlflow.log_artifacts(
                report["triton"]["model_dir"], artifact_path=f"export/{task}/triton"
            )
        int8 = report.get("int8")
        if int8:
            mlflow.log_metrics(
                {f"export.{task}.int8_{k}": float(int8[k]) for k in ("fp32", "int8", "drop")}
            )
            mlflow.set_tag(f"export.{task}.int8", "accepted" if int8["accepted"] else "rejected")
        record.update(logged=True, run_id=active.info.run_id)
    else:
        logger.info("no active MLflow run: export of %s not logged", task)
    if (mlflow_settings or {}).get("register_models") and "onnx" in report["artefacts"]:
        record.update(_register(Path(report["artefacts"]["onnx"]), record["name"], report))
    return record


def _register(path: Path, name: str, report: dict[str, Any]) -> dict[str, Any]:
    import mlflow
    import mlflow.onnx
    import onnx

    active = mlflow.active_run()
    run = (
        contextlib.nullcontext(active) if active else mlflow.start_run(run_name=f"register-{name}")
    )
    with run as current:
        info = mlflow.onnx.log_model(
            onnx.load(str(path)), name=f"{report['task']}-classifier-onnx",
            registered_model_name=name, save_as_external_data=False,
        )  # fmt: skip
        run_id = current.info.run_id
    version = int(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_model_version_tag(name, str(version), "kind", report["kind"])
    client.set_model_version_tag(name, str(version), "config_sha256", report["config_sha256"])
    if report.get("int8"):
        client.set_model_version_tag(name, str(version), "int8", "accepted" if report["int8"]["accepted"] else "rejected")  # fmt: skip
    logger.info("MLflow registry: %s version %d", name, version)
    return {"registered": True, "version": version, "model_uri": f"models:/{name}/{version}",
            "run_id": run_id}  # fmt: skip
