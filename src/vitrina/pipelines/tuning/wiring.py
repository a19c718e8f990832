"""What the tuning pipeline knows of each target (:data:`TARGETS`): how it is built, which
parameters it accepts, where they live in the step's YAML, and which catalogue datasets
it reads (:func:`target_inputs`); the path keys that no longer exist
(:data:`REMOVED_KEYS`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import TuningTarget
from .probing_target import ProbingTarget
from .targets import CaptioningTarget, ClipFinetuneTarget, PairClassifierTarget

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
