"""Schemas of the ``captioning`` and ``captioning_inference`` parameters, checked before
the first node runs (registered in :data:`vitrina.validation.PARAMETER_SCHEMAS`).

Training settings go through the captioner's own
:func:`~vitrina.models.captioner.training_settings` and the model block through
:func:`~vitrina.models.captioner.select_config`, so each rule lives in one place.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from vitrina.parameter_schemas import (
    Device,
    Positive,
    Schema,
    Threads,
    dataclass_check,
    run_context,
)


class CaptioningData(Schema):
    """``captioning.data``: train/validation/test shares (sum 1), seed, cap."""

    split: Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=3, max_length=3)]
    seed: int = 42
    max_items: Positive | None = None

    @field_validator("split")
    @classmethod
    def _sums_to_one(cls, split: list[float]) -> list[float]:
        if abs(sum(split) - 1) > 1e-6 or min(split) <= 0:
            raise ValueError("train/validation/test shares must be > 0 and sum to 1")
        return split


class CaptioningEvaluation(Schema):
    """``captioning.evaluation``: decodings and inference settings."""

    decodings: Annotated[list[Literal["greedy", "beam"]], Field(min_length=1)] = ["greedy"]
    batch_size: Positive = 32
    device: Device = "auto"
    precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"
    num_threads: Threads = None
    num_workers: Annotated[int, Field(ge=0)] = 1
    max_items: Positive | None = None


class CaptioningParams(Schema):
    """``captioning``: data, the selected model configuration, training, evaluation."""

    data: CaptioningData
    model: str
    models: dict[str, dict[str, Any] | None]
    output_dir: str
    generation: dict[str, Any] = {}
    training: dict[str, Any] = {}
    evaluation: CaptioningEvaluation = CaptioningEvaluation()
    baseline: dict[str, Any] = {}
    report: dict[str, Any] = {}

    @field_validator("training")
    @classmethod
    def _training(cls, training: dict[str, Any]) -> dict[str, Any]:
        from vitrina.models.captioner import training_settings

        return dataclass_check(training_settings, dict(training or {}))

    @model_validator(mode="after")
    def _selected_model(self, info: ValidationInfo) -> CaptioningParams:
        from vitrina.models.captioner import select_config

        dataclass_check(select_config, {"model": self.model, "models": self.models})
        baseline = (self.baseline or {}).get("embeddings")
        models = ((run_context(info, "parameters") or {}).get("embeddings") or {}).get("models")
        if baseline and models is not None and baseline not in models:
            raise ValueError(
                f"baseline.embeddings {baseline!r} is not in embeddings.models {sorted(models)}"
            )
        return self


class CaptioningInferenceParams(Schema):
    """``captioning_inference``: inputs, decoding and inference settings."""

    inputs: str | list[str] | None = None
    recursive: bool = False
    extensions: list[str] = []
    decoding: Literal["greedy", "beam"] = "greedy"
    batch_size: Positive = 16
    device: Device = "auto"
    precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"
    num_threads: Threads = None
    pad_to_square: bool = True
    num_workers: Annotated[int, Field(ge=0)] = 1
    generation: dict[str, Any] = {}
