"""Running an Optuna study: samplers and pruners by name, storage, the trial loop with
MLflow nested runs (:func:`run_study`)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from vitrina.tuning.space import ParamSpec, encode_choice

logger = logging.getLogger(__name__)


class TuningStorageError(RuntimeError):
    """The Optuna storage URL cannot be opened (nothing was written to it)."""


#: Optuna's samplers and pruners by the ``type`` named in parameters.
SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
}
PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "none": optuna.pruners.NopPruner,
}


def _from_config(config: dict[str, Any], classes: dict[str, Any], default: str, what: str) -> Any:
    """``classes[config["type"]](**rest of config)``.

    Raises:
        ValueError: an unknown ``type`` (lists the valid ones).
    """
    config = dict(config)
    kind = str(config.pop("type", default)).lower()
    if kind not in classes:
        raise ValueError(f"tuning.{what}.type must be one of {sorted(classes)}, got {kind!r}")
    return classes[kind](**config)


def make_sampler(
    config: dict[str, Any] | None, seed_offset: int = 0
) -> optuna.samplers.BaseSampler:
    """``{type: tpe | random | cmaes | gp, seed: int, ...}`` → an Optuna sampler (TPE default).

    Args:
        seed_offset: added to ``seed``. A continued study passes its number of trials:
            a sampler re-seeded with the same seed would draw the same random start-up
            points again (TPE's first ``n_startup_trials`` are random), so the new
            session would repeat trials the study already has.
    """
    config = dict(config or {})
    if config.get("seed") is not None:
        config["seed"] = int(config["seed"]) + int(seed_offset)
    return _from_config(config, SAMPLERS, "tpe", "sampler")


def count_trials(storage: Any, study_name: str) -> int:
    """Trials already in ``study_name`` on ``storage`` (0 for a new study)."""
    summaries = optuna.study.get_all_study_summaries(storage=storage)
    return next((s.n_trials for s in summaries if s.study_name == study_name), 0)


def make_pruner(config: dict[str, Any] | None) -> optuna.pruners.BasePruner:
    """``{type: median | percentile | hyperband | successive_halving | none, ...}`` → a pruner.

    The median pruner (Optuna's default rule, Golovin et al. 2017 "Google Vizier") stops a
    trial whose intermediate value is worse than the median of earlier trials at the same
    step.
    """
    return _from_config(config or {}, PRUNERS, "median", "pruner")


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and errors)."""
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)


def open_storage(url: str | None) -> optuna.storages.BaseStorage | None:
    """Open an Optuna storage, failing before any study is created.

    Args:
        url: an RDB URL (``sqlite:///data/06_models/optuna.db``, ``postgresql://...``,
            ``mysql+pymysql://...``), ``journal:///path/to/study.log`` (a journal file
            several processes on one machine can share), or None/"" for in-memory.

    Raises:
        TuningStorageError: the database cannot be reached or created (message names the
            URL with its password redacted, and the cause).
    """
    if not url:
        return None
    try:
        if url.startswith("journal://"):
            path = Path(url.removeprefix("journal://"))
            path.parent.mkdir(parents=True, exist_ok=True)
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if url.startswith("sqlite:///"):
            db = url.removeprefix("sqlite:///")
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(
            url, engine_kwargs={"pool_pre_ping": True}, skip_compatibility_check=False
        )
    except Exception as exc:  # noqa: BLE001 - every driver raises its own type
        raise TuningStorageError(
            f"Cannot open the Optuna storage {redact(url)!r}: {type(exc).__name__}: {exc}"
        ) from exc


#: ``report(value, step)``: give Optuna an intermediate validation value (may prune).
Reporter = Callable[[float, int], None]


def run_study(
    objective: Callable[[dict[str, Any], Reporter], float],
    space: list[ParamSpec],
    *,
    study_name: str,
    storage: optuna.storages.BaseStorage | None,
    direction: str = "maximize",
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    n_trials: int = 20,
    timeout: float | None = None,
    log_to_mlflow: bool = True,
    first_trial: dict[str, Any] | None = None,
) -> optuna.Study:
    """Create or continue a study and run ``n_trials`` more trials.

    Each trial samples ``space``, calls ``objective(params, report)`` and records the
    returned validation value; ``report`` forwards intermediate values so the pruner can
    stop a bad trial early (``optuna.TrialPruned``). A trial that raises is recorded as
    failed and the study goes on. With an active MLflow run (kedro-mlflow's run of this
    ``kedro run``), every trial is a nested MLflow run holding its parameters,
    intermediate values (metric ``intermediate`` by step) and final ``value``.

    Running the same study name on the same storage again continues the study.
    ``first_trial`` (e.g. the step's configured parameters) is enqueued when the study is
    new, tagged with the user attribute ``defaults``, so the gain over it can be reported.
    """
    import mlflow

    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    if first_trial is not None and not study.trials:
        study.enqueue_trial(
            {k: encode_choice(v) for k, v in first_trial.items()}, user_attrs={"defaults": True}
        )
    parent = mlflow.active_run() if log_to_mlflow else None

    def trial_objective(trial: optuna.Trial) -> float:
        params = {p.name: p.suggest(trial) for p in space}

        def report(value: float, step: int) -> None:
            trial.report(float(value), step)
            if parent is not None:
                mlflow.log_metric("intermediate", float(value), step=step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} (value {value:.4f})")

        if parent is None:
            return objective(params, report)
        with mlflow.start_run(run_name=f"{study_name}-trial-{trial.number}", nested=True):
            mlflow.set_tags({"optuna.study": study_name, "optuna.trial": trial.number})
            mlflow.log_params({k: str(v) for k, v in params.items()})
            try:
                value = objective(params, report)
            except optuna.TrialPruned:
                mlflow.set_tag("optuna.state", "PRUNED")
                raise
            except Exception as exc:
                mlflow.set_tags(
                    {"optuna.state": "FAIL", "error": f"{type(exc).__name__}: {exc}"[:500]}
                )
                raise
            mlflow.set_tag("optuna.state", "COMPLETE")
            mlflow.log_metric("value", float(value))
            return value

    before = len(study.trials)
    study.optimize(trial_objective, n_trials=n_trials, timeout=timeout, catch=(Exception,))
    new = study.trials[before:]
    states = {
        s.name: sum(t.state == s for t in new)
        for s in optuna.trial.TrialState
        if any(t.state == s for t in new)
    }
    logger.info(
        "tuning: study %r ran %d trials %s; %d in total",
        study_name,
        len(new),
        states,
        len(study.trials),
    )
    return study
