"""Checks made before a ``kedro run`` starts its first node: environment and missing inputs.

Each check answers a wrong command with the fix: an unknown ``--env`` lists the
environments there are; a pipeline whose inputs were never written names each missing
dataset, its file, the pipeline that writes it, and one ``kedro run`` command that makes
all of them from what exists (upstream pipelines included, so it works on a fresh clone).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from kedro.io import DatasetError
from kedro.pipeline import Pipeline

from vitrina.config import check_environment
from vitrina.pipeline_registry import MAIN_JOB, build_pipelines

__all__ = ["MissingInputsError", "check_environment", "check_inputs_exist", "run_command"]


class MissingInputsError(DatasetError):
    """Inputs of the pipeline to run do not exist yet; the message says what makes them."""


def _is_data(name: str) -> bool:
    return not (name == "parameters" or name.startswith("params:"))


def _location(catalog: Any, name: str) -> str:
    """The file or folder a dataset reads, as the catalogue describes it ('' if none)."""
    dataset = catalog.get(name)
    try:
        described = dataset._describe() if dataset is not None else {}
    except Exception:  # a dataset's description is best effort
        described = {}
    inner = described.get("dataset") if isinstance(described.get("dataset"), dict) else {}
    for source in (described, inner):
        for key in ("filepath", "path"):
            if source.get(key):
                return str(source[key])
    return ""


def run_command(pipelines: list[str], run_params: dict[str, Any]) -> str:
    """``kedro run --pipelines=a,b`` with this run's ``--env`` and ``--params``.

    Pipelines are ordered as the main job (:data:`MAIN_JOB`) chains them, others after.
    ``--env`` is given unless it is Kedro's default (``local``); ``--params`` repeats the
    run's runtime parameters (nested keys dotted), shell-quoted.
    """
    order = {name: i for i, name in enumerate(MAIN_JOB)}
    names = sorted(dict.fromkeys(pipelines), key=lambda n: (order.get(n, len(order)), n))
    parts = ["kedro", "run", f"--pipelines={','.join(names)}"]
    env = run_params.get("env")
    if env and env != "local":
        parts.append(f"--env={env}")
    flat: dict[str, Any] = {}

    def flatten(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                flatten(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    flatten("", run_params.get("runtime_params") or {})
    if flat:
        parts.append(shlex.quote("--params=" + ",".join(f"{k}={v}" for k, v in flat.items())))
    return " ".join(parts)


def _producers(all_pipelines: dict[str, Pipeline]) -> dict[str, str]:
    """``{dataset: pipeline}``: for each dataset, the smallest pipeline that writes it."""
    producers: dict[str, str] = {}
    ranked = sorted(
        ((name, p) for name, p in all_pipelines.items() if name != "__default__"),
        key=lambda item: (len(item[1].nodes), item[0]),
    )
    for name, pipe in ranked:
        for output in pipe.all_outputs():
            producers.setdefault(output, name)
    return producers


def _missing(pipeline: Pipeline, catalog: Any) -> list[str]:
    """Free inputs of ``pipeline`` (parameters excluded) that the catalogue says do not exist."""
    missing = []
    for name in sorted(filter(_is_data, pipeline.inputs())):
        try:
            exists = catalog.exists(name)
        except Exception:  # a dataset that cannot tell is left to fail in its own loader
            exists = True
        if not exists:
            missing.append(name)
    return missing


def check_inputs_exist(pipeline: Pipeline, catalog: Any, run_params: dict[str, Any]) -> None:
    """Fail before the first node when inputs of ``pipeline`` that another pipeline writes
    do not exist.

    Inputs no pipeline writes (raw sources, generated demo data) are left to their own
    loaders, whose errors name the source.

    Raises:
        MissingInputsError: names each missing dataset, its file and the pipeline that
            writes it, and one ``kedro run`` command (:func:`run_command`) that writes them
            all, the pipelines they need in turn included.
    """
    missing = _missing(pipeline, catalog)
    if not missing:
        return
    all_pipelines = build_pipelines(None)  # only on this error path: imports take seconds
    producers = _producers(all_pipelines)
    missing = [name for name in missing if name in producers]
    if not missing:
        return
    chosen: set[str] = set()
    todo = list(missing)
    while todo:  # the producers of what the chosen pipelines need in turn
        name = todo.pop()
        producer = producers.get(name)
        if producer is None or producer in chosen:
            continue
        chosen.add(producer)
        todo += [m for m in _missing(all_pipelines[producer], catalog) if m in producers]
    # a pipeline whose nodes another chosen one includes adds nothing (clip_finetune ⊂ embeddings)
    chosen = {
        name
        for name in chosen
        if not any(
            other != name and set(all_pipelines[name].nodes) <= set(all_pipelines[other].nodes)
            for other in chosen
        )
    }
    names = run_params.get("pipeline_names") or ["__default__"]
    lines = [
        f"  - {name}"
        + (f" ({where})" if (where := _location(catalog, name)) else "")
        + f", written by the '{producers[name]}' pipeline"
        for name in missing
    ]
    raise MissingInputsError(
        f"Cannot run {', '.join(names)}: {len(missing)} input(s) do not exist yet:\n"
        + "\n".join(lines)
        + f"\nRun `{run_command(sorted(chosen), run_params)}` first (it writes them and what "
        "they need), then this command again."
    )


def project_data_dir(run_params: dict[str, Any]) -> Path:
    """``<project>/data``, where every output of the catalogue lives."""
    return Path(run_params.get("project_path") or ".") / "data"
