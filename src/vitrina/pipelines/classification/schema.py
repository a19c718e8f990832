"""Schemas of the ``classification`` and ``classification_inference`` parameters, checked
before the first node runs (registered in :data:`vitrina.validation.PARAMETER_SCHEMAS`).

Training settings go through :class:`vitrina.training.TrainingConfig` itself and pruning
through :func:`vitrina.models.classifiers.pruning.validate`, so each rule lives in one place.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from vitrina.models.segmentation import MASK_MODES
from vitrina.parameter_schemas import Fraction, Positive, Schema, dataclass_check


def _training(value: dict[str, Any] | None) -> dict[str, Any] | None:
    from vitrina.training import TrainingConfig

    return dataclass_check(TrainingConfig.from_params, value)


class SplitParams(Schema):
    """``classification.split``: validation and test fractions (train gets the rest)."""

    validation: Fraction = 0.15
    test: Fraction = 0.2

    @model_validator(mode="after")
    def _rest(self) -> SplitParams:
        if self.validation + self.test >= 1:
            raise ValueError(
                f"validation + test = {self.validation + self.test} leaves no train split"
            )
        return self


class ClassificationTask(Schema):
    """``classification.tasks.<name>``: kind, labels, backbone and overrides."""

    kind: Literal["multiclass", "multilabel", "metric_learning"]
    label: str | None = None
    labels: list[str] | None = None
    label_list: str | None = None
    indicator_columns: str | list[str] | None = None
    backbone: str
    checkpoint: str | None = None
    image_size: Positive | None = None
    min_class_size: Annotated[int, Field(ge=2)] | None = None
    training: dict[str, Any] | None = None
    pruning: dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    backbone_overrides: dict[str, Any] | None = None
    baseline: bool = True
    held_out_classes: dict[Literal["validation", "test"], Fraction] | None = None
    init: dict[str, Any] | None = None

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, name: str) -> str:
        from vitrina.models.classifiers.backbones import available_backbones

        if name.startswith("timm:") or name == "clip_vision" or name in available_backbones():
            return name
        raise ValueError(
            f"unknown backbone {name!r}; available: {available_backbones()} or timm:<name>"
        )

    @field_validator("training")
    @classmethod
    def _training(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _training(value)

    @field_validator("pruning")
    @classmethod
    def _pruning(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        from vitrina.models.classifiers import pruning

        return value if value is None else dataclass_check(pruning.validate, value)

    @model_validator(mode="after")
    def _labels(self) -> ClassificationTask:
        given = [
            k for k in ("label", "labels", "label_list", "indicator_columns") if getattr(self, k)
        ]
        want = (
            ["labels", "label_list", "indicator_columns"]
            if self.kind == "multilabel"
            else ["label"]
        )
        if len(given) != 1 or given[0] not in want:
            raise ValueError(
                f"a {self.kind} task takes exactly one of {want}; got {given or 'none'}"
            )
        return self


class ReviewParams(Schema):
    """``classification.review`` / ``classification_inference.review``: approved images
    only and masks (:func:`vitrina.pipelines.classification.review.apply_review`)."""

    catalogue: str | None = None
    approved_only: bool = False
    mask: Literal[MASK_MODES] | None = None
    segmenter: str | None = None
    masked_dir: str | None = None

    @model_validator(mode="after")
    def _where(self) -> ReviewParams:
        if (self.approved_only or self.mask) and not self.catalogue:
            raise ValueError("review needs `catalogue` (the review database's catalogue name)")
        if self.mask and not self.masked_dir:
            raise ValueError("review.mask needs `masked_dir`, where the masked images go")
        return self


class ExportParams(Schema):
    """``classification.export``: formats, int8 tolerance, checks and the Triton
    repository (:func:`vitrina.export.export_settings` holds the rules and defaults)."""

    enabled: bool = True
    output_dir: str | None = None
    formats: list[Literal["onnx", "pt2", "torchscript", "int8"]] | None = None
    int8_tolerance: Annotated[float, Field(ge=0)] = 1.0
    int8_activations: Literal["auto", "int8", "uint8"] = "auto"
    export_batch_size: Annotated[int, Field(ge=2)] = 2
    check_batch_sizes: list[Positive] = [1, 3]
    atol: Annotated[float, Field(gt=0)] = 1e-4
    calibration_images: Annotated[int, Field(ge=8)] = 64
    num_threads: Positive = 1
    triton: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _rules(self) -> ExportParams:
        from vitrina.export import export_settings

        if self.enabled and not self.output_dir:
            raise ValueError("export.output_dir is needed when export.enabled is true")
        dataclass_check(export_settings, self.model_dump(exclude={"enabled", "output_dir"}))
        return self


class ClassificationParams(Schema):
    """``classification``: shared settings and the tasks."""

    output_dir: str
    image_size: Positive = 224
    split: SplitParams = SplitParams()
    min_class_size: Annotated[int, Field(ge=2)] = 10
    seed: int = 42
    n_decode_workers: Positive = 2
    batches_to_plot: Positive = 1
    review: ReviewParams = ReviewParams()
    training: dict[str, Any] | None = None
    export: ExportParams = ExportParams(enabled=False)
    tasks: dict[str, ClassificationTask | None]

    @field_validator("training")
    @classmethod
    def _training(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _training(value)


class ClassificationInferenceParams(Schema):
    """``classification_inference``: the source of images and output sizes."""

    tasks: list[str] | None = None
    source: dict[Literal["paths", "group", "catalogue"], Any]
    top_k: Positive = 5
    batch_size: Positive = 64
    n_workers: Positive = 2
    review: ReviewParams = ReviewParams()
    backend: Literal["onnxruntime", "torch"] | None = None
    num_threads: Positive = 1

    @field_validator("source")
    @classmethod
    def _one_source(cls, source: dict[str, Any]) -> dict[str, Any]:
        if len(source) != 1:
            raise ValueError(f"give exactly one of paths, group, catalogue; got {sorted(source)}")
        return source
