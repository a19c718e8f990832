"""Captioning nodes: splits, training, test captions, baseline, SacreBLEU, report.

The library parts (splits, building, training, test captions, SacreBLEU) live in
:mod:`vitrina.models.captioner`; the nodes here wire them to the catalogue.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from vitrina.datasets.embeddings import Embeddings
from vitrina.models.captioner import (
    Captioner,
    build_initial_captioner,
    caption_test_split,
    corpus_sacrebleu,
    count_parameters,
    fit_on_splits,
    make_captioning_splits,
    split_rows,
    training_settings,
)

logger = logging.getLogger(__name__)

METRIC_COLUMNS = ["system", "decoding", "sacrebleu", "n_test"]

__all__ = [
    "METRIC_COLUMNS",
    "build_initial_captioner",
    "caption_test_split",
    "captioning_metrics_for_mlflow",
    "make_captioning_splits",
    "nearest_neighbour_captions",
    "render_captioning_examples",
    "score_captions",
    "train_captioner",
]


def train_captioner(
    captioner: Captioner, splits: pd.DataFrame, params: dict[str, Any]
) -> tuple[Captioner, pd.DataFrame, dict[str, Any]]:
    """Pre-train the encoder, then train captioning; keep the best epoch.

    Both phases run on the Lightning engine (:func:`vitrina.models.captioner.fit_on_splits`)
    in ``captioning.output_dir``: a killed run resumes from ``last.ckpt``, a finished one
    is only reloaded, changed data or settings start afresh.

    Args:
        captioner: output of :func:`build_initial_captioner`.
        splits: output of :func:`make_captioning_splits`.
        params: ``captioning`` parameters (``training``, ``output_dir``).

    Returns:
        The best captioner, the per-epoch history (``phase, epoch, train_loss, bow_loss,
        val_loss, val_bow_loss, learning_rate, is_best``) and MLflow metric histories
        (``train_loss``, ``val_loss`` per captioning epoch, ``best_val_loss``,
        ``training_seconds``, ``n_truncated``, ``n_parameters``).

    Raises:
        ValueError: an old or unknown ``captioning.training`` key (naming the new one).
    """
    config, options = training_settings(params.get("training"))
    result = fit_on_splits(captioner, splits, config, options, output_dir=params["output_dir"])
    # Decoding defaults saved with the model follow the current parameters (they do not
    # change training, so a finished run is reused when only they change).
    result.captioner.meta["generation"] = dict(params.get("generation") or {})
    sizes = count_parameters(result.captioner)
    logger.info(
        "captioning: best epoch %d (val_loss %.3f); %.1f min of training this run; "
        "%.1fM parameters; %d descriptions truncated",
        result.best_epoch,
        result.best_val_loss,
        result.seconds / 60,
        sizes["total"] / 1e6,
        result.n_truncated,
    )
    history = result.history
    epochs = history[history["phase"] == "captioning"]
    metrics: dict[str, Any] = {
        name: [
            {"value": float(v), "step": int(e)}
            for e, v in zip(epochs["epoch"], epochs[name], strict=True)
            if pd.notna(v)
        ]
        for name in ("train_loss", "val_loss")
    }
    metrics.update(
        best_val_loss={"value": result.best_val_loss, "step": result.best_epoch},
        training_seconds={"value": float(result.seconds), "step": 0},
        n_truncated={"value": float(result.n_truncated), "step": 0},
        n_parameters={"value": float(sizes["total"]), "step": 0},
    )
    return result.captioner, history, metrics


def nearest_neighbour_captions(embeddings: Embeddings, splits: pd.DataFrame) -> pd.DataFrame:
    """Baseline: each test image gets the description of its most similar training image.

    Similarity is the cosine of the image embeddings (rows are L2-normalised, so the dot
    product), computed in blocks of 1024 test rows.

    Args:
        embeddings: one model's embeddings (``image`` ``[N, D]``), e.g. ``tfidf_svd``.
        splits: output of :func:`make_captioning_splits`.

    Returns:
        ``product_id, nearest_neighbour, neighbour_id, similarity`` per test item.

    Raises:
        ValueError: the embeddings lack train or test products (stale embeddings).
    """
    train, test = split_rows(splits, "train"), split_rows(splits, "test")
    train_x = embeddings.align(train["product_id"].astype(str)).image
    test_x = embeddings.align(test["product_id"].astype(str)).image
    best = np.empty(len(test), dtype=np.int64)
    sim = np.empty(len(test), dtype=np.float32)
    for start in range(0, len(test), 1024):
        block = test_x[start : start + 1024] @ train_x.T
        best[start : start + len(block)] = block.argmax(axis=1)
        sim[start : start + len(block)] = block.max(axis=1)
    return pd.DataFrame(
        {
            "product_id": test["product_id"].to_numpy(),
            "nearest_neighbour": train["description"].to_numpy()[best],
            "neighbour_id": train["product_id"].to_numpy()[best],
            "similarity": sim,
        }
    )


def score_captions(test_captions: pd.DataFrame, baseline_captions: pd.DataFrame) -> pd.DataFrame:
    """SacreBLEU of every decoding of the captioner and of the nearest-neighbour baseline.

    The baseline is scored on the same test items as the captioner.

    Returns:
        :data:`METRIC_COLUMNS`: ``system`` (``captioner`` | ``nearest_neighbour``),
        ``decoding`` (``greedy``, ``beam`` | ``retrieval``), ``sacrebleu`` (0-100),
        ``n_test``.
    """
    rows = []
    refs = test_captions["reference"].tolist()
    for decoding in [c for c in test_captions.columns if c not in ("product_id", "reference")]:
        rows.append(
            {
                "system": "captioner",
                "decoding": decoding,
                "sacrebleu": corpus_sacrebleu(test_captions[decoding].fillna("").tolist(), refs),
                "n_test": len(refs),
            }
        )
    baseline = test_captions[["product_id", "reference"]].merge(
        baseline_captions, on="product_id", how="left"
    )
    rows.append(
        {
            "system": "nearest_neighbour",
            "decoding": "retrieval",
            "sacrebleu": corpus_sacrebleu(
                baseline["nearest_neighbour"].fillna("").tolist(), baseline["reference"].tolist()
            ),
            "n_test": len(baseline),
        }
    )
    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    for r in metrics.itertuples():
        logger.info(
            "captioning: SacreBLEU %-17s %-9s %.2f (n=%d)",
            r.system,
            r.decoding,
            r.sacrebleu,
            r.n_test,
        )
    return metrics


def captioning_metrics_for_mlflow(metrics: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``{"test.sacrebleu.<system>.<decoding>": {"value": v, "step": 0}}`` for MLflow."""
    return {
        f"test.sacrebleu.{r.system}.{r.decoding}": {"value": float(r.sacrebleu), "step": 0}
        for r in metrics.itertuples()
    }


