"""Optuna machinery shared by every tuning target: search spaces, storage, studies, reports.

A search space is declared in ``conf/base/parameters_tuning.yml`` per target::

    space:
      alpha: {type: float, low: 1.0e-6, high: 1.0e-1, log: true}
      hidden_layer_sizes: {type: categorical, choices: [[128], [256], [256, 128]]}
      batch_size: {type: int, low: 32, high: 256, step: 32}

It is validated before any trial runs (unknown parameter, ``low > high``, a log range
that touches zero, a categorical without choices): :class:`SearchSpaceError` lists every
problem at once.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

logger = logging.getLogger(__name__)

SPACE_TYPES = ("float", "int", "categorical")


class SearchSpaceError(ValueError):
    """A search space that cannot be sampled; the message lists every problem."""


class TuningStorageError(RuntimeError):
    """The Optuna storage URL cannot be opened (nothing was written to it)."""


@dataclass(frozen=True)
class ParamSpec:
    """One searchable parameter.

    Attributes:
        name: parameter name in the step's own parameters.
        type: ``float`` | ``int`` | ``categorical``.
        low, high: inclusive bounds (float/int).
        log: sample on a log scale (``low`` must be > 0).
        step: discretisation step (float/int, not with ``log``).
        choices: values of a categorical (lists are allowed; Optuna stores them as
            strings and they are converted back).
    """

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in this parameter's range or choices."""
        if self.type == "categorical":
            return any(_encode_choice(value) == _encode_choice(c) for c in self.choices)
        try:
            return self.low <= float(value) <= self.high
        except (TypeError, ValueError):
            return False

    def suggest(self, trial: optuna.Trial) -> Any:
        """Draw this parameter from ``trial``."""
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        encoded = [_encode_choice(c) for c in self.choices]
        return _decode_choice(trial.suggest_categorical(self.name, encoded))


def _encode_choice(value: Any) -> Any:
    # Optuna categoricals hold None/bool/int/float/str only: lists go through YAML text.
    return (
        yaml.safe_dump(value, default_flow_style=True).strip()
        if isinstance(value, list | tuple | dict)
        else value
    )


def _decode_choice(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        return yaml.safe_load(value)
    return value


def decode_params(params: dict[str, Any]) -> dict[str, Any]:
    """Trial parameters with categorical lists decoded back from their stored text."""
    return {k: _decode_choice(v) for k, v in params.items()}


def parse_space(
    space: dict[str, Any], allowed: set[str] | None = None, target: str = "target"
) -> list[ParamSpec]:
    """Validate a search space and return its parameters.

    Args:
        space: ``{name: {type, low, high, log, step, choices}}``.
        allowed: the parameter names the target accepts (None: anything).
        target: target name, for messages.

    Raises:
        SearchSpaceError: every problem found, e.g. ``probing_mlp: unknown parameter
            'alpah' (valid: alpha, batch_size, ...)`` or ``'alpha': low 0.1 > high 0.01``.
    """
    problems, specs = [], []
    if not space:
        problems.append("the search space is empty")
    for name, spec in (space or {}).items():
        spec = dict(spec or {})
        kind = spec.get("type")
        if allowed is not None and name not in allowed:
            problems.append(f"unknown parameter {name!r} (valid: {', '.join(sorted(allowed))})")
            continue
        if kind not in SPACE_TYPES:
            problems.append(f"{name!r}: type must be one of {SPACE_TYPES}, got {kind!r}")
            continue
        if kind == "categorical":
            choices = spec.get("choices")
            if not choices:
                problems.append(f"{name!r}: a categorical needs a non-empty 'choices' list")
                continue
            specs.append(ParamSpec(name, kind, choices=tuple(choices)))
            continue
        low, high, log, step = (
            spec.get("low"),
            spec.get("high"),
            bool(spec.get("log", False)),
            spec.get("step"),
        )
        if low is None or high is None:
            problems.append(f"{name!r}: {kind} needs 'low' and 'high'")
            continue
        low, high = float(low), float(high)
        if low > high:
            problems.append(f"{name!r}: low {low:g} > high {high:g}")
        if log and low <= 0:
            problems.append(f"{name!r}: a log scale needs low > 0, got {low:g}")
        if log and step is not None:
            problems.append(f"{name!r}: 'step' cannot be combined with 'log'")
        specs.append(ParamSpec(name, kind, low, high, log, step))
    if problems:
        raise SearchSpaceError(f"{target}: invalid search space: " + "; ".join(problems))
    return specs


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
            {k: _encode_choice(v) for k, v in first_trial.items()}, user_attrs={"defaults": True}
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


def merge_dotted(node: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Set ``values`` in ``node`` (in place), a dotted name going into nested blocks.

    ``merge_dotted({"train": {"lr": 1}}, {"train.lr": 2, "model.hidden_size": 64})`` →
    ``{"train": {"lr": 2}, "model": {"hidden_size": 64}}``. Search spaces name a parameter
    that sits deeper than the target's ``params_path`` this way (``train.lr``).
    """
    for name, value in values.items():
        *parents, leaf = str(name).split(".")
        target = node
        for key in parents:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        target[leaf] = value
    return node


def best_params_yaml(
    study: optuna.Study,
    path: tuple[str, ...] | list[str],
    step_parameters: dict[str, Any] | None = None,
    header: str = "",
) -> str:
    """The best trial's parameters as YAML in the shape of the step's parameters file.

    With ``step_parameters`` (the step's whole top-level block, e.g. all of ``probing``),
    the tuned values are merged into a copy of it, so the snippet can replace the
    environment's ``parameters_<pipeline>.yml`` as it is (Kedro replaces top-level keys
    per environment); without, only the tuned values are nested under ``path``. A dotted
    parameter name (``train.lr`` under ``("pair_matching", "classifiers", "mlp")``) goes
    into the nested block it names.

    Raises:
        ValueError: the study has no completed trial.
    """
    import copy

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ValueError(f"Study {study.study_name!r} has no completed trial: nothing to write")
    params = {
        k: (float(v) if isinstance(v, float) else v)
        for k, v in decode_params(study.best_trial.params).items()
    }
    doc = merge_dotted(
        {path[0]: copy.deepcopy(dict(step_parameters or {}))},
        {".".join([*path, str(k)]): v for k, v in params.items()},
    )
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    return (header + body) if header else body


def completed_values(study: optuna.Study) -> list[float]:
    """Objective values of the completed trials, in trial order."""
    return [
        t.value
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE
        and t.value is not None
        and math.isfinite(t.value)
    ]


def study_figures(study: optuna.Study) -> dict[str, Any]:
    """Optuna's own plots of a study, as Plotly figures (for HTML) keyed by name.

    ``optimization_history`` always; ``param_importances`` (fANOVA, Hutter et al. 2014)
    and ``parallel_coordinate`` once two completed trials with different parameters exist.
    """
    from optuna import visualization as vis

    figures = {"optimization_history": vis.plot_optimization_history(study)}
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if (
        len(complete) >= 2
        and len({tuple(sorted(map(str, t.params.items()))) for t in complete}) >= 2
    ):
        try:
            figures["param_importances"] = vis.plot_param_importances(study)
        except (RuntimeError, ValueError) as exc:  # one-valued params: no importance to show
            logger.info("tuning: no parameter importances (%s)", exc)
        figures["parallel_coordinate"] = vis.plot_parallel_coordinate(study)
    return figures
