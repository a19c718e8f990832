"""Tuning nodes: validate the plan, run the Optuna study, report and plot it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")
import optuna  # noqa: E402
import pandas as pd  # noqa: E402

from vitrina.tuning import (  # noqa: E402
    best_params_yaml,
    completed_values,
    decode_params,
    make_pruner,
    make_sampler,
    open_storage,
    parse_space,
    redact,
    run_study,
    study_figures,
)

from .wiring import TARGETS, check_removed_keys  # noqa: E402

logger = logging.getLogger(__name__)


def plan_tuning(tuning: dict[str, Any]) -> dict[str, Any]:
    """Check the requested target and its search space before any trial runs.

    Args:
        tuning: ``tuning`` parameters (``target``, ``targets``, ``n_trials``,
            ``study_name``, ``storage``, ``sampler``, ``pruner``, ``timeout``).

    Returns:
        The plan: target name, study name, parsed search space and run settings.

    Raises:
        ValueError: the target does not exist (lists the valid ones) or has no
            configuration; ``n_trials < 1``; a removed path key (:data:`REMOVED_KEYS`).
        vitrina.tuning.SearchSpaceError: the search space is invalid (every problem).
    """
    check_removed_keys(tuning)
    target = tuning.get("target")
    configured = tuning.get("targets") or {}
    valid = sorted(set(TARGETS) & set(configured))
    if target not in TARGETS or target not in configured:
        raise ValueError(f"Unknown tuning target {target!r}; valid targets: {', '.join(valid)}")
    n_trials = int(tuning.get("n_trials", 20))
    if n_trials < 1:
        raise ValueError(f"tuning.n_trials must be >= 1, got {n_trials}")
    allowed, path = TARGETS[target].tunable, TARGETS[target].params_path
    if callable(path):
        path = path(configured[target])
    space = parse_space(configured[target].get("space") or {}, allowed, target)
    study_name = tuning.get("study_name") or f"{tuning.get('catalogue', 'vitrina')}-{target}"
    return {
        "target": target,
        "study_name": study_name,
        "space": space,
        "params_path": path,
        "n_trials": n_trials,
    }


def run_tuning(
    plan: dict[str, Any],
    tuning: dict[str, Any],
    parameters: dict[str, Any],
    wired: dict[str, str] | None = None,
    storage_url: str | None = None,
    **data: Any,
) -> tuple[optuna.Study, pd.DataFrame, str, dict[str, Any]]:
    """Run (or join, or continue) the study of ``plan``; score its best parameters on test once.

    The study runs until it holds ``tuning.n_trials`` finished trials, whichever worker
    ran them (:func:`vitrina.tuning.run_study`): several ``kedro run --pipeline=tuning``
    processes on one storage share the budget, and a dead worker's trial is retried
    (``tuning.heartbeat``). A new study's first trial is the step's configured parameters
    (so the report shows what tuning gained over the defaults). The storage is opened
    before anything else: an unreachable database fails with
    :class:`vitrina.tuning.TuningStorageError` and leaves no study behind.

    Args:
        plan: :func:`plan_tuning`'s output.
        tuning, parameters: ``params:tuning`` and all parameters.
        wired: ``{input: catalogue dataset}`` the pipeline loaded ``data`` from (None: the
            caller passes the target's inputs itself, as tests do).
        storage_url: the storage URL from credentials (catalogue dataset
            ``tuning_storage``, :class:`vitrina.datasets.OptunaStorageDataset`); ``None``
            or empty: ``tuning.storage``.
        data: the target's catalogue inputs by input name (:func:`target_inputs`).

    Returns:
        The study, a one-row summary (``target, study, n_trials, n_complete, n_pruned,
        n_failed, metric, direction, default_value, best_value, improvement`` (positive:
        better than the defaults, whatever the direction), ``test_metric, test_value``),
        the best-parameters YAML and MLflow metrics.

    Raises:
        ValueError: the pipeline loaded other datasets than the target reads (it was
            built for another target or model); names the datasets.
    """
    spec = TARGETS[plan["target"]]
    config = tuning["targets"][plan["target"]]
    needed = spec.inputs(config, parameters)
    if wired is not None and needed != wired:
        absent = sorted(f"{k} ({v})" for k, v in needed.items() if wired.get(k) != v)
        raise ValueError(
            f"tuning target {plan['target']} reads the catalogue dataset(s) "
            f"{', '.join(absent) or '-'}, which this run's tuning pipeline does not load (it "
            f"loads {', '.join(sorted(wired.values())) or 'none'}): the pipeline is built for "
            "the tuning.target of the run's parameters; pass the target with `kedro run "
            "--pipeline=tuning --params=tuning.target=...`"
        )
    missing = sorted(set(needed) - set(data))
    if missing:
        raise ValueError(
            f"tuning target {plan['target']} needs the input(s) "
            + ", ".join(f"{k} (catalogue dataset {needed[k]})" for k in missing)
        )
    url = storage_url or tuning.get("storage")
    heartbeat = tuning.get("heartbeat") or {}
    storage = open_storage(
        url,
        heartbeat_interval=heartbeat.get("interval", 60),
        grace_period=heartbeat.get("grace_period"),
        max_retry=heartbeat.get("max_retry", 2),
    )
    logger.info(
        "tuning %s: study %r on %s (budget: %d finished trials in the study)",
        plan["target"],
        plan["study_name"],
        redact(url) if url else "memory",
        plan["n_trials"],
    )
    target = spec.build(config, parameters, {k: data[k] for k in needed})
    defaults = target.defaults()
    first = {
        p.name: defaults[p.name]
        for p in plan["space"]
        if p.name in defaults and p.contains(defaults[p.name])
    }
    study = run_study(
        target.objective,
        plan["space"],
        study_name=plan["study_name"],
        storage=storage,
        direction=target.direction,
        # trial t sampled with seed + t: no repeats across workers and sessions
        sampler=make_sampler(tuning.get("sampler")),
        # a target's own pruner (e.g. a longer warm-up for slow starters) over tuning.pruner
        pruner=make_pruner(tuning["targets"][plan["target"]].get("pruner") or tuning.get("pruner")),
        n_trials=plan["n_trials"],
        timeout=tuning.get("timeout"),
        first_trial=first if len(first) == len(plan["space"]) else None,
    )
    values = completed_values(study)
    default_trials = [
        t
        for t in study.trials
        if t.user_attrs.get("defaults") and t.state == optuna.trial.TrialState.COMPLETE
    ]
    if default_trials:
        default_value = default_trials[0].value
    elif "default_value" in study.user_attrs:  # scored by an earlier session of the study
        default_value = float(study.user_attrs["default_value"])
    else:  # the step's settings are outside the space or no point of it (C: sweep)
        logger.info("tuning %s: scoring the step's own settings (not a trial)", plan["target"])
        default_value = float(target.default_value())
        study.set_user_attr("default_value", default_value)
    best_value = study.best_value if values else float("nan")
    test_value = (
        target.test_score(decode_params(study.best_trial.params)) if values else float("nan")
    )
    # improvement: how much better than the defaults, whichever the direction
    improvement = (
        default_value - best_value if target.direction == "minimize" else best_value - default_value
    )
    test_metric = target.test_metric or target.metric
    states = pd.Series([t.state.name for t in study.trials]).value_counts()
    summary = pd.DataFrame(
        [
            {
                "target": plan["target"],
                "study": plan["study_name"],
                "n_trials": len(study.trials),
                "n_complete": int(states.get("COMPLETE", 0)),
                "n_pruned": int(states.get("PRUNED", 0)),
                "n_failed": int(states.get("FAIL", 0)),
                "metric": f"validation_{target.metric}",
                "direction": target.direction,
                "default_value": default_value,
                "best_value": best_value,
                "improvement": improvement,
                "test_metric": f"test_{test_metric}",
                "test_value": test_value,
            }
        ]
    )
    logger.info(
        "tuning %s: validation %s default %.4f → best %.4f (%s); test %s %.4f",
        plan["target"],
        target.metric,
        default_value,
        best_value,
        target.direction,
        test_metric,
        test_value,
    )
    header = (
        f"# Best parameters of Optuna study {plan['study_name']!r} ({len(study.trials)} trials, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC)\n# validation {target.metric}: {best_value:.4f} "
        f"(defaults {default_value:.4f}); test {test_metric}: {test_value:.4f}\n"
        f"# The whole `{plan['params_path'][0]}` block with the tuned values merged in: save it as\n"
        f"# conf/<env>/parameters_{plan['params_path'][0]}.yml and run with --env=<env>.\n"
    )
    yaml_text = (
        best_params_yaml(study, plan["params_path"], parameters.get(plan["params_path"][0]), header)
        if values
        else ""
    )
    metrics = {
        f"{plan['target']}.{k}": {"value": float(summary.iloc[0][k]), "step": 0}
        for k in ("best_value", "default_value", "test_value")
        if pd.notna(summary.iloc[0][k])
    }
    return study, summary, yaml_text, metrics


def plot_tuning(study: optuna.Study) -> tuple[Any, Any, Any, Any]:
    """Optuna's optimisation history, parameter importances and parallel coordinates.

    Returns:
        Three Plotly figures (saved as HTML; a placeholder figure explains a plot that
        needs more completed trials) and a Matplotlib figure of the history (PNG).
    """
    import plotly.graph_objects as go
    from optuna.visualization import matplotlib as optuna_mpl

    figures = study_figures(study)

    def placeholder(name: str) -> go.Figure:
        fig = go.Figure()
        fig.add_annotation(
            text=f"{name}: needs at least two completed trials with different parameters",
            showarrow=False,
        )
        return fig

    ax = optuna_mpl.plot_optimization_history(study)
    png = ax.figure
    png.set_size_inches(7, 4)
    return (
        figures["optimization_history"],
        figures.get("param_importances") or placeholder("parameter importances"),
        figures.get("parallel_coordinate") or placeholder("parallel coordinates"),
        png,
    )
