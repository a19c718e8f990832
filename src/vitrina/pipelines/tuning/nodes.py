"""Tuning nodes: validate the plan, run the Optuna study, report and plot it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")
import optuna  # noqa: E402
import pandas as pd  # noqa: E402

from vitrina.tuning import (  # noqa: E402
    best_params_yaml,
    completed_values,
    count_trials,
    decode_params,
    make_pruner,
    make_sampler,
    open_storage,
    parse_space,
    run_study,
    study_figures,
)

from .targets import (  # noqa: E402
    CaptioningTarget,
    ClipFinetuneTarget,
    PairClassifierTarget,
    ProbingTarget,
    TuningTarget,
)

logger = logging.getLogger(__name__)

#: A target's parameter location in the step's YAML, fixed or chosen by its config block.
ParamsPath = tuple[str, ...] | Callable[[dict[str, Any]], tuple[str, ...]]


#: Keys that named files before the targets read the catalogue, and what replaced them.
REMOVED_KEYS: dict[tuple[str, ...], str] = {
    ("embeddings_dir",): "the probing targets read the catalogue dataset `<model>.embeddings`",
    ("targets", "pair_classifier", "data_dir"): (
        "the pair_classifier target reads the catalogue datasets pair_items, "
        "pair_item_embeddings and pair_splits"
    ),
    ("targets", "clip_finetune", "models_dir"): (
        "the clip_finetune target reads the catalogue dataset `<base_model>.checkpoint` (a tiny "
        "or `source: catalogue` base) or loads the base from its hub id / path"
    ),
}


def check_removed_keys(tuning: dict[str, Any]) -> None:
    """Fail on a path key of the file-reading targets (:data:`REMOVED_KEYS`).

    Raises:
        ValueError: names the key and the catalogue dataset(s) that replaced it.
    """
    for path, replacement in REMOVED_KEYS.items():
        block: Any = tuning
        for key in path[:-1]:
            block = (block or {}).get(key) if isinstance(block, dict) else None
        if isinstance(block, dict) and path[-1] in block:
            raise ValueError(
                f"tuning.{'.'.join(path)} is no longer read: {replacement}. Remove the key; "
                "to read another file, point the catalogue entry there (conf/<env>/catalog*.yml)"
            )


def clip_base_input(parameters: dict[str, Any]) -> str:
    """The catalogue dataset holding the clip_finetune step's base model.

    ``<base_model>.checkpoint`` for a tiny or ``source: catalogue`` model (as the
    clip_finetune pipeline reads it), else ``tuning_base_checkpoint``, which the tuning
    pipeline's ``load_base_model`` node loads from the model's hub id or path.

    Raises:
        KeyError: ``clip_finetune.base_model`` is not in ``embeddings.models``.
    """
    from vitrina.pipelines.clip_finetune.pipeline import base_from_catalogue

    base = (parameters.get("clip_finetune") or {}).get("base_model")
    models = (parameters.get("embeddings") or {}).get("models") or {}
    if base not in models:
        raise KeyError(
            f"clip_finetune.base_model {base!r} is not in embeddings.models {sorted(models)}"
        )
    return f"{base}.checkpoint" if base_from_catalogue(models[base]) else "tuning_base_checkpoint"


def _probing_inputs(config: dict[str, Any], parameters: dict[str, Any]) -> dict[str, str]:
    return {
        "products": "products",
        "image_manifest": "image_manifest",
        "embeddings": f"{config.get('model')}.embeddings",
    }


def _pair_inputs(config: dict[str, Any], parameters: dict[str, Any]) -> dict[str, str]:
    return {
        "pair_items": "pair_items",
        "embeddings": "pair_item_embeddings",
        "pair_splits": "pair_splits",
    }


def _clip_inputs(config: dict[str, Any], parameters: dict[str, Any]) -> dict[str, str]:
    return {
        "products": "products",
        "image_manifest": "image_manifest",
        "base": clip_base_input(parameters),
    }


def _captioning_inputs(config: dict[str, Any], parameters: dict[str, Any]) -> dict[str, str]:
    return {"products": "products", "image_manifest": "image_manifest"}


def _probing(probe: str) -> tuple[Callable[..., TuningTarget], set[str], tuple[str, ...]]:
    def build(config: dict[str, Any], parameters: dict[str, Any], data: dict[str, Any]):
        return ProbingTarget(
            probe, config, parameters, data["products"], data["image_manifest"], data["embeddings"]
        )

    return build, ProbingTarget.tunable(probe), ("probing", "probes", probe)


def _pair_classifier(
    config: dict[str, Any], parameters: dict[str, Any], data: dict[str, Any]
) -> TuningTarget:
    return PairClassifierTarget(
        config, parameters, data["pair_items"], data["embeddings"], data["pair_splits"]
    )


def _clip_finetune(
    config: dict[str, Any], parameters: dict[str, Any], data: dict[str, Any]
) -> TuningTarget:
    return ClipFinetuneTarget(
        config, parameters, data["products"], data["image_manifest"], data["base"]
    )


def _captioning(
    config: dict[str, Any], parameters: dict[str, Any], data: dict[str, Any]
) -> TuningTarget:
    return CaptioningTarget(config, parameters, data["products"], data["image_manifest"])


@dataclass(frozen=True)
class Target:
    """What the tuning pipeline knows of a target.

    Attributes:
        build: ``(config block, all parameters, {input: loaded data}) -> TuningTarget``.
        tunable: the parameter names a search space may use.
        params_path: where the parameters live in the step's YAML: a path, or a function
            of the target's config block that returns one.
        inputs: ``(config block, all parameters) -> {input: catalogue dataset name}``, the
            datasets the tuning pipeline loads for the target.
    """

    build: Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], TuningTarget]
    tunable: set[str]
    params_path: ParamsPath
    inputs: Callable[[dict[str, Any], dict[str, Any]], dict[str, str]]


TARGETS: dict[str, Target] = {
    "probing_mlp": Target(*_probing("mlp"), _probing_inputs),
    "probing_logreg": Target(*_probing("logreg"), _probing_inputs),
    "pair_classifier": Target(
        _pair_classifier,
        PairClassifierTarget.tunable(),
        lambda config: ("pair_matching", "classifiers", str(config.get("classifier") or "mlp")),
        _pair_inputs,
    ),
    "clip_finetune": Target(
        _clip_finetune, ClipFinetuneTarget.tunable(), ClipFinetuneTarget.params_path, _clip_inputs
    ),
    "captioning": Target(
        _captioning, CaptioningTarget.tunable(), CaptioningTarget.params_path, _captioning_inputs
    ),
}


def target_inputs(tuning: dict[str, Any], parameters: dict[str, Any]) -> dict[str, str]:
    """``{input: catalogue dataset}`` of ``tuning.target``.

    ``{}`` for an unknown or unconfigured target, which :func:`plan_tuning` then refuses
    by name, and for a clip_finetune base missing from ``embeddings.models``, which
    :func:`run_tuning` then refuses by name (building the project's pipelines never fails
    on the tuning configuration).
    """
    name = tuning.get("target")
    config = (tuning.get("targets") or {}).get(name)
    if name not in TARGETS or config is None:
        return {}
    try:
        return TARGETS[name].inputs(config, parameters)
    except KeyError:
        return {}


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
    **data: Any,
) -> tuple[optuna.Study, pd.DataFrame, str, dict[str, Any]]:
    """Run (or continue) the study of ``plan`` and score its best parameters on test once.

    A new study's first trial is the step's configured parameters (so the report shows
    what tuning gained over the defaults). The storage is opened before anything else:
    an unreachable database fails with :class:`vitrina.tuning.TuningStorageError` and
    leaves no study behind.

    Args:
        plan: :func:`plan_tuning`'s output.
        tuning, parameters: ``params:tuning`` and all parameters.
        wired: ``{input: catalogue dataset}`` the pipeline loaded ``data`` from (None: the
            caller passes the target's inputs itself, as tests do).
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
    storage = open_storage(tuning.get("storage"))
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
        # a continued study's sampler is seeded past its earlier sessions (no repeats)
        sampler=make_sampler(
            tuning.get("sampler"), seed_offset=count_trials(storage, plan["study_name"])
        ),
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
