"""Configuration read outside a Kedro session: the model list the pipelines are built from.

Kedro builds pipelines before a session loads parameters, so the per-model namespaced
pipelines (embeddings, probing, clip_finetune, captioning, pair_matching) read what they
are built from here (:func:`project_parameters`), from ``conf/base`` merged with the run's
environment: ``KEDRO_ENV``, else the ``--env`` of the ``kedro run`` command line, else
``local``.
"""

from __future__ import annotations

import os
import sys
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


def cli_env(argv: list[str] | None = None) -> str | None:
    """The ``--env``/``-e`` value of a ``kedro run`` command line, else None.

    Kedro builds pipelines without telling them the environment; ``kedro run --env=X``
    does not set ``KEDRO_ENV`` either, so the command line is the only place to learn it.
    """
    argv = sys.argv if argv is None else argv
    program = Path(argv[0]) if argv else Path()
    if "kedro" not in (program.name, program.parent.name) or "run" not in argv:
        return None
    for i, arg in enumerate(argv):
        if arg.startswith("--env="):
            return arg.split("=", 1)[1]
        if arg in ("--env", "-e") and i + 1 < len(argv):
            return argv[i + 1]
    return None


#: Kedro's default run environment: optional (a fresh clone may lack ``conf/local``).
DEFAULT_ENV = "local"


class UnknownEnvironmentError(ValueError):
    """``--env``/``KEDRO_ENV`` names a folder that ``conf/`` does not have."""


def check_environment(conf_source: str | Path, env: str | None) -> None:
    """Fail when ``env`` is not a folder of ``conf_source`` (``local`` may be absent).

    Raises:
        UnknownEnvironmentError: names the environment and lists the ones that exist.
    """
    if not env or env == DEFAULT_ENV or Path(conf_source, env).is_dir():
        return
    root = Path(conf_source)
    found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    found = [name for name in found if name != "base"]
    raise UnknownEnvironmentError(
        f"Environment {env!r} does not exist: there is no folder '{root / env}'. The "
        f"environments (each read on top of conf/base) are: {', '.join(found) or 'none'}; "
        "choose one with `kedro run --env=NAME`, or leave --env out for base + local."
    )


def resolve_conf(conf_source: str | Path | None = None, env: str | None = None) -> tuple[str, str]:
    """``(conf_source, env)`` of this run: ``env``, else ``KEDRO_ENV``, else ``kedro run
    --env``, else ``local``; ``base`` alone when ``local`` does not exist.

    Raises:
        UnknownEnvironmentError: another environment that does not exist (the message lists
            the ones that do).
    """
    conf_source = str(conf_source or project_root() / "conf")
    env = env or os.environ.get("KEDRO_ENV") or cli_env() or DEFAULT_ENV
    check_environment(conf_source, env)
    return conf_source, env if Path(conf_source, env).is_dir() else "base"


def project_parameters(
    conf_source: str | Path | None = None, env: str | None = None
) -> dict[str, Any]:
    """All parameters of ``conf/base`` merged with the run's environment (:func:`resolve_conf`)."""
    return _parameters(*resolve_conf(conf_source, env))


def _parameters(conf_source: str, env: str) -> dict[str, Any]:
    """Parameters of ``base`` then ``env``, merged recursively (the project's ``soft``
    merge strategy, see ``settings.py``). Plain YAML, interpolations unresolved:
    creating a second ``OmegaConfigLoader`` in the process would re-register OmegaConf's
    global ``globals``/``runtime_params`` resolvers and break the running session's."""
    from omegaconf import OmegaConf

    merged = OmegaConf.create()
    for folder in dict.fromkeys(["base", env]):
        for path in sorted(Path(conf_source, folder).glob("**/parameters*.yml")):
            part = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            merged = OmegaConf.merge(merged, part)  # OmegaConf's merge: what `soft` uses
    return OmegaConf.to_container(merged, resolve=False)


#: The parameters of the running Kedro session, recorded when its context is created
#: (:meth:`vitrina.hooks.RunChecks.after_context_created`), before Kedro builds pipelines.
_session_parameters: dict[str, Any] | None = None


def remember_run_parameters(parameters: dict[str, Any] | None) -> None:
    """Record the running session's parameters (``context.params``: conf merged with the
    run's ``--params``) for :func:`run_parameters`; ``None`` forgets them."""
    global _session_parameters
    _session_parameters = None if parameters is None else dict(parameters)


def run_parameters(conf_source: str | Path | None = None, env: str | None = None) -> dict[str, Any]:
    """The parameters of this run, runtime ``--params`` included, for building pipelines.

    Those of the running session when one has recorded them
    (:func:`remember_run_parameters`), else :func:`project_parameters` (no runtime
    parameters: e.g. kedro-viz, which builds pipelines without a session). Pipelines whose
    shape depends on a value a user passes per run (``tuning.target``) read it here.
    """
    if _session_parameters is not None and conf_source is None and env is None:
        return dict(_session_parameters)
    return project_parameters(conf_source, env)


def model_specs(
    conf_source: str | Path | None = None, env: str | None = None
) -> dict[str, dict[str, Any]]:
    """``embeddings.models`` as ``{name: spec}``, in the configured order.

    Raises:
        ValueError: no model is configured, or a name is not a valid namespace
            (letters, digits, ``_``).
    """
    conf_source, env = resolve_conf(conf_source, env)
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
    conf_source, env = resolve_conf(conf_source, env)
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


def classification_tasks(
    conf_source: str | Path | None = None, env: str | None = None
) -> dict[str, dict[str, Any]]:
    """``classification.tasks`` of the run's parameters (``{}`` when none); an environment
    removes a base task by setting it to ``null``.

    Raises:
        ValueError: a task name that is not a valid namespace.
    """
    tasks = (project_parameters(conf_source, env).get("classification") or {}).get("tasks") or {}
    for name in tasks:
        if not str(name).replace("_", "").isalnum():
            raise ValueError(f"classification task name {name!r} must use letters, digits and '_'")
    return {str(k): dict(v) for k, v in tasks.items() if v is not None}
