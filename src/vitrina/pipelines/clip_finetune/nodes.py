"""clip_finetune nodes: (image, title) pairs → split → contrastive fine-tuning → retrieval report."""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import GroupShuffleSplit

from vitrina.models.clip_training import ClipAdapter, TrainConfig, pair_data_from_frame

logger = logging.getLogger(__name__)

PAIR_COLUMNS = [
    "product_id",
    "title",
    "processed_path",
    "group_id",
    "image_key",
    "text_key",
    "split_group",
]
REPORT_COLUMNS = ["model", "stage", "direction", "metric", "value", "chance", "n_val"]
DIRECTIONS = {"t2i": "text→image", "i2t": "image→text"}


def _file_digest(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha1(fh.read()).hexdigest()


def _union_groups(groups: pd.Series, image_keys: pd.Series) -> pd.Series:
    """Connected components of "same group" ∪ "same image": one split group each."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for g, k in zip(groups, image_keys, strict=True):
        a, b = find(f"g:{g}"), find(f"i:{k}")
        if a != b:
            parent[b] = a
    return pd.Series([find(f"g:{g}") for g in groups], index=groups.index).str[2:]


def make_finetune_pairs(
    products: pd.DataFrame, image_manifest: pd.DataFrame, params: dict[str, Any]
) -> pd.DataFrame:
    """(processed image, title) pairs of every product that has both.

    Products whose title is empty after ingestion (blank or whitespace) are left out and
    counted in the log.  Byte-identical processed images are found by content hash: when
    they carry different titles (H&M has 28 such groups) they are kept, logged, put in one
    split group (never on both sides of the split) and, by their shared ``image_key``,
    count as matches of each other in the loss and the recall.

    Args:
        products: canonical products (``product_id``, ``group_id``, the text field).
        image_manifest: image_processing output (``product_id``, ``processed_path``).
        params: ``clip_finetune`` parameters (``text_field``, default ``title``).

    Returns:
        ``product_id, title, processed_path, group_id, image_key`` (SHA-1 of the processed
        image), ``text_key`` (lower-cased title, spaces collapsed), ``split_group`` (groups
        joined through shared images); one row per product, in products order.

    Raises:
        KeyError: the text field is not a products column.
        ValueError: fewer than 2 products have both a processed image and a title.
    """
    field = params.get("text_field", "title")
    if field not in products.columns:
        raise KeyError(
            f"clip_finetune.text_field {field!r} is not a products column; columns: "
            f"{list(products.columns)}"
        )
    df = products[["product_id", field, "group_id"]].merge(
        image_manifest[["product_id", "processed_path"]], on="product_id", how="inner"
    )
    df = df.rename(columns={field: "title"})
    title = df["title"].astype("string").str.strip()
    empty = title.isna() | (title == "")
    if empty.any():
        logger.warning(
            "clip_finetune: %d products have an empty %s after ingestion and are left out of "
            "fine-tuning (e.g. %s)",
            int(empty.sum()),
            field,
            df.loc[empty, "product_id"].head(5).tolist(),
        )
    df = df[~empty].assign(title=title[~empty].astype(str)).reset_index(drop=True)
    if len(df) < 2:
        raise ValueError(
            f"clip_finetune needs at least 2 products with a processed image and a non-empty "
            f"{field}, got {len(df)} (products {len(products)}, processed images "
            f"{len(image_manifest)}, empty {field}s {int(empty.sum())})"
        )
    df["group_id"] = df["group_id"].astype(str)
    df["image_key"] = [_file_digest(p) for p in df["processed_path"]]
    df["text_key"] = df["title"].str.lower().str.split().str.join(" ")
    titles_per_image = df.groupby("image_key")["text_key"].nunique()
    conflicting = titles_per_image[titles_per_image > 1]
    if len(conflicting):
        dup = df[df["image_key"].isin(conflicting.index)]
        examples = [
            " / ".join(f"{r.product_id} {r.title!r}" for r in g.head(2).itertuples())
            for _, g in list(dup.groupby("image_key"))[:3]
        ]
        logger.warning(
            "clip_finetune: %d identical images are shared by %d products with different "
            "titles (e.g. %s); they stay in one split and count as matches of each other",
            len(conflicting),
            len(dup),
            "; ".join(examples),
        )
    df["split_group"] = _union_groups(df["group_id"], df["image_key"])
    return df[PAIR_COLUMNS]


def split_finetune_pairs(pairs: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Train/validation split grouped by ``split_group`` (colour variants and identical
    images never straddle it), seeded by ``split_seed``.

    Args:
        pairs: output of :func:`make_finetune_pairs`.
        params: ``clip_finetune`` parameters (``val_size`` fraction, ``split_seed``,
            ``train.recall_ks``).

    Returns:
        ``pairs`` with a ``split`` column (``train`` / ``val``).

    Raises:
        ValueError: the validation split has fewer pairs than the largest k of recall@k,
            or the training split fewer than 2 pairs.
    """
    val_size = float(params.get("val_size", 0.2))
    if not 0 < val_size < 1:
        raise ValueError(f"clip_finetune.val_size must be in (0, 1), got {val_size}")
    ks = TrainConfig.from_dict(params.get("train")).recall_ks
    split = np.full(len(pairs), "train", dtype=object)
    if pairs["split_group"].nunique() >= 2:
        splitter = GroupShuffleSplit(
            n_splits=1, test_size=val_size, random_state=int(params.get("split_seed", 42))
        )
        _, val_idx = next(splitter.split(pairs, groups=pairs["split_group"]))
        split[val_idx] = "val"
    out = pairs.assign(split=split)
    n_val, n_train = int((split == "val").sum()), int((split == "train").sum())
    if n_val < ks[-1]:
        raise ValueError(
            f"clip_finetune: the validation split has {n_val} pairs ({len(pairs)} pairs in "
            f"{pairs['split_group'].nunique()} groups, val_size {val_size}), too few for "
            f"recall@{ks[-1]}: add products, raise clip_finetune.val_size or lower "
            "clip_finetune.train.recall_ks"
        )
    if n_train < 2:
        raise ValueError(
            f"clip_finetune: the training split has {n_train} pairs; contrastive training "
            "needs at least 2 (lower clip_finetune.val_size or add products)"
        )
    if n_val < 100:
        logger.warning(
            "clip_finetune: recall@k on %d validation pairs is noisy (one pair = %.1f points)",
            n_val,
            100 / n_val,
        )
    logger.info("clip_finetune: %d train / %d validation pairs", n_train, n_val)
    return out


def load_base_model(spec: dict[str, Any]) -> Any:
    """Load a CLIP model named by its ``embeddings.models`` spec (hub id or local path).

    Returns:
        :class:`~vitrina.models.ruclip.RuClipBundle` (``type: ruclip``) or
        :class:`~vitrina.models.hf_clip.HfClipBundle` (``type: hf_clip``).

    Raises:
        ValueError: another type.  CheckpointNotFoundError: not local, not downloadable.
    """
    from vitrina.models.hf_clip import load_hf_clip
    from vitrina.models.ruclip import load_ruclip

    kind = spec.get("type")
    if kind == "ruclip":
        return load_ruclip(spec["checkpoint"])
    if kind == "hf_clip":
        return load_hf_clip(spec["checkpoint"])
    raise ValueError(f"only ruclip and hf_clip models can be fine-tuned, got type {kind!r}")


def _data_digest(pairs: pd.DataFrame) -> str:
    cols = ["product_id", "title", "image_key", "text_key", "split"]
    payload = pd.util.hash_pandas_object(pairs[cols], index=False).to_numpy().tobytes()
    return hashlib.sha1(payload).hexdigest()


def finetune_clip(
    base_model: Any, pairs: pd.DataFrame, params: dict[str, Any]
) -> tuple[Any, pd.DataFrame]:
    """Fine-tune the base CLIP on the training pairs; keep the best validation epoch.

    See :func:`vitrina.models.clip_training.train_clip` for the loop (InfoNCE, AdamW,
    warm-up + cosine, accumulation, clipping, autocast, early stopping, resumable
    checkpoints in ``state_dir``) and :mod:`vitrina.models.clip_launch` for data
    parallelism (``nproc_per_node``).  Step and epoch metrics go to the active MLflow
    run as they happen; with ``log_model_to_mlflow`` the fine-tuned checkpoint does too.

    Args:
        base_model: the base bundle (ruCLIP or Hugging Face CLIP); not modified.
        pairs: output of :func:`split_finetune_pairs`.
        params: ``clip_finetune`` parameters (``train``, ``state_dir``, ``resume``,
            ``nproc_per_node``, ``log_model_to_mlflow``).

    Returns:
        The fine-tuned bundle (same tokenizer, processor and layout as the base) and the
        per-epoch history (``epoch, step, train_loss, val_loss, <dir>_recall_<k>,
        <dir>_median_rank, mean_recall, lr, seconds, pairs_per_s, is_best``).

    Raises:
        NonFiniteLossError: the loss diverged (the last good checkpoint is kept).
    """
    from vitrina.models.clip_launch import run_training

    config = TrainConfig.from_dict(params.get("train"))
    result = run_training(
        base_model,
        pairs[pairs["split"] == "train"].reset_index(drop=True),
        pairs[pairs["split"] == "val"].reset_index(drop=True),
        config,
        state_dir=params.get("state_dir"),
        resume=bool(params.get("resume", True)),
        nproc_per_node=params.get("nproc_per_node", 1),
        fingerprint_extra=_data_digest(pairs),
    )
    bundle = ClipAdapter(base_model).with_model(result.model)
    if hasattr(bundle, "path"):
        bundle.path = None
    if params.get("log_model_to_mlflow", True):
        _log_model_to_mlflow(bundle)
    history = pd.DataFrame(result.history)
    if result.best_epoch is not None:
        logger.info(
            "clip_finetune: kept epoch %d of %d (mean recall %.4f)%s",
            result.best_epoch,
            len(history),
            result.best_metrics.get("mean_recall", float("nan")),
            ", stopped early" if result.stopped_early else "",
        )
    return bundle, history


def _log_model_to_mlflow(bundle: Any) -> None:
    """Log the checkpoint directory as ``clip_finetune/model`` artefacts of the active run."""
    try:
        import mlflow
    except ImportError:  # pragma: no cover - mlflow is a dependency
        return
    if mlflow.active_run() is None:
        return
    from vitrina.models.clip_launch import _save_bundle

    with tempfile.TemporaryDirectory(prefix="vitrina-mlflow-model-") as tmp:
        path = Path(tmp) / "model"
        _save_bundle(bundle, path)
        mlflow.log_artifacts(str(path), artifact_path="clip_finetune/model")


def evaluate_retrieval_split(
    checkpoint: Any, pairs: pd.DataFrame, params: dict[str, Any]
) -> dict[str, float]:
    """Text→image and image→text recall@k and median rank of a model on the validation split.

    Args:
        checkpoint: a CLIP bundle (the base or the fine-tuned model).
        pairs: output of :func:`split_finetune_pairs`.
        params: ``clip_finetune`` parameters (``train.recall_ks``, ``match_duplicates``,
            ``precision``, ``eval_batch_size``).

    Returns:
        :func:`vitrina.models.clip_training.evaluate_retrieval` metrics (floats), chance
        levels included.
    """
    from vitrina.models.clip_training import evaluate_retrieval, resolve_precision
    from vitrina.utils import limit_threads, resolve_device

    config = TrainConfig.from_dict(params.get("train"))
    val = pairs[pairs["split"] == "val"].reset_index(drop=True)
    data = pair_data_from_frame(
        ClipAdapter(checkpoint),
        val,
        match_duplicates=config.match_duplicates,
        cache_mb=0,
        num_workers=config.num_workers,
        progress=config.progress,
    )
    device = resolve_device(config.device)
    model = checkpoint.model.to(device)
    with limit_threads(config.torch_threads):
        metrics = evaluate_retrieval(
            model,
            data,
            config.recall_ks,
            batch_size=config.eval_batch_size,
            loss_batch_size=config.batch_size,
            precision=resolve_precision(config.precision, torch.device(device)),
            num_workers=config.num_workers,
        )
    return {k: float(v) for k, v in metrics.items()}


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
    ks = list(TrainConfig.from_dict(params.get("train")).recall_ks)
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
