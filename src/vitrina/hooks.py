"""Project hooks: checks before the first node runs, run tags for MLflow, a log line per run."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from vitrina.config import check_environment, remember_run_parameters

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


class RunChecks:
    """Before the first node of a run (and before kedro-mlflow opens its run):

    * an unknown ``--env`` fails with the list of environments
      (:func:`vitrina.config.check_environment`);
    * the run's parameters, ``--params`` included, are recorded for the pipelines whose
      shape depends on them (:func:`vitrina.config.run_parameters`: tuning's target), and
      forgotten when the run ends;
    * temporary files that killed writers left under ``data/`` are deleted
      (:func:`vitrina.utils.remove_stale_temporaries`);
    * the parameters the pipeline reads are validated
      (:func:`vitrina.validation.validate_run_parameters`);
    * inputs that another pipeline writes but that do not exist yet fail with the command
      that writes them (:func:`vitrina.run_checks.check_inputs_exist`);
    * every file dataset of the run saves atomically
      (:func:`vitrina.datasets.atomic.make_catalog_atomic`).
    """

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        """Fail on an environment ``conf/`` does not have, before any plugin reads it;
        record the run's parameters (``--params`` included) for the pipelines built from
        them (:func:`vitrina.config.run_parameters`: Kedro builds pipelines after this).
        Read from the config loader, not ``context.params``: Kedro 1.7 builds every
        pipeline to validate those, which would build them before they are recorded."""
        check_environment(context.config_loader.conf_source, context.env)
        remember_run_parameters(context.config_loader["parameters"])

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        """Clean stale temporaries, validate parameters and inputs, make saves atomic."""
        from vitrina.datasets.atomic import make_catalog_atomic
        from vitrina.run_checks import check_inputs_exist, project_data_dir
        from vitrina.utils import remove_stale_temporaries
        from vitrina.validation import validate_run_parameters

        removed = remove_stale_temporaries(project_data_dir(run_params))
        if removed:
            logger.info(
                "Removed %d temporary file(s) left by killed runs, e.g. %s",
                len(removed),
                removed[0],
            )
        validate_run_parameters(pipeline, catalog)
        check_inputs_exist(pipeline, catalog, run_params)
        make_catalog_atomic(catalog, sorted(pipeline.datasets()))

    @hook_impl
    def after_pipeline_run(self) -> None:
        """Forget the run's parameters: a later session in this process records its own."""
        remember_run_parameters(None)

    @hook_impl
    def on_pipeline_error(self) -> None:
        """Forget the run's parameters (as :meth:`after_pipeline_run`)."""
        remember_run_parameters(None)
