"""Optuna machinery shared by every tuning target: search spaces, storage, studies, reports.

A search space is declared in ``conf/base/parameters_tuning.yml`` per target::

    space:
      alpha: {type: float, low: 1.0e-6, high: 1.0e-1, log: true}
      hidden_layer_sizes: {type: categorical, choices: [[128], [256], [256, 128]]}
      batch_size: {type: int, low: 32, high: 256, step: 32}

It is validated before any trial runs (unknown parameter, ``low > high``, a log range
that touches zero, a categorical without choices): :class:`SearchSpaceError` lists every
problem at once.

Modules: :mod:`~vitrina.tuning.space` (parsing and sampling a space),
:mod:`~vitrina.tuning.study` (samplers, pruners, storage, the trial loop with MLflow
nested runs) and :mod:`~vitrina.tuning.reporting` (best parameters as YAML, figures).
"""

from vitrina.tuning.reporting import (
    best_params_yaml,
    completed_values,
    merge_dotted,
    study_figures,
)
from vitrina.tuning.space import (
    SPACE_TYPES,
    ParamSpec,
    SearchSpaceError,
    decode_params,
    encode_choice,
    parse_space,
)
from vitrina.tuning.study import (
    PRUNERS,
    SAMPLERS,
    Reporter,
    TuningStorageError,
    count_trials,
    make_pruner,
    make_sampler,
    open_storage,
    redact,
    run_study,
)

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "SPACE_TYPES",
    "ParamSpec",
    "Reporter",
    "SearchSpaceError",
    "TuningStorageError",
    "best_params_yaml",
    "completed_values",
    "count_trials",
    "decode_params",
    "encode_choice",
    "make_pruner",
    "make_sampler",
    "merge_dotted",
    "open_storage",
    "parse_space",
    "redact",
    "run_study",
    "study_figures",
]
