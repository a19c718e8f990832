"""Tuning nodes: validate the plan, run the Optuna study, report and plot it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
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


def _probing(probe: str) -> tuple[Callable[..., TuningTarget], set[str], tuple[str, ...]]:
    def build(
        config: dict[str, Any],
        parameters: dict[str, Any],
        products: pd.DataFrame,
        image_manifest: pd.DataFrame,
        tuning: dict[str, Any],
    ) -> TuningTarget:
        return ProbingTarget(
            probe, config, parameters, products, image_manifest, tuning["embeddings_dir"]
        )

    return build, ProbingTarget.tunable(probe), ("probing", "probes", probe)


def _pair_classifier(
    config: dict[str, Any],
    parameters: dict[str, Any],
    products: pd.DataFrame,
    image_manifest: pd.DataFrame,
    tuning: dict[str, Any],
) -> TuningTarget:
    """The pair_matching step's prepared pairs from ``config["data_dir"]``."""
    from vitrina.datasets.embeddings import EmbeddingsDataset

    root = Path(config.get("data_dir") or "")
    files = {
        "pair_items": root / "items.parquet",
        "pair_item_embeddings": root / "item_embeddings.npz",
        "pair_splits": root / "pairs.parquet",
    }
    missing = [f"{name} ({path})" for name, path in files.items() if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"tuning target pair_classifier needs the pair_matching step's prepared pairs: "
            f"{', '.join(missing)} not found. Run `kedro run --pipeline=pair_matching` (same "
            "--env) first, or set tuning.targets.pair_classifier.data_dir"
        )
    return PairClassifierTarget(
        config,
        parameters,
        pd.read_parquet(files["pair_items"]),
        EmbeddingsDataset(str(files["pair_item_embeddings"])).load(),
        pd.read_parquet(files["pair_splits"]),
    )


def load_clip_base(parameters: dict[str, Any], models_dir: str | Path) -> Any:
    """The clip_finetune step's base model, as the step loads it.

    A tiny or ``source: catalogue`` model comes from its catalogue directory
    ``<models_dir>/<base_model>`` (``{model}.checkpoint``); any other from its hub id or
    path (:func:`vitrina.models.clip.load_base_model`).

    Raises:
        KeyError: ``clip_finetune.base_model`` is not in ``embeddings.models``.
        kedro.io.DatasetError: the catalogue checkpoint has not been written yet.
    """
    from vitrina.datasets import ClipCheckpointDataset
    from vitrina.models.clip import load_base_model
    from vitrina.pipelines.clip_finetune.pipeline import base_from_catalogue

    base = parameters["clip_finetune"]["base_model"]
    models = (parameters.get("embeddings") or {}).get("models") or {}
    if base not in models:
        raise KeyError(
            f"clip_finetune.base_model {base!r} is not in embeddings.models {sorted(models)}"
        )
    spec = models[base]
    if base_from_catalogue(spec):
        return ClipCheckpointDataset(str(Path(models_dir) / base)).load()
    return load_base_model(spec)


def _clip_finetune(
    config: dict[str, Any],
    parameters: dict[str, Any],
    products: pd.DataFrame,
    image_manifest: pd.DataFrame,
    tuning: dict[str, Any],
) -> TuningTarget:
    base = load_clip_base(parameters, config.get("models_dir") or "data/06_models")
    return ClipFinetuneTarget(config, parameters, products, image_manifest, base)


def _captioning(
    config: dict[str, Any],
    parameters: dict[str, Any],
    products: pd.DataFrame,
    image_manifest: pd.DataFrame,
    tuning: dict[str, Any],
) -> TuningTarget:
    return CaptioningTarget(config, parameters, products, image_manifest)


#: name → (builder, accepted parameter names, where the parameters live in the step's YAML:
#: a path, or a function of the target's config block that returns one)
TARGETS: dict[str, tuple[Callable[..., TuningTarget], set[str], ParamsPath]] = {
    "probing_mlp": _probing("mlp"),
    "probing_logreg": _probing("logreg"),
    "pair_classifier": (
        _pair_classifier,
        PairClassifierTarget.tunable(),
        lambda config: ("pair_matching", "classifiers", str(config.get("classifier") or "mlp")),
    ),
    "clip_finetune": (_clip_finetune, ClipFinetuneTarget.tunable(), ClipFinetuneTarget.params_path),
    "captioning": (_captioning, CaptioningTarget.tunable(), CaptioningTarget.params_path),
}


def plan_tuning(tuning: dict[str, Any]) -> dict[str, Any]:
    """Check the requested target and its search space before any trial runs.

    Args:
        tuning: ``tuning`` parameters (``target``, ``targets``, ``n_trials``,
            ``study_name``, ``storage``, ``sampler``, ``pruner``, ``timeout``).

    Returns:
        The plan: target name, study name, parsed search space and run settings.

    Raises:
        ValueError: the target does not exist (lists the valid ones) or has no
            configuration; ``n_trials < 1``.
        vitrina.tuning.SearchSpaceError: the search space is invalid (every problem).
    """
    target = tuning.get("target")
    configured = tuning.get("targets") or {}
    valid = sorted(set(TARGETS) & set(configured))
    if target not in TARGETS or target not in configured:
        raise ValueError(f"Unknown tuning target {target!r}; valid targets: {', '.join(valid)}")
    n_trials = int(tuning.get("n_trials", 20))
    if n_trials < 1:
        raise ValueError(f"tuning.n_trials must be >= 1, got {n_trials}")
    _, allowed, path = TARGETS[target]
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
    products: pd.DataFrame,
    image_manifest: pd.DataFrame,
) -> tuple[optuna.Study, pd.DataFrame, str, dict[str, Any]]:
    """Run (or continue) the study of ``plan`` and score its best parameters on test once.

    A new study's first trial is the step's configured parameters (so the report shows
    what tuning gained over the defaults). The storage is opened before anything else:
    an unreachable database fails with :class:`vitrina.tuning.TuningStorageError` and
    leaves no study behind.

    Returns:
        The study, a one-row summary (``target, study, n_trials, n_complete, n_pruned,
        n_failed, metric, direction, default_value, best_value, improvement`` (positive:
        better than the defaults, whatever the direction), ``test_metric, test_value``),
        the best-parameters YAML and MLflow metrics.
    """
    storage = open_storage(tuning.get("storage"))
    build, _, _ = TARGETS[plan["target"]]
    target = build(tuning["targets"][plan["target"]], parameters, products, image_manifest, tuning)
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
