"""Project pipelines."""

from __future__ import annotations

import importlib
import importlib.resources
from collections.abc import Iterable

from kedro.pipeline import Pipeline

#: The order in which ``kedro run`` (the ``__default__`` pipeline) chains the pipelines.
MAIN_JOB = ("ingestion", "image_processing", "clip_finetune", "embeddings", "probing")

#: Pipelines that include the nodes of others: ``embeddings`` embeds the fine-tuned model
#: too, so it includes the ``clip_finetune`` nodes that write it.
INCLUDES: dict[str, tuple[str, ...]] = {"embeddings": ("clip_finetune",)}


class UnknownPipelineError(ValueError):
    """``kedro run --pipelines=X`` names a pipeline the project does not have."""


def pipeline_names() -> list[str]:
    """The project's pipelines: the packages under ``vitrina/pipelines`` (sorted), found
    without importing them."""
    root = importlib.resources.files("vitrina.pipelines")
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith((".", "_")) and p.joinpath("__init__.py").is_file()
    )


def _requested() -> list[str] | None:
    """The pipelines this run asked for (``kedro run --pipelines``/``KedroSession.run``),
    or None for all. Kedro 1.7 keeps them on its ``pipelines`` registry; where a Kedro
    version does not, every pipeline is built (correct, only slower)."""
    from kedro.framework.project import pipelines

    requested = getattr(pipelines, "_requested_pipelines", None)
    return None if requested is None or "__default__" in requested else list(requested)


def build_pipelines(names: Iterable[str] | None = None) -> dict[str, Pipeline]:
    """Build ``names`` (None: all) and every pipeline they include (:data:`INCLUDES`).

    Each pipeline package's ``create_pipeline()`` is called directly, so the result does
    not depend on Kedro's selective loading: ``kedro run --pipelines=embeddings`` builds
    ``clip_finetune`` too, which ``find_pipelines`` (loading only the requested names)
    would not.

    Returns:
        ``{name: Pipeline}`` with the included pipelines' nodes added; ``__default__``
        (:data:`MAIN_JOB`) when every pipeline is built or it was asked for.

    Raises:
        UnknownPipelineError: a name that is not a pipeline of the project (the message
            lists them).
    """
    available = pipeline_names()
    wanted = list(available if names is None else dict.fromkeys(names))
    default = names is None or "__default__" in wanted
    wanted = [n for n in wanted if n != "__default__"]
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise UnknownPipelineError(
            f"No pipeline named {', '.join(map(repr, unknown))} in this project. The pipelines "
            f"are: {', '.join(available)} (and __default__, the main job {' → '.join(MAIN_JOB)}). "
            "Run one with `kedro run --pipelines=NAME`, several as `--pipelines=A,B`."
        )
    needed = set(wanted) | (set(MAIN_JOB) & set(available) if default else set())
    for name in list(needed):
        needed |= set(INCLUDES.get(name, ()))
    built = {
        name: importlib.import_module(f"vitrina.pipelines.{name}").create_pipeline()
        for name in available
        if name in needed
    }
    pipelines = {
        name: sum((built[i] for i in INCLUDES.get(name, ()) if i in built), Pipeline([])) + pipe
        for name, pipe in built.items()
    }
    if default:
        pipelines["__default__"] = sum(
            (built[name] for name in MAIN_JOB if name in built), Pipeline([])
        )
    return pipelines


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Every folder under ``vitrina/pipelines`` is a pipeline; the default pipeline is the
    main job, ingestion → image_processing → clip_finetune → embeddings (base and
    fine-tuned models among the others) → probing. ``embeddings`` includes the
    ``clip_finetune`` nodes that write the fine-tuned model, so ``kedro run
    --pipelines=embeddings`` stays self-contained (a finished fine-tuning run is picked
    up from its checkpoint, not trained again). Only the pipelines a run asks for are
    built (imports of torch and transformers take seconds).

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.

    Raises:
        UnknownPipelineError: the run asks for a pipeline the project does not have; the
            message lists the pipelines.
    """
    return build_pipelines(_requested())
