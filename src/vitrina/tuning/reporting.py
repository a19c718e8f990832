"""What a finished study gives back: the best parameters in the step's YAML shape,
completed values and Optuna's figures."""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
import yaml

from vitrina.tuning.space import decode_params

logger = logging.getLogger(__name__)


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
