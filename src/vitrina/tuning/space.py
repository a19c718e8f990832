"""Search spaces of the tuning targets, as declared in parameters.

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

from dataclasses import dataclass
from typing import Any

import optuna
import yaml

SPACE_TYPES = ("float", "int", "categorical")


class SearchSpaceError(ValueError):
    """A search space that cannot be sampled; the message lists every problem."""


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
            return any(encode_choice(value) == encode_choice(c) for c in self.choices)
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
        encoded = [encode_choice(c) for c in self.choices]
        return decode_choice(trial.suggest_categorical(self.name, encoded))


def encode_choice(value: Any) -> Any:
    """A categorical choice as Optuna can store it: Optuna categoricals hold
    None/bool/int/float/str only, so a list, tuple or dict becomes its flow-style YAML
    text (``[256, 128]``); other values are returned as they are."""
    return (
        yaml.safe_dump(value, default_flow_style=True).strip()
        if isinstance(value, list | tuple | dict)
        else value
    )


def decode_choice(value: Any) -> Any:
    """The inverse of :func:`encode_choice`: YAML text of a list or dict back to it."""
    if isinstance(value, str) and value[:1] in "[{":
        return yaml.safe_load(value)
    return value


def decode_params(params: dict[str, Any]) -> dict[str, Any]:
    """Trial parameters with categorical lists decoded back from their stored text."""
    return {k: decode_choice(v) for k, v in params.items()}


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
