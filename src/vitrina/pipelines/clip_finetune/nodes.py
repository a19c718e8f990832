"""clip_finetune nodes: (image, title) pairs → split → contrastive fine-tuning → retrieval report.

The work is done by the library (:mod:`vitrina.models.clip`); these nodes read the
parameters and hand the catalogue's data to it.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from vitrina.models.clip import ClipBundle, ClipFinetuneConfig, load_base_model
from vitrina.models.clip.config import RENAMED_STEP, refuse_renamed
from vitrina.models.clip.finetune import evaluate_retrieval, fine_tune
from vitrina.models.clip.pairs import data_digest, make_finetune_pairs, split_finetune_pairs

logger = logging.getLogger(__name__)

REPORT_COLUMNS = ["model", "stage", "direction", "metric", "value", "chance", "n_val"]
DIRECTIONS = {"t2i": "text→image", "i2t": "image→text"}

__all__ = [
    "evaluate_retrieval_split",
    "finetune_clip",
    "load_base_model",
    "make_finetune_pairs",
    "register_finetuned_clip",
    "report_retrieval",
    "split_finetune_pairs",
]


def finetune_clip(
    base_model: ClipBundle, pairs: pd.DataFrame, params: dict[str, Any]
) -> tuple[ClipBundle, pd.DataFrame]:
    """Fine-tune the base CLIP on the training pairs; keep the best validation epoch.

    :func:`vitrina.models.clip.finetune.fine_tune` on the Lightning engine: InfoNCE,
    AdamW with warm-up + cosine, accumulation, clipping, the precision rules, early
    stopping and best / last / top-k checkpoints in ``output_dir`` (a rerun with the same
    parameters and pairs resumes from ``last.ckpt``), several devices through
    ``train.devices`` / ``train.strategy``. Step and epoch metrics go to the active MLflow
    run as they happen; with ``log_model_to_mlflow`` the fine-tuned checkpoint does too.

    Args:
        base_model: the base bundle (ruCLIP or Hugging Face CLIP); not modified.
        pairs: output of :func:`split_finetune_pairs`.
        params: ``clip_finetune`` parameters (``train``, ``output_dir``,
            ``log_model_to_mlflow``).

    Returns:
        The fine-tuned bundle (same processor and layout as the base) and the per-epoch
        history (:func:`vitrina.models.clip.finetune.clip_history`).

    Raises:
        ValueError: an old key (``state_dir``, ``resume``, ``nproc_per_node``, ``epochs``,
            ``lr`` …), naming its replacement.
        vitrina.training.NonFiniteLossError: the loss diverged (the last good checkpoint
            is kept).
    """
    refuse_renamed(params, RENAMED_STEP, "clip_finetune")
    config = ClipFinetuneConfig.from_params(params.get("train"))
    with tempfile.TemporaryDirectory(prefix="vitrina-clip-finetune-") as tmp:
        result = fine_tune(
            base_model,
            pairs[pairs["split"] == "train"].reset_index(drop=True),
            pairs[pairs["split"] == "val"].reset_index(drop=True),
            config,
            params.get("output_dir") or tmp,  # no output_dir: nothing kept on disk
            fingerprint_extra=data_digest(pairs),
        )
    if params.get("log_model_to_mlflow", True):
        _log_model_to_mlflow(result.bundle)
    logger.info(
        "clip_finetune: kept epoch %d of %d (mean recall %.4f)",
        result.best_epoch,
        len(result.history),
        result.best_metrics.get("mean_recall", math.nan),
    )
    return result.bundle, result.history


def _log_model_to_mlflow(bundle: ClipBundle) -> None:
    """Log the checkpoint directory as ``clip_finetune/model`` artefacts of the active run."""
    try:
        import mlflow
    except ImportError:  # pragma: no cover - mlflow is a dependency
        return
    if mlflow.active_run() is None:
        return
    with tempfile.TemporaryDirectory(prefix="vitrina-mlflow-model-") as tmp:
        path = Path(tmp) / "model"
        bundle.save(path)
        mlflow.log_artifacts(str(path), artifact_path="clip_finetune/model")


def evaluate_retrieval_split(
    checkpoint: ClipBundle, pairs: pd.DataFrame, params: dict[str, Any]
) -> dict[str, float]:
    """Text→image and image→text recall@k and median rank of a model on the validation split.

    Args:
        checkpoint: a CLIP bundle (the base or the fine-tuned model).
        pairs: output of :func:`split_finetune_pairs`.
        params: ``clip_finetune`` parameters (``train``: ``recall_ks``,
            ``match_duplicates``, ``precision``, ``accelerator``, ``eval_batch_size``).

    Returns:
        :func:`vitrina.models.clip.finetune.evaluate_retrieval` metrics (floats), chance
        levels included.
    """
    config = ClipFinetuneConfig.from_params(params.get("train"))
    return evaluate_retrieval(
        checkpoint, pairs[pairs["split"] == "val"].reset_index(drop=True), config
    )


def _report_rows(name: str, stage: str, m: dict[str, float], ks: list[int]) -> list[dict]:
    rows = []
    for d, direction in DIRECTIONS.items():
        for k in ks:
            rows.append(
                {
                    "model": name,
                    "stage": stage,
                    "direction": direction,
                    "metric": f"recall@{k}",
                    "value": m[f"{d}_recall_{k}"],
                    "chance": m[f"chance_{d}_recall_{k}"],
                    "n_val": int(m["n"]),
                }
            )
        rows.append(
            {
                "model": name,
                "stage": stage,
                "direction": direction,
                "metric": "median_rank",
                "value": m[f"{d}_median_rank"],
                "chance": (m["n"] + 1) / 2,
                "n_val": int(m["n"]),
            }
        )
    return rows


def report_retrieval(
    base_metrics: dict[str, float],
    finetuned_metrics: dict[str, float],
    history: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[pd.DataFrame, str, dict[str, dict[str, float]]]:
    """Recall@k and median rank before and after fine-tuning, side by side.

    Args:
        base_metrics, finetuned_metrics: :func:`evaluate_retrieval_split` of both models.
        history: per-epoch training history from :func:`finetune_clip`.
        params: ``clip_finetune`` parameters (``base_model``, ``output_model``,
            ``train.recall_ks``).

    Returns:
        The report table (``model, stage, direction, metric, value, chance, n_val``;
        ``chance`` is the expected value of a random ranking: recall with duplicates
        counted, median rank ``(n + 1) / 2``), a Markdown summary, and MLflow metrics
        ``{"clip_finetune.<stage>.<dir>_recall_<k>": {"value", "step"}}``.
    """
    ks = list(ClipFinetuneConfig.from_params(params.get("train")).options.recall_ks)
    base_name = params.get("base_model", "base")
    out_name = params.get("output_model", "finetuned")
    report = pd.DataFrame(
        _report_rows(base_name, "base", base_metrics, ks)
        + _report_rows(out_name, "finetuned", finetuned_metrics, ks),
        columns=REPORT_COLUMNS,
    )
    wide = report.pivot_table(
        index=["direction", "metric"], columns="stage", values="value", sort=False
    ).reset_index()
    chance = report[report.stage == "base"].set_index(["direction", "metric"])["chance"]
    lines = [
        "# clip_finetune: retrieval before and after fine-tuning",
        "",
        f"Validation split: {int(base_metrics['n'])} pairs (products unseen in training). "
        f"Base `{base_name}`, fine-tuned `{out_name}`. Chance = a random ranking.",
        "",
        "| direction | metric | base | fine-tuned | chance |",
        "|---|---|---|---|---|",
    ]
    for r in wide.itertuples(index=False):
        fmt = "{:.1f}" if r.metric == "median_rank" else "{:.4f}"
        lines.append(
            f"| {r.direction} | {r.metric} | {fmt.format(r.base)} | "
            f"{fmt.format(r.finetuned)} | {fmt.format(chance[(r.direction, r.metric)])} |"
        )
    if len(history):
        best = history.loc[history["is_best"] > 0].iloc[-1] if history["is_best"].any() else None
        lines += [
            "",
            f"Training: {len(history)} epochs, {int(history['step'].iloc[-1])} steps, "
            f"{history['seconds'].sum():.0f} s"
            + (
                f"; kept epoch {int(best['epoch'])} (mean recall {best['mean_recall']:.4f})."
                if best is not None
                else "."
            ),
        ]
    lines.append("")
    mlflow_metrics = {}
    for stage, m in (("base", base_metrics), ("finetuned", finetuned_metrics)):
        for key, value in m.items():
            if key != "n" and not key.startswith("chance_") and math.isfinite(value):
                mlflow_metrics[f"{stage}.{key}"] = {"value": float(value), "step": 0}
    return report, "\n".join(lines), mlflow_metrics


def register_finetuned_clip(bundle: Any, mlflow_params: dict[str, Any]) -> dict[str, Any]:
    """Log the fine-tuned CLIP as an MLflow model and register it (``<prefix>-clip``).

    Only with ``mlflow.register_models: true``; see :mod:`vitrina.registry` (a ``pyfunc``
    returning text / image embeddings, logged in the active MLflow run, one registry
    version per run).

    Args:
        bundle: the fine-tuned bundle (output of :func:`finetune_clip`).
        mlflow_params: the ``mlflow`` parameters (``register_models``,
            ``model_name_prefix``).

    Returns:
        ``{"registered", "name", "version", "model_uri", "run_id"}`` (``registered``
        false and no version when registration is off).
    """
    from vitrina.registry import register_clip

    return register_clip(bundle, mlflow_params)
