"""Configuration read outside a Kedro session: the model list the pipelines are built from.

Kedro builds pipelines before a session loads parameters, so the per-model namespaced
pipelines (embeddings, probing) read ``embeddings.models`` here, from ``conf/base`` merged
with the environment in ``KEDRO_ENV`` (default ``local``). An environment may change a model's spec; to add or remove model
*names* in an environment, also set ``KEDRO_ENV=<env>`` so the pipelines see them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def project_root() -> Path:
    """The Kedro project directory: the working directory when it holds ``conf/base``
    (``kedro run`` runs there), else the checkout this package was installed from."""
    if (Path.cwd() / "conf" / "base").is_dir():
        return Path.cwd()
    for parent in Path(__file__).resolve().parents:
        if (parent / "conf" / "base").is_dir() and (parent / "pyproject.toml").is_file():
            return parent
    return Path.cwd()


def _parameters(conf_source: str, env: str) -> dict[str, Any]:
    """Parameters of ``base`` then ``env``, merged recursively (the project's ``soft``
    merge strategy, see ``settings.py``). Plain YAML, interpolations unresolved:
    creating a second ``OmegaConfigLoader`` in the process would re-register OmegaConf's
    global ``globals``/``runtime_params`` resolvers and break the running session's."""
    merged: dict[str, Any] = {}
    for folder in dict.fromkeys(["base", env]):
        for path in sorted(Path(conf_source, folder).glob("**/parameters*.yml")):
            _soft_merge(merged, yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return merged


def _soft_merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _soft_merge(into[key], value)
        else:
            into[key] = value


def model_specs(
    conf_source: str | Path | None = None, env: str | None = None
) -> dict[str, dict[str, Any]]:
    """``embeddings.models`` as ``{name: spec}``, in the configured order.

    Raises:
        ValueError: no model is configured, or a name is not a valid namespace
            (letters, digits, ``_``).
    """
    conf_source = str(conf_source or project_root() / "conf")
    env = env or os.environ.get("KEDRO_ENV") or "local"
    if not Path(conf_source, env).is_dir():
        env = "base"
    models = (_parameters(conf_source, env).get("embeddings") or {}).get("models") or {}
    if not models:
        raise ValueError(
            f"No model in embeddings.models ({conf_source}, env {env!r}): configure at least one"
        )
    for name in models:
        if not str(name).replace("_", "").isalnum():
            raise ValueError(
                f"Model name {name!r} must use letters, digits and '_' only (it becomes a Kedro namespace)"
            )
    return {str(k): dict(v) for k, v in models.items()}


#: Embedder types that are CLIP models and can be fine-tuned contrastively.
FINETUNABLE_TYPES = ("ruclip", "hf_clip")


def finetune_spec(
    conf_source: str | Path | None = None, env: str | None = None
) -> dict[str, Any] | None:
    """What the ``clip_finetune`` pipeline is built from: its base and output model names.

    Returns:
        ``{"base_model": name, "output_model": name, "base_spec": embeddings.models[name]}``,
        or ``None`` when the parameters have no ``clip_finetune`` block.

    Raises:
        ValueError: ``base_model`` is not in ``embeddings.models`` or is not a CLIP model
            (``ruclip``/``hf_clip``), or ``output_model`` is missing or equals the base.
    """
    conf_source = str(conf_source or project_root() / "conf")
    env = env or os.environ.get("KEDRO_ENV") or "local"
    if not Path(conf_source, env).is_dir():
        env = "base"
    params = _parameters(conf_source, env).get("clip_finetune")
    if not params:
        return None
    models = model_specs(conf_source, env)
    base, output = params.get("base_model"), params.get("output_model")
    if base not in models:
        raise ValueError(
            f"clip_finetune.base_model {base!r} is not in embeddings.models {sorted(models)}"
        )
    if models[base].get("type") not in FINETUNABLE_TYPES:
        raise ValueError(
            f"clip_finetune.base_model {base!r} has type {models[base].get('type')!r}; only "
            f"CLIP models ({', '.join(FINETUNABLE_TYPES)}) can be fine-tuned"
        )
    if not output or output == base or not str(output).replace("_", "").isalnum():
        raise ValueError(
            f"clip_finetune.output_model must be a new model name of letters, digits and '_', "
            f"different from the base {base!r}; got {output!r}"
        )
    return {"base_model": str(base), "output_model": str(output), "base_spec": models[base]}
