"""Parameter validation before the first node of a run (the ``before_pipeline_run`` hook).

:data:`PARAMETER_SCHEMAS` maps a top-level parameters key to its pydantic model
(:mod:`vitrina.parameter_schemas`), as the class or as ``"module:Class"`` (imported only
when a run uses that key, so an ingestion run does not import torch). A new pipeline adds
its schema with one line::

    PARAMETER_SCHEMAS["classification"] = "vitrina.pipelines.classification.schema:ClassificationParams"

A run validates the keys its nodes read (``params:<key>...`` inputs; all keys for a node
that reads ``parameters``), with every problem in one :class:`ParameterError` that names
the key, the value and what is allowed. Keys a schema does not know are logged as
possible typos.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from typing import Any

from kedro.pipeline import Pipeline
from pydantic import BaseModel, ValidationError

logger = logging.getLogger(__name__)

_SCHEMAS = "vitrina.parameter_schemas"

#: parameters key → its schema (a pydantic model class, or ``"module:Class"``).
PARAMETER_SCHEMAS: dict[str, type[BaseModel] | str] = {
    "mlflow": f"{_SCHEMAS}:MlflowParams",
    "ingestion": f"{_SCHEMAS}:IngestionParams",
    "image_processing": f"{_SCHEMAS}:ImageProcessingParams",
    "embeddings": f"{_SCHEMAS}:EmbeddingsParams",
    "probing": f"{_SCHEMAS}:ProbingParams",
    "clip_finetune": f"{_SCHEMAS}:ClipFinetuneParams",
    "captioning": "vitrina.pipelines.captioning.schema:CaptioningParams",
    "captioning_inference": "vitrina.pipelines.captioning.schema:CaptioningInferenceParams",
    "pair_matching": f"{_SCHEMAS}:PairMatchingParams",
    "tuning": f"{_SCHEMAS}:TuningParams",
    "classification": "vitrina.pipelines.classification.schema:ClassificationParams",
    "classification_inference": "vitrina.pipelines.classification.schema:ClassificationInferenceParams",
}


class ParameterError(ValueError):
    """Parameters of the run are invalid; the message lists every problem."""


def schema_for(key: str) -> type[BaseModel] | None:
    """The model registered for ``key`` (imported on first use), or None."""
    schema = PARAMETER_SCHEMAS.get(key)
    if isinstance(schema, str):
        module, _, name = schema.partition(":")
        schema = getattr(importlib.import_module(module), name)
        PARAMETER_SCHEMAS[key] = schema
    return schema


def parameter_keys(pipeline: Pipeline, parameters: dict[str, Any]) -> list[str]:
    """Top-level parameters keys the nodes of ``pipeline`` read (``params:a.b`` → ``a``;
    a ``parameters`` input reads them all)."""
    keys: dict[str, None] = {}
    for name in sorted(pipeline.inputs() | {i for n in pipeline.nodes for i in n.inputs}):
        if name == "parameters":
            keys.update(dict.fromkeys(parameters))
        elif name.startswith("params:"):
            keys[name.removeprefix("params:").split(".", 1)[0]] = None
    return list(keys)


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _problems(key: str, error: ValidationError) -> list[str]:
    out = []
    for item in error.errors():
        loc = ".".join(str(p) for p in (key, *item["loc"]))
        msg = item["msg"].removeprefix("Value error, ")
        out.append(f"{loc} = {_show(item.get('input'))}: {msg}")
    return out


def _unknown_keys(model: BaseModel, prefix: str) -> list[str]:
    """Dotted names of the keys no field of ``model`` (or of its sub-models) declares;
    a model with ``open_keys = True`` (keys passed on as they are) reports none."""
    unknown = (
        []
        if getattr(model, "open_keys", False)
        else [f"{prefix}.{k}" for k in (model.model_extra or {})]
    )
    for name in type(model).model_fields:
        value = getattr(model, name, None)
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for key, sub in items:
            if isinstance(sub, BaseModel):
                where = f"{prefix}.{name}" + (f".{key}" if key is not None else "")
                unknown += _unknown_keys(sub, where)
    return unknown


def validate_parameters(
    parameters: dict[str, Any], keys: Iterable[str], context: dict[str, Any] | None = None
) -> dict[str, BaseModel]:
    """Validate ``parameters[key]`` against its schema for every key that has one.

    Args:
        parameters: all parameters of the run (merged, runtime overrides applied).
        keys: the top-level keys to check (:func:`parameter_keys`).
        context: passed to the models' validators; ``parameters`` is added.

    Returns:
        ``{key: validated model}``.

    Raises:
        ParameterError: one line per problem: ``key.path = value: what is allowed``.
    """
    context = {**(context or {}), "parameters": parameters}
    problems, models = [], {}
    for key in keys:
        schema = schema_for(key)
        if schema is None:
            continue
        value = parameters.get(key)
        if value is None:
            problems.append(f"{key} is missing: conf/base/parameters_{key}.yml defines it")
            continue
        try:
            models[key] = schema.model_validate(value, context=context)
        except ValidationError as exc:
            problems += _problems(key, exc)
            continue
        unknown = _unknown_keys(models[key], key)
        if unknown:
            logger.warning(
                "Parameters %s are not known to %s (a typo?)", ", ".join(unknown), schema.__name__
            )
    if problems:
        raise ParameterError(
            f"Invalid parameters ({len(problems)} problem(s)); nothing has run:\n  - "
            + "\n  - ".join(problems)
            + "\nFix them in conf/<env>/parameters_*.yml or with --params=key=value."
        )
    return models


def validate_run_parameters(pipeline: Pipeline, catalog: Any) -> dict[str, BaseModel]:
    """:func:`validate_parameters` for the keys ``pipeline`` reads, with the run's
    ``parameters`` and catalogue (context ``catalog``) from ``catalog``."""
    try:
        parameters = catalog.load("parameters")
    except Exception:  # a catalogue without parameters (a bare test run): nothing to check
        return {}
    keys = parameter_keys(pipeline, parameters or {})
    return validate_parameters(parameters or {}, keys, {"catalog": catalog})