def _thumbnail(path: str, side: int) -> str:
    """A ``data:`` URI of a JPEG thumbnail, or ``""`` when the image cannot be read."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((side, side))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=80)
    except OSError:
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render_captioning_examples(
    test_captions: pd.DataFrame,
    baseline_captions: pd.DataFrame,
    metrics: pd.DataFrame,
    splits: pd.DataFrame,
    params: dict[str, Any],
) -> str:
    """A self-contained HTML page: the scores, then example test images (embedded
    thumbnails) with their reference, generated and nearest-neighbour descriptions.

    Args:
        params: ``captioning`` parameters (``report.n_examples``, ``report.thumbnail``,
            ``report.seed``).
    """
    settings = params.get("report") or {}
    n = min(int(settings.get("n_examples", 24)), len(test_captions))
    side = int(settings.get("thumbnail", 160))
    rng = np.random.default_rng(int(settings.get("seed", 0)))
    picked = test_captions.iloc[np.sort(rng.choice(len(test_captions), n, replace=False))]
    table = picked.merge(baseline_captions, on="product_id", how="left").merge(
        splits[["product_id", "processed_path"]], on="product_id", how="left"
    )
    decodings = [c for c in test_captions.columns if c not in ("product_id", "reference")]
    esc = html.escape
    score_rows = "".join(
        f"<tr><td>{esc(r.system)}</td><td>{esc(r.decoding)}</td><td>{r.sacrebleu:.2f}</td>"
        f"<td>{r.n_test}</td></tr>"
        for r in metrics.itertuples()
    )
    cards = []
    for r in table.itertuples():
        src = _thumbnail(str(r.processed_path), side)
        img = f'<img src="{src}" width="{side}" alt="{esc(str(r.product_id))}">' if src else ""
        lines = [f"<dt>reference</dt><dd>{esc(str(r.reference))}</dd>"]
        lines += [f"<dt>{esc(d)}</dt><dd>{esc(str(getattr(r, d)))}</dd>" for d in decodings]
        lines.append(
            f"<dt>nearest neighbour</dt><dd>{esc(str(r.nearest_neighbour))}"
            f" <small>({esc(str(r.neighbour_id))}, cos {r.similarity:.2f})</small></dd>"
        )
        cards.append(
            f'<div class="card">{img}<div><h3>{esc(str(r.product_id))}</h3>'
            f"<dl>{''.join(lines)}</dl></div></div>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Vitrina captioning examples</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; }}
.card {{ display: flex; gap: 1em; border-bottom: 1px solid #eee; padding: 1em 0; }}
dt {{ font-weight: bold; color: #555; }} dd {{ margin: 0 0 .4em 0; }} h3 {{ margin: 0; }}
</style></head><body>
<h1>Captioning: test examples</h1>
<p>Corpus SacreBLEU (default settings) on the test split; the nearest-neighbour baseline
copies the description of the training product with the most similar image embedding.</p>
<table><tr><th>system</th><th>decoding</th><th>SacreBLEU</th><th>n_test</th></tr>{score_rows}</table>
<h2>{n} random test products</h2>
{"".join(cards)}
</body></html>
"""
