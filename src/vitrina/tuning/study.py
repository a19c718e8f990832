"""Running an Optuna study: samplers and pruners by name, storage, the trial loop with
MLflow nested runs (:func:`run_study`).

Several processes (on one machine or many) may run one study at once on a shared RDB
storage: ``n_trials`` is the study's total budget, each worker runs trials until the
study holds that many finished ones, trial ``t`` is sampled with seed ``seed + t`` (so
workers never draw the same point), and a worker that dies mid-trial is detected by
Optuna's heartbeat and its trial retried (:func:`open_storage`).
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from vitrina.tuning.space import ParamSpec, encode_choice
from vitrina.tuning.sqlite_storage import SQLiteImmediateStorage
from vitrina.utils import SQLITE_BUSY_TIMEOUT_S

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


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A sampler made afresh for each trial with seed ``seed + trial.number``.

    Optuna's seeded samplers draw from one random stream per process: two workers with
    the same seed would propose the same points, and a continued study would repeat its
    first session's random start-up trials. Trial numbers are unique in a study (the
    storage hands them out), so seeding by them gives every trial its own draws on any
    worker, and the same draws on a rerun. The samplers used here (TPE, random, CMA-ES,
    GP) keep their state in the study's storage, so a fresh instance per trial loses
    nothing. Optuna has no such option itself, hence this adaptor.
    """

    def __init__(self, factory: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._factory, self._seed = factory, int(seed)
        self._current = factory(self._seed)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._current = self._factory(self._seed + trial.number)
        self._current.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._current.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._current.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._current.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._current.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._current.reseed_rng()


def make_sampler(config: dict[str, Any] | None) -> optuna.samplers.BaseSampler:
    """``{type: tpe | random | cmaes | gp, seed: int, ...}`` → an Optuna sampler (TPE default).

    With a ``seed``, trial ``t`` is sampled with seed ``seed + t``
    (:class:`TrialSeededSampler`): parallel workers and continued sessions of a study
    never repeat each other's points.
    """
    config = dict(config or {})
    seed = config.pop("seed", None)
    if seed is None:
        return _from_config(config, SAMPLERS, "tpe", "sampler")
    _from_config(config, SAMPLERS, "tpe", "sampler")  # fail on a bad type/key now
    return TrialSeededSampler(
        lambda s: _from_config({**config, "seed": s}, SAMPLERS, "tpe", "sampler"), int(seed)
    )


#: Trials that use up a study's ``n_trials`` budget (failed ones are retried or rerun).
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def count_trials(study: optuna.Study, states: tuple[TrialState, ...] = FINISHED) -> int:
    """Trials of ``study`` in ``states`` (by default the finished ones: complete, pruned)."""
    return len(study.get_trials(deepcopy=False, states=states))


def make_pruner(config: dict[str, Any] | None) -> optuna.pruners.BasePruner:
    """``{type: median | percentile | hyperband | successive_halving | none, ...}`` → a pruner.

    The median pruner (Optuna's default rule, Golovin et al. 2017 "Google Vizier") stops a
    trial whose intermediate value is worse than the median of earlier trials at the same
    step.
    """
    return _from_config(config or {}, PRUNERS, "median", "pruner")


#: Retries of opening an RDB storage whose tables another worker is creating.
TABLE_RACE_RETRIES = 5
#: What SQLite / PostgreSQL / MySQL say when another worker created a table or row first.
TABLE_RACE_ERRORS = (
    "already exists",
    "UNIQUE constraint failed",
    "duplicate key",
    "Duplicate entry",
)


def redact(url: str, text: str | None = None) -> str:
    """``text`` (default: ``url`` itself) with ``url``'s password replaced by ``***``
    (for logs and errors: a driver's message may quote the password)."""
    text = url if text is None else text
    match = re.search(r"://[^:/@]+:([^@]+)@", url)
    if match:
        text = text.replace(match.group(1), "***")
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", text)


def open_storage(
    url: str | None,
    heartbeat_interval: int | None = 60,
    grace_period: int | None = None,
    max_retry: int | None = 2,
) -> optuna.storages.BaseStorage | None:
    """Open an Optuna storage, failing before any study is created.

    An RDB storage gets Optuna's heartbeat: a running trial writes a heartbeat every
    ``heartbeat_interval`` seconds; one silent for ``grace_period`` seconds (Optuna's
    default: twice the interval) belongs to a dead worker, and the next trial any worker
    starts marks it FAIL and enqueues a copy of it (same parameters, at most
    ``max_retry`` retries; ``RetryHeartbeatStaleTrialCallback``, formerly
    ``RetryFailedTrialCallback``). An SQLite file storage runs every transaction as
    ``BEGIN IMMEDIATE`` with a busy timeout (``vitrina.utils.SQLITE_BUSY_TIMEOUT_S``)
    (:class:`~vitrina.tuning.sqlite_storage.SQLiteImmediateStorage`), so workers
    sharing one SQLite file never claim one trial twice.

    Args:
        url: an RDB URL (``sqlite:///data/06_models/optuna.db``, ``postgresql://...``,
            ``mysql+pymysql://...``), ``journal:///path/to/study.log`` (a journal file
            several processes on one machine can share; no heartbeat), or None/"" for
            in-memory.
        heartbeat_interval: seconds; ``None`` or 0: no heartbeat (a dead worker's trial
            stays RUNNING).
        grace_period: seconds; ``None``: Optuna's default.
        max_retry: retries of a dead worker's trial; ``None``: no limit.

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
        heartbeat = {}
        if heartbeat_interval:
            heartbeat = {
                "heartbeat_interval": int(heartbeat_interval),
                "grace_period": int(grace_period) if grace_period else None,
            }
        with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat:  # Optuna 5's name of RetryFailedTrialCallback
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
                heartbeat["heartbeat_stale_trial_callback"] = retry
            storage_class, engine_kwargs = optuna.storages.RDBStorage, {"pool_pre_ping": True}
            if url.startswith("sqlite"):  # atomic trial claims across processes
                storage_class = SQLiteImmediateStorage
                # the busy timeout from the first connection: Optuna's table creation
                # runs before SQLiteImmediateStorage adds its hook
                engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
            for attempt in range(TABLE_RACE_RETRIES + 1):
                try:
                    return storage_class(url, engine_kwargs=engine_kwargs, **heartbeat)
                except Exception as exc:  # noqa: BLE001
                    # Workers starting together on an empty database race to create
                    # Optuna's tables and stamp their version; the loser's CREATE TABLE
                    # or INSERT fails, and its next try finds them.
                    race = any(w in str(exc) for w in TABLE_RACE_ERRORS)
                    if not race or attempt == TABLE_RACE_RETRIES:
                        raise
                    time.sleep(0.2 * (attempt + 1))
    except Exception as exc:  # noqa: BLE001 - every driver raises its own type
        raise TuningStorageError(
            f"Cannot open the Optuna storage {redact(url)!r}: {type(exc).__name__}: "
            f"{redact(url, str(exc))}"
        ) from exc


#: ``report(value, step)``: give Optuna an intermediate validation value (may prune).
Reporter = Callable[[float, int], None]


def _open_study(
    study_name: str,
    storage: optuna.storages.BaseStorage | None,
    direction: str,
    sampler: optuna.samplers.BaseSampler | None,
    pruner: optuna.pruners.BasePruner | None,
) -> tuple[optuna.Study, bool]:
    """``(study, created)``: create the study, or load it when another process has.

    Only the process whose ``create_study`` succeeds is the creator (the storage's unique
    study name decides the race), so two workers starting at once never both enqueue the
    first trial.
    """
    kwargs = {"study_name": study_name, "storage": storage, "sampler": sampler, "pruner": pruner}
    try:
        return optuna.create_study(direction=direction, load_if_exists=False, **kwargs), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(**kwargs), False


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
    """Create or join a study and run trials until it holds ``n_trials`` finished ones.

    ``n_trials`` is the study's total budget of finished (complete or pruned) trials,
    whoever ran them: a study continued on the same storage runs what is left of it
    (raise ``n_trials`` to go further), and several workers on one storage share it.
    Before each trial a worker counts the finished trials and those other workers are
    running (Optuna's ``MaxTrialsCallback`` counts the finished ones only, so every
    worker would overshoot by the trials in flight); when they reach ``n_trials`` it
    stops. A failed trial does not use the budget, but a worker stops after ``n_trials``
    failures of its own (an objective that always fails ends). With a heartbeat storage
    (:func:`open_storage`) a dead worker's trial is failed and retried first.

    Each trial samples ``space``, calls ``objective(params, report)`` and records the
    returned validation value; ``report`` forwards intermediate values so the pruner can
    stop a bad trial early (``optuna.TrialPruned``). A trial that raises is recorded as
    failed and the study goes on. With an active MLflow run (kedro-mlflow's run of this
    ``kedro run``), every trial is a nested MLflow run holding its parameters,
    intermediate values (metric ``intermediate`` by step) and final ``value``.

    ``first_trial`` (e.g. the step's configured parameters) is enqueued by the process
    that creates the study, tagged with the user attribute ``defaults``, so the gain over
    it can be reported.
    """
    study, created = _open_study(study_name, storage, direction, sampler, pruner)
    if first_trial is not None and created:
        study.enqueue_trial(
            {k: encode_choice(v) for k, v in first_trial.items()}, user_attrs={"defaults": True}
        )
    with warnings.catch_warnings():  # a no-op without a heartbeat storage
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial: FAIL, then retried
    if log_to_mlflow:
        import mlflow

        parent = mlflow.active_run()
    else:
        parent = None
    own: set[int] = set()  # trials this process is running or ran

    def budget_left() -> int:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        others = sum(t.number not in own for t in running)
        return n_trials - count_trials(study) - others

    def stop_when_spent(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        failed = sum(
            t.state == TrialState.FAIL for t in study.get_trials(deepcopy=False) if t.number in own
        )
        if budget_left() <= 0 or failed >= n_trials:
            study.stop()

    def trial_objective(trial: optuna.Trial) -> float:
        own.add(trial.number)
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

    left = budget_left()
    if left > 0:
        study.optimize(  # until stop_when_spent (or the timeout) stops it
            trial_objective,
            n_trials=None,
            timeout=timeout,
            catch=(Exception,),
            callbacks=[stop_when_spent],
        )
    else:
        logger.info(
            "tuning: study %r already holds %d finished trials (n_trials=%d): none to run; "
            "raise tuning.n_trials to continue it",
            study_name,
            count_trials(study),
            n_trials,
        )
    new = [t for t in study.get_trials(deepcopy=False) if t.number in own]
    states = {
        s.name: sum(t.state == s for t in new) for s in TrialState if any(t.state == s for t in new)
    }
    logger.info(
        "tuning: study %r: this worker ran %d trials %s; the study holds %d finished of "
        "n_trials=%d (%d in all)",
        study_name,
        len(new),
        states,
        count_trials(study),
        n_trials,
        len(study.trials),
    )
    return study
