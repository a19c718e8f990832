"""Optuna machinery shared by every tuning target: search spaces, storage, studies, reports.

Each target's search space is declared in its ``tuning.targets.<target>.space`` block and
validated before any trial runs (:func:`~vitrina.tuning.space.parse_space`).

Modules: :mod:`~vitrina.tuning.space` (parsing and sampling a space),
:mod:`~vitrina.tuning.study` (samplers, pruners, storage, the trial loop with MLflow
nested runs), :mod:`~vitrina.tuning.sqlite_storage` (an SQLite storage several worker
processes can share) and :mod:`~vitrina.tuning.reporting` (best parameters as YAML,
figures).
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
