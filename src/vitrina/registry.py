"""MLflow model registry: the fine-tuned CLIP and the pair classifier as MLflow models.

With the parameter ``mlflow.register_models: true`` (``conf/base/parameters.yml``, default
false) the ``clip_finetune`` and ``pair_matching`` pipelines log their model as an MLflow
``pyfunc`` model in the run kedro-mlflow opened and register it in the model registry:

* ``<prefix>-clip`` (kind ``clip``, see :func:`python_model_class`): the fine-tuned checkpoint
  (ruCLIP layout or ``save_pretrained``). ``predict`` takes a DataFrame with a ``text``
  and/or an ``image_path`` column and returns ``text_embedding`` / ``image_embedding``
  (L2-normalised float lists), the embeddings pipeline's vectors.
* ``<prefix>-pair-classifier`` (kind ``pair_matcher``): the kept
  :class:`~vitrina.models.pair_matching.PairMatcher` (feature builder, classifier,
  threshold) with the items and embeddings it was trained on. ``predict`` takes
  ``left_id, right_id`` of catalogue items and returns ``score`` (match probability)
  and ``match`` (``score >= threshold``).

``<prefix>`` is ``mlflow.model_name_prefix`` (``vitrina-<catalogue>``). Every run adds a
version. The tracking store is the SQLite database ``mlflow.db`` (``conf/base/mlflow.yml``),
and the registry lives in it too, so registering needs no server. The model is logged
from code (:mod:`vitrina.mlflow_model`, no pickled Python object) with the ``vitrina``
package copied next to it (``code_paths``), so ``mlflow.pyfunc.load_model("models:/<name>/<version>")``
works wherever the listed requirements are installed.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: Distributions a registered model needs at load time (pinned to the installed versions).
REQUIREMENTS = (
    "mlflow",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "pandas",
    "pyarrow",
    "pillow",
    "scikit-learn",
    "scipy",
    "skops",
    "rapidfuzz",
    "kedro",
    "kedro-datasets",
    "pyyaml",
    "tqdm",
)
KINDS = {"clip": "clip", "pair_matcher": "pair-classifier", "classifier": "classifier"}


def registered_model_name(
    settings: dict[str, Any] | None, kind: str, task: str | None = None
) -> str:
    """``<mlflow.model_name_prefix>-clip``, ``<prefix>-pair-classifier`` or, for an image
    classifier, ``<prefix>-<task>-classifier``.

    Raises:
        ValueError: an unknown ``kind`` (``clip`` | ``pair_matcher`` | ``classifier``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    prefix = str((settings or {}).get("model_name_prefix") or "vitrina")
    middle = f"-{task}" if task else ""
    return f"{prefix}{middle}-{KINDS[kind]}"


def pip_requirements() -> list[str]:
    """``name==version`` of every :data:`REQUIREMENTS` entry installed here (local
    version labels such as ``+cpu`` dropped)."""
    out = []
    for name in REQUIREMENTS:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        out.append(f"{name}=={version.split('+')[0]}")
    return out


def python_model_class() -> type:
    """The :class:`mlflow.pyfunc.PythonModel` subclass behind every registered model.

    One class for both kinds: ``model_config["kind"]`` (``clip`` | ``pair_matcher``) says
    what ``load_context`` loads and what ``predict`` returns. Built on first use so that
    importing this module does not import MLflow.
    """
    global _PYFUNC_CLASS
    if _PYFUNC_CLASS is not None:
        return _PYFUNC_CLASS
    import mlflow.pyfunc

    class VitrinaModel(mlflow.pyfunc.PythonModel):
        """Kind ``clip``: text / image embeddings; kind ``pair_matcher``: pair scores."""

        def load_context(self, context: Any) -> None:
            config = dict(context.model_config or {})
            self.kind = config.get("kind")
            if self.kind == "clip":
                self.embedder = _clip_embedder(context.artifacts["checkpoint"], config)
            elif self.kind == "classifier":
                from vitrina.models.classifiers.artefact import ImageClassifier

                self.classifier = ImageClassifier.load(context.artifacts["model"])
            elif self.kind == "pair_matcher":
                from vitrina.datasets.embeddings import EmbeddingsDataset
                from vitrina.models.pair_matching import PairMatcher

                self.matcher = PairMatcher.load(context.artifacts["matcher"])
                items = pd.read_parquet(context.artifacts["items"])
                self.items = items.assign(item_id=items["item_id"].astype(str)).set_index("item_id")
                self.embeddings = EmbeddingsDataset(context.artifacts["embeddings"]).load()
            else:
                raise ValueError(f"unknown Vitrina model kind {self.kind!r}")

        def predict(
            self,
            context: Any,
            model_input: pd.DataFrame,
            params: dict[str, Any] | None = None,
        ) -> pd.DataFrame:
            frame = pd.DataFrame(model_input)
            if self.kind == "clip":
                return _embed_frame(self.embedder, frame)
            if self.kind == "classifier":
                from vitrina.models.classifiers.inference import predict_paths

                if "image_path" not in frame.columns:
                    raise ValueError(
                        f"classification needs an 'image_path' column; got {list(frame.columns)}"
                    )
                return predict_paths(
                    self.classifier,
                    frame["image_path"].astype(str).tolist(),
                    top_k=int((params or {}).get("top_k", 5)),
                )
            missing = [c for c in ("left_id", "right_id") if c not in frame.columns]
            if missing:
                raise ValueError(f"pair scoring needs columns left_id, right_id; missing {missing}")
            score = self.matcher.predict_proba(
                frame["left_id"].astype(str),
                frame["right_id"].astype(str),
                self.items,
                self.embeddings,
            )
            return pd.DataFrame(
                {"score": score, "match": (score >= self.matcher.threshold).astype(np.int64)}
            )

    _PYFUNC_CLASS = VitrinaModel
    return VitrinaModel


_PYFUNC_CLASS: type | None = None


def _clip_embedder(path: str, config: dict[str, Any]) -> Any:
    from vitrina.models.clip import ClipBundle

    settings = {
        "batch_size": int(config.get("batch_size", 64)),
        "device": config.get("device", "auto"),
        "precision": config.get("precision", "fp32"),
        "num_workers": int(config.get("num_workers", 1)),
        "progress": False,
    }
    return ClipBundle.load(Path(path)).embedder(settings, "clip")


def _embed_frame(embedder: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """``text_embedding`` for a ``text`` column, ``image_embedding`` for ``image_path``."""
    columns = [c for c in ("text", "image_path") if c in frame.columns]
    if not columns:
        raise ValueError(
            f"CLIP embedding needs a 'text' and/or an 'image_path' column; got {list(frame.columns)}"
        )
    out = pd.DataFrame(index=frame.index)
    if "text" in columns:
        vectors = embedder.embed_texts(frame["text"].astype(str).tolist())
        out["text_embedding"] = [v.astype(float).tolist() for v in vectors]
    if "image_path" in columns:
        vectors = embedder.embed_images(frame["image_path"].astype(str).tolist())
        out["image_embedding"] = [v.astype(float).tolist() for v in vectors]
    return out


def _signature(kind: str) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    if kind == "classifier":
        inputs = [ColSpec("string", "image_path")]
    elif kind == "clip":
        inputs = [
            ColSpec("string", "text", required=False),
            ColSpec("string", "image_path", required=False),
        ]
    else:
        inputs = [ColSpec("string", "left_id"), ColSpec("string", "right_id")]
    return ModelSignature(inputs=Schema(inputs))


def log_and_register(
    kind: str,
    artifacts: dict[str, str],
    settings: dict[str, Any] | None,
    model_config: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    task: str | None = None,
) -> dict[str, Any]:
    """Log a Vitrina model as an MLflow ``pyfunc`` model and register it.

    Logs into the active MLflow run (kedro-mlflow's run of this ``kedro run``), or into a
    new run ``register-<name>`` of the current experiment when none is active.

    Args:
        kind: ``clip`` or ``pair_matcher``.
        artifacts: ``{name: local path}`` copied into the model (``checkpoint`` for
            ``clip``; ``matcher``, ``items``, ``embeddings`` for ``pair_matcher``).
        settings: the ``mlflow`` parameters (``model_name_prefix``).
        model_config: extra load settings (``device``, ``batch_size`` ...).
        tags: tags of the new model version (e.g. the metrics it was chosen by).
        task: the classification task (``classifier`` kind: part of the model name).

    Returns:
        ``{"registered": True, "name", "version", "model_uri", "run_id"}``.
    """
    import mlflow

    import vitrina

    name = registered_model_name(settings, kind, task)
    code = Path(__file__).with_name("mlflow_model.py")
    active = mlflow.active_run()
    run = (
        contextlib.nullcontext(active)
        if active is not None
        else mlflow.start_run(run_name=f"register-{name}")
    )
    with run as current:
        info = mlflow.pyfunc.log_model(
            name=f"{task}-{KINDS[kind]}" if task else KINDS[kind],
            python_model=str(code),
            artifacts=artifacts,
            model_config={"kind": kind, **(model_config or {})},
            code_paths=[str(Path(vitrina.__file__).parent)],
            signature=_signature(kind),
            pip_requirements=pip_requirements(),
            registered_model_name=name,
        )
        run_id = current.info.run_id
    version = int(info.registered_model_version)
    if tags:
        from mlflow import MlflowClient

        client = MlflowClient()
        for key, value in tags.items():
            client.set_model_version_tag(name, str(version), key, str(value))
    logger.info("MLflow registry: %s version %d (%s)", name, version, info.model_uri)
    return {
        "registered": True,
        "name": name,
        "version": version,
        "model_uri": f"models:/{name}/{version}",
        "run_id": run_id,
    }


def not_registered(
    settings: dict[str, Any] | None, kind: str, task: str | None = None
) -> dict[str, Any]:
    """The record of a model left out of the registry (``register_models`` is false)."""
    return {
        "registered": False,
        "name": registered_model_name(settings, kind, task),
        "version": None,
        "model_uri": None,
        "run_id": None,
    }


def register_clip(bundle: Any, settings: dict[str, Any] | None) -> dict[str, Any]:
    """Register a CLIP bundle as ``<prefix>-clip`` when ``settings["register_models"]``.

    Args:
        bundle: a :class:`vitrina.models.clip.ClipBundle` (saved in its own layout).
        settings: the ``mlflow`` parameters.

    Returns:
        :func:`log_and_register`'s record, or :func:`not_registered`'s.
    """
    if not (settings or {}).get("register_models", False):
        return not_registered(settings, "clip")
    with tempfile.TemporaryDirectory(prefix="vitrina-register-clip-") as tmp:
        path = Path(tmp) / "checkpoint"
        bundle.save(path)
        return log_and_register("clip", {"checkpoint": str(path)}, settings)


def register_pair_matcher(
    matcher: Any, items: pd.DataFrame, embeddings: Any, settings: dict[str, Any] | None
) -> dict[str, Any]:
    """Register a pair matcher as ``<prefix>-pair-classifier`` when ``register_models``.

    Args:
        matcher: the kept :class:`~vitrina.models.pair_matching.PairMatcher`.
        items: ``pair_items`` (``item_id`` + item columns) it scores.
        embeddings: ``pair_item_embeddings``.
        settings: the ``mlflow`` parameters.

    Returns:
        :func:`log_and_register`'s record (the version is tagged with the classifier,
        variant, threshold and validation F1), or :func:`not_registered`'s.
    """
    if not (settings or {}).get("register_models", False):
        return not_registered(settings, "pair_matcher")
    from vitrina.datasets.embeddings import EmbeddingsDataset

    with tempfile.TemporaryDirectory(prefix="vitrina-register-pairs-") as tmp:
        root = Path(tmp)
        matcher.save(root / "matcher")
        items.to_parquet(root / "items.parquet", index=False)
        EmbeddingsDataset(str(root / "embeddings.npz")).save(embeddings)
        info = matcher.info
        return log_and_register(
            "pair_matcher",
            {
                "matcher": str(root / "matcher"),
                "items": str(root / "items.parquet"),
                "embeddings": str(root / "embeddings.npz"),
            },
            settings,
            tags={
                "classifier": info.get("classifier"),
                "variant": info.get("variant"),
                "threshold": f"{matcher.threshold:.6f}",
                "val_f1": info.get("val_f1"),
            },
        )


def register_image_classifier(
    classifier: Any, metrics: pd.DataFrame, settings: dict[str, Any] | None
) -> dict[str, Any]:
    """Register a trained classifier as ``<prefix>-<task>-classifier`` when
    ``register_models``; the version is tagged with its kind, backbone and test metrics.

    Args:
        classifier: :class:`~vitrina.models.classifiers.artefact.ImageClassifier`.
        metrics: its evaluation rows (``split, metric, value``).
        settings: the ``mlflow`` parameters.
    """
    task = str(classifier.config["task"])
    if not (settings or {}).get("register_models", False):
        return not_registered(settings, "classifier", task)
    test = metrics[metrics["split"] == "test"]
    tags = {"kind": classifier.kind, "backbone": classifier.config.get("backbone")}
    tags.update({f"test_{r.metric}": f"{r.value:.6f}" for r in test.itertuples()})
    with tempfile.TemporaryDirectory(prefix="vitrina-register-classifier-") as tmp:
        path = Path(tmp) / "model"
        classifier.save(path)
        return log_and_register("classifier", {"model": str(path)}, settings, tags=tags, task=task)
