"""Loggers: a CSV log per training attempt, and MLflow metrics in kedro-mlflow's run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger


class ActiveRunMLFlowLogger(MLFlowLogger):
    """Lightning's ``MLFlowLogger`` bound to the MLflow run kedro-mlflow opened.

    Two changes to the stock logger: it never terminates the run (kedro-mlflow ends it
    after the pipeline, and later nodes still log into it), and it does not log the
    module's hyper-parameters, which kedro-mlflow already logged as the run's
    parameters (MLflow refuses a parameter logged twice with another value, which two
    tasks in one run would otherwise do).
    """

    def log_hyperparams(self, params: Any) -> None:  # noqa: D102 - see class docstring
        return None

    def finalize(self, status: str = "success") -> None:  # noqa: D102
        return None


def build_loggers(root: Path, prefix: str) -> list[Logger]:
    """``CSVLogger`` under ``root/logs/version_<n>`` (one version per attempt, so a
    resumed run keeps the killed attempt's rows) plus :class:`ActiveRunMLFlowLogger`
    when an MLflow run is active (metrics prefixed ``<prefix>-``).
    """
    loggers: list[Logger] = [CSVLogger(save_dir=str(root), name="logs")]
    try:
        import mlflow
    except ImportError:  # pragma: no cover - mlflow is a dependency
        return loggers
    run = mlflow.active_run()
    if run is not None:
        loggers.append(
            ActiveRunMLFlowLogger(
                tracking_uri=mlflow.get_tracking_uri(),
                run_id=run.info.run_id,
                prefix=prefix,
                log_model=False,
            )
        )
    return loggers


def training_history(root: Path) -> pd.DataFrame:
    """Every attempt's CSV log merged into one table, one row per (epoch, step).

    Later attempts win where a killed attempt logged the same step before the
    checkpoint it resumed from was written.

    Returns:
        Lightning's logged columns (``epoch``, ``step``, ``train_loss``, ``val_*`` …),
        sorted by step; empty when nothing was logged.
    """
    frames = []
    for i, path in enumerate(
        sorted(
            Path(root, "logs").glob("version_*/metrics.csv"),
            key=lambda p: int(p.parent.name.split("_")[1]),
        )
    ):
        frame = pd.read_csv(path)
        if len(frame):
            frames.append(frame.assign(_attempt=i))
    if not frames:
        return pd.DataFrame(columns=["epoch", "step"])
    history = pd.concat(frames, ignore_index=True)
    keep = history.groupby(["epoch", "step"])["_attempt"].transform("max") == history["_attempt"]
    history = history[keep].drop(columns="_attempt")
    return history.groupby(["epoch", "step"], as_index=False).first().sort_values("step")
