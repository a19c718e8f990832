"""Schemas of the pipelines' parameters (pydantic), checked before the first node runs.

One model per top-level parameters key (``conf/base/parameters_<name>.yml``); they are
registered in :data:`vitrina.validation.PARAMETER_SCHEMAS`. Each model states types,
ranges and choices; where a step already has a config dataclass that validates its block
(``clip_finetune.train``: :class:`~vitrina.models.clip.config.ClipFinetuneConfig`, the
captioner's :class:`~vitrina.models.captioner.CaptionerConfig` and
its :func:`~vitrina.models.captioner.training_settings`, the pair features'
:class:`~vitrina.models.pair_matching.FeatureConfig` and MLP blocks, the tuning plan), the model calls
it, so a rule lives in one place. Keys a model does not name are allowed (pipelines being
written add keys) and reported as possible typos. Cross-checks that need the run's other
parameters or its catalogue read them from the validation context
(``info.context["parameters"]``, ``["catalog"]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

Fraction = Annotated[float, Field(gt=0, lt=1)]
Positive = Annotated[int, Field(ge=1)]
Device = Annotated[str, Field(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")]
Threads = int | Literal["auto"] | None


class Schema(BaseModel):
    """Base of the parameter models: keys a model does not name are allowed (and reported
    as possible typos by :func:`vitrina.validation.validate_parameters`)."""

    model_config = ConfigDict(extra="allow")


def run_context(info: ValidationInfo, key: str) -> Any:
    """The validation context's ``key`` (``"parameters"``: the run's whole parameters,
    ``"catalog"``: its catalogue), or None when validating without a run."""
    return (info.context or {}).get(key)


def dataclass_check(build: Any, value: Any) -> Any:
    """Run an existing config dataclass's own validation on ``value``; its ValueError or
    TypeError becomes this field's validation error.

    Args:
        build: a callable that validates ``value`` (e.g. ``TrainConfig.from_dict``).
        value: the parameters block.

    Returns:
        ``value`` unchanged.

    Raises:
        ValueError: ``build``'s own, or its TypeError / KeyError with the same message.
    """
    try:
        build(value)
    except (TypeError, KeyError) as exc:
        raise ValueError(str(exc).strip("'\"")) from exc
    return value


# ---------------------------------------------------------------------- project-wide
class MlflowParams(Schema):
    """``mlflow`` (conf/base/parameters.yml): model registration."""

    register_models: bool = False
    model_name_prefix: str = "vitrina"


# ---------------------------------------------------------------------- ingestion
class DerivationRule(Schema):
    """One rule of ``ingestion.derived_labels.<label>.rules``: exactly one test."""

    column: str
    value: Any
    equals: Any = None
    in_: list[Any] | None = Field(None, alias="in")
    matches: str | None = None

    @model_validator(mode="after")
    def _one_test(self) -> DerivationRule:
        if sum(x is not None for x in (self.equals, self.in_, self.matches)) != 1:
            raise ValueError("a rule needs exactly one of 'equals', 'in', 'matches'")
        return self


class DerivedLabel(Schema):
    """``ingestion.derived_labels.<label>``: ordered rules, else ``default``."""

    default: Any = None
    rules: list[DerivationRule] = []


CANONICAL_COLUMNS = ("product_id", "title", "description", "image", "group_id")


class IngestionParams(Schema):
    """``ingestion``: the source-to-canonical column mapping and row filters."""

    image_root: str
    image_path_template: str = "{value}"
    columns: dict[str, str | None]  # group_id: null → every product is its own group
    labels: dict[str, str | None] = {}
    passthrough: list[str] = []  # source columns copied unchanged (names or patterns)
    derived_labels: dict[str, DerivedLabel] = {}
    required: list[str] = list(CANONICAL_COLUMNS[:4])  # canonical or label columns
    max_products: Positive | None = None
    stratify_by: str | None = None
    seed: int = 42

    @field_validator("columns")
    @classmethod
    def _core_columns(cls, columns: dict[str, str | None]) -> dict[str, str | None]:
        missing = [c for c in CANONICAL_COLUMNS[:4] if not columns.get(c)]
        if missing:
            raise ValueError(f"must map {missing} to source columns (canonical: source)")
        return columns

    @field_validator("image_path_template")
    @classmethod
    def _template(cls, template: str) -> str:
        if "{value" not in template:
            raise ValueError("must contain '{value}' (the source image value)")
        return template


# ---------------------------------------------------------------------- image processing
class ImageProcessingParams(Schema):
    """``image_processing``: output square side (px), mode, background (RGB 0-255), file format."""

    size: Annotated[int, Field(ge=1, le=8192)]
    mode: Literal["pad", "crop"] = "pad"
    background: Annotated[
        list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)
    ]
    output_dir: str
    format: Literal["JPEG", "PNG", "WEBP", "jpeg", "png", "webp"] = "JPEG"
    quality: Annotated[int, Field(ge=1, le=100)] = 95
    n_workers: Positive = 2
    shard_size: Positive = 50_000

    @field_validator("output_dir")
    @classmethod
    def _inside_dataset(cls, output_dir: str, info: ValidationInfo) -> str:
        """The images must land inside the ``processed_images`` dataset's folder (its
        ``save`` refuses any other), which is known before any image is written."""
        catalog = run_context(info, "catalog")
        dataset = catalog.get("processed_images") if catalog is not None else None
        folder = getattr(dataset, "_path", None)
        if folder is not None and not Path(output_dir).resolve().is_relative_to(
            Path(folder).resolve()
        ):
            raise ValueError(
                f"must lie inside the processed_images dataset's folder '{folder}' "
                "(conf/*/catalog.yml), where the pipeline reads the images back"
            )
        return output_dir


# ---------------------------------------------------------------------- embeddings
class ModelSpec(Schema):
    """One model of ``embeddings.models``; type-specific keys pass to its embedder."""

    open_keys: ClassVar[bool] = True  # type-specific keys go to the embedder as they are

    type: str
    source: Literal["catalogue"] | None = None
    checkpoint: str | None = None
    init: Literal["tiny"] | None = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, kind: str) -> str:
        from vitrina.models.embedders import EMBEDDER_TYPES

        if kind not in EMBEDDER_TYPES:
            raise ValueError(f"must be one of {sorted(EMBEDDER_TYPES)}")
        return kind


class RayParams(Schema):
    """``embeddings.ray``: cluster (``address``; null starts a local one), actor pool."""

    address: str | None = None
    num_cpus: Positive | None = None
    num_actors: Positive = 2
    num_cpus_per_actor: Annotated[float, Field(gt=0)] = 1
    num_gpus_per_actor: Annotated[float, Field(ge=0)] = 0
    block_rows: Positive = 1024
    batch_size: Positive = 256
    runtime_env: dict[str, Any] | None = None


class EmbeddingsParams(Schema):
    """``embeddings``: text field, batching, device, precision (autocast, int8, auto),
    shards, backend, models."""

    text_field: str = "title"
    batch_size: Positive = 64
    device: Device = "auto"
    precision: Literal["fp32", "bf16", "fp16", "int8", "auto"] = "fp32"
    num_workers: Annotated[int, Field(ge=0)] = 2
    shard_size: Positive = 50_000
    backend: Literal["local", "ray"] = "local"
    export_npz: bool = True
    ray: RayParams | None = None
    models: Annotated[dict[Annotated[str, Field(pattern=r"^\w+$")], ModelSpec], Field(min_length=1)]


# ---------------------------------------------------------------------- probing
class ProbingTask(Schema):
    """``probing.tasks.<name>``: a label column and the classes kept."""

    label: str
    type: Literal["binary", "multiclass"]
    classes: list[Any] | None = None

    @model_validator(mode="after")
    def _binary_classes(self) -> ProbingTask:
        if self.type == "binary" and self.classes is not None and len(self.classes) != 2:
            raise ValueError(f"a binary task needs 2 classes, got {self.classes}")
        return self


class ProbingParams(Schema):
    """``probing``: tasks, modalities, probes and the grouped stratified split."""

    tasks: Annotated[dict[str, ProbingTask], Field(min_length=1)]
    modalities: Annotated[list[Literal["text", "image", "text+image"]], Field(min_length=1)]
    probes: Annotated[dict[str, dict[str, Any] | None], Field(min_length=1)]
    test_size: Fraction = Field(0.2, description="share of the products in the test split")
    min_class_size: Annotated[int, Field(ge=2)] = 10
    seed: int = 42
    chart_metric: str = "macro_f1"
    backend: Literal["torch", "sklearn"] = "torch"
    torch_threads: Threads = 1
    torch_workers: Threads = "auto"


# ---------------------------------------------------------------------- clip_finetune
class ClipFinetuneParams(Schema):
    """``clip_finetune``: base and output model, split, run folder, training
    (:class:`~vitrina.models.clip.config.ClipFinetuneConfig`: the engine's settings and
    the contrastive options)."""

    base_model: str
    output_model: str
    text_field: str = "title"
    val_size: Fraction = 0.2
    split_seed: int = 42
    output_dir: str | None = None
    log_model_to_mlflow: bool = True
    train: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        from vitrina.models.clip.config import RENAMED_STEP, refuse_renamed

        if isinstance(data, dict):
            refuse_renamed(data, RENAMED_STEP, "clip_finetune")
        return data

    @field_validator("train")
    @classmethod
    def _train(cls, train: dict[str, Any] | None) -> dict[str, Any] | None:
        from vitrina.models.clip.config import ClipFinetuneConfig

        return dataclass_check(ClipFinetuneConfig.from_params, train)

    @model_validator(mode="after")
    def _models(self, info: ValidationInfo) -> ClipFinetuneParams:
        models = ((run_context(info, "parameters") or {}).get("embeddings") or {}).get("models")
        if models is not None and self.base_model not in models:
            raise ValueError(
                f"base_model {self.base_model!r} is not in embeddings.models {sorted(models)}"
            )
        return self


# ---------------------------------------------------------------------- pair matching
class PairCandidates(Schema):
    """``pair_matching.candidates``: FAISS candidate search and scoring."""

    k: Positive = 10
    modality: Literal["text", "image", "text+image"] = "text"
    match_threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    batch_size: Positive = 50_000
    index: dict[str, Any] = {}

    @model_validator(mode="after")
    def _index(self) -> PairCandidates:
        """``index``: the FAISS index settings (:class:`vitrina.models.pair_matching.IndexConfig`)."""
        from vitrina.models.pair_matching import IndexConfig

        dataclass_check(
            lambda c: IndexConfig(**{k: v for k, v in c.items() if v is not None}), self.index
        )
        return self


class PairMatchingParams(Schema):
    """``pair_matching``: source layout, splits, feature variants, classifiers."""

    source: Literal["catalogue", "pairs", "competition", "er_magellan"] = "catalogue"
    test_size: Fraction = 0.2
    val_size: Fraction = 0.1
    seed: int = 42
    threads: Positive | None = None
    features: dict[str, Any] = {}
    catalogue: dict[str, Any] = {}  # the layouts' own settings
    pairs: dict[str, Any] = {}
    competition: dict[str, Any] = {}
    lsa: dict[str, Any] = {}
    variants: Annotated[dict[str, dict[str, Any] | None], Field(min_length=1)]
    primary_variant: str | None = None
    classifiers: Annotated[dict[str, dict[str, Any] | None], Field(min_length=1)]
    select: str = "best"
    candidates: PairCandidates = PairCandidates()

    @model_validator(mode="after")
    def _names(self) -> PairMatchingParams:
        from vitrina.models.pair_matching import FeatureConfig, MLPPairEstimator

        for name, spec in self.variants.items():
            features = {**self.features, **(spec or {})}
            if features.get("string_fields") == "auto":
                features["string_fields"] = []  # resolved from the items by the pipeline
            try:
                dataclass_check(lambda f: FeatureConfig(**f), features)
            except ValueError as exc:
                raise ValueError(f"variants.{name}: {exc}") from exc
        for name, spec in self.classifiers.items():
            if spec and spec.get("type", name) == "mlp":
                try:
                    MLPPairEstimator.from_blocks(spec.get("model"), spec.get("train"))
                except ValueError as exc:
                    raise ValueError(f"classifiers.{name}: {exc}") from exc
        if self.primary_variant is not None and self.primary_variant not in self.variants:
            raise ValueError(
                f"primary_variant {self.primary_variant!r} is not in variants {sorted(self.variants)}"
            )
        if self.select != "best" and self.select not in self.classifiers:
            raise ValueError(
                f"select {self.select!r} must be 'best' or one of classifiers {sorted(self.classifiers)}"
            )
        return self


# ---------------------------------------------------------------------- tuning
class TuningHeartbeat(Schema):
    """``tuning.heartbeat``: Optuna's heartbeat on RDB storages (dead workers' trials retried)."""

    interval: Positive | None = 60
    grace_period: Positive | None = None
    max_retry: Annotated[int, Field(ge=0)] | None = 2


class TuningParams(Schema):
    """``tuning``: the target and study settings (checked by the tuning plan)."""

    target: str
    n_trials: Positive = 20
    timeout: Annotated[float, Field(gt=0)] | None = None
    catalogue: str = "vitrina"
    study_name: str | None = None
    storage: str | None = None
    heartbeat: TuningHeartbeat = TuningHeartbeat()
    sampler: dict[str, Any] = {}
    pruner: dict[str, Any] = {}
    targets: dict[str, dict[str, Any] | None]

    @model_validator(mode="after")
    def _plan(self) -> TuningParams:
        """The tuning pipeline's own first check (target, search space), run earlier."""
        from vitrina.pipelines.tuning.nodes import plan_tuning

        dataclass_check(plan_tuning, self.model_dump(by_alias=True))
        return self
