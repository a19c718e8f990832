"""Project hooks: run tags for MLflow and a clear log line per pipeline run."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)


def git_commit(path: Path | str = ".") -> str | None:
    """Return the git commit id (40 hex chars) of the checkout at ``path``, or None.

    None when git is missing or ``path`` is not inside a git work tree; never raises.
    A ``-dirty`` suffix marks uncommitted changes to tracked files.
    """
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{sha}-dirty" if dirty else sha


class ProjectHooks:
    """Tags the active MLflow run (opened by kedro-mlflow) with git commit and Kedro env."""

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        """Log what runs, and tag the MLflow run kedro-mlflow has just started."""
        env = run_params.get("env") or "local"
        pipeline = ",".join(
            run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        )
        logger.info("Vitrina run: pipeline=%s env=%s", pipeline, env)
        try:
            import mlflow
        except ImportError:  # pragma: no cover - mlflow is a dependency
            return
        if mlflow.active_run() is None:
            return
        tags = {"kedro_env": env, "kedro_pipeline": pipeline}
        commit = git_commit(run_params.get("project_path") or ".")
        if commit:
            tags["mlflow.source.git.commit"] = commit
            tags["git_commit"] = commit
        mlflow.set_tags(tags)
