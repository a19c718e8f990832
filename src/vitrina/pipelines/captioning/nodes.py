"""Captioning nodes: data and splits, training, test captions, baseline, SacreBLEU, report."""

from __future__ import annotations

import base64
import html
import io
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from vitrina.datasets.embeddings import Embeddings
from vitrina.models.captioner import (
    Captioner,
    auto_threads,
    build_captioner,
    caption_paths,
    count_parameters,
    select_config,
)
from vitrina.models.captioner_training import TrainingConfig, train_captioner_model
from vitrina.utils import limit_threads

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
SPLIT_COLUMNS = ["product_id", "group_id", "description", "processed_path", "split"]
DATA_REPORT_COLUMNS = ["reason", "n_rows"]
METRIC_COLUMNS = ["system", "decoding", "sacrebleu", "n_test"]


def normalise_text(values: pd.Series) -> pd.Series:
    """Strip and collapse whitespace; empty strings become missing (``<NA>``)."""
    text = values.astype("string").str.split().str.join(" ")
    return text.mask(text.fillna("").eq(""))


def grouped_split(
    groups: pd.Series, fractions: tuple[float, float, float], seed: int
) -> np.ndarray:
    """Assign whole groups to ``train``/``validation``/``test`` in the given proportions.

    Groups are shuffled with ``seed`` and laid end to end; a group goes to the split in
    which the middle of its run of items falls, so item shares track ``fractions`` and no
    group straddles two splits. With at least three groups every split gets one.

    Args:
        groups: group id per item.
        fractions: shares of train, validation and test (normalised to sum 1).
        seed: shuffling seed.

    Returns:
        ``object`` array of split names, one per item.

    Raises:
        ValueError: a negative fraction, or all fractions zero.
    """
    frac = np.asarray(fractions, dtype=float)
    if (frac < 0).any() or frac.sum() <= 0:
        raise ValueError(f"split fractions must be >= 0 and not all 0, got {list(fractions)}")
    frac = frac / frac.sum()
    keys = groups.astype(str).to_numpy()
    uniq, inverse, sizes = np.unique(keys, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(uniq))
    mids = (np.cumsum(sizes[order]) - sizes[order] / 2) / sizes.sum()
    bounds = np.cumsum(frac)[:-1]
    split_of_group = np.empty(len(uniq), dtype=object)
    split_of_group[order] = np.asarray(SPLITS, dtype=object)[np.searchsorted(bounds, mids)]
    if len(uniq) >= 3:
        # every split non-empty: move the last groups of the shuffled order if needed
        for k, name in enumerate(SPLITS):
            if frac[k] > 0 and not (split_of_group == name).any():
                donor = max(SPLITS, key=lambda s: (split_of_group == s).sum())
                g = order[::-1][np.flatnonzero(split_of_group[order[::-1]] == donor)[0]]
                split_of_group[g] = name
    return split_of_group[inverse]


def make_captioning_splits(
    products: pd.DataFrame, image_manifest: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Items with an image and a description, duplicates removed, split by group.

    As the seed system: items without a description or a processed image are dropped,
    then every description that appears more than once is kept only once (the first
    product in catalogue order; whitespace is normalised before comparing), then groups
    (``group_id``) are split train/validation/test (default 80/10/10).

    Args:
        products: canonical products (``product_id``, ``description``, ``group_id``).
        image_manifest: processed images (``product_id``, ``processed_path``).
        params: ``captioning`` parameters (``data.split``, ``data.seed``,
            ``data.max_items``).

    Returns:
        ``captioning_splits`` (:data:`SPLIT_COLUMNS`) and ``captioning_data_report``
        (``reason, n_rows``: dropped rows per reason and kept rows per split).

    Raises:
        ValueError: no item survives (no product has both a description and an image).
    """
    data = params.get("data") or {}
    seed = int(data.get("seed", 42))
    df = products[["product_id", "group_id", "description"]].merge(
        image_manifest[["product_id", "processed_path"]], on="product_id", how="left"
    )
    df["description"] = normalise_text(df["description"])
    df["group_id"] = df["group_id"].astype("string").fillna(df["product_id"].astype("string"))
    report = {"input": len(df)}
    no_description = df["description"].isna()
    report["missing_description"] = int(no_description.sum())
    df = df[~no_description]
    no_image = df["processed_path"].isna()
    report["missing_image"] = int(no_image.sum())
    df = df[~no_image]
    dup = df["description"].duplicated(keep="first")
    report["duplicate_description"] = int(dup.sum())
    df = df[~dup]
    max_items = data.get("max_items")
    if max_items and len(df) > int(max_items):
        keep = np.sort(np.random.default_rng(seed).choice(len(df), int(max_items), replace=False))
        report["over_max_items"] = len(df) - int(max_items)
        df = df.iloc[keep]
    if df.empty:
        raise ValueError(
            f"No product has both a description and a processed image ({report}): check "
            "the products table and rerun `kedro run --pipeline=image_processing`"
        )
    fractions = tuple(data.get("split", (0.8, 0.1, 0.1)))
    df = df.assign(split=grouped_split(df["group_id"], fractions, seed)).reset_index(drop=True)
    for name in SPLITS:
        report[f"kept_{name}"] = int((df["split"] == name).sum())
    logger.info(
        "captioning data: %d products -> %d items (%d without description, %d without image, "
        "%d duplicate descriptions); train/validation/test %d/%d/%d",
        report["input"],
        len(df),
        report["missing_description"],
        report["missing_image"],
        report["duplicate_description"],
        report["kept_train"],
        report["kept_validation"],
        report["kept_test"],
    )
    report_df = pd.DataFrame(
        {"reason": list(report), "n_rows": [int(v) for v in report.values()]},
        columns=DATA_REPORT_COLUMNS,
    )
    return df[SPLIT_COLUMNS], report_df


def _split(splits: pd.DataFrame, name: str) -> pd.DataFrame:
    return splits[splits["split"] == name].reset_index(drop=True)


def fit_on_splits(
    captioner: Captioner, splits: pd.DataFrame, config: TrainingConfig, **kwargs: Any
) -> Any:
    """:func:`~vitrina.models.captioner_training.train_captioner_model` on the ``train``
    and ``validation`` rows of ``splits`` (``processed_path``, ``description``,
    ``product_id``); ``kwargs`` go to it (``progress``, ``on_epoch``). Shared by the
    step and the tuning target, so both train on exactly the same data."""
    train, val = _split(splits, "train"), _split(splits, "validation")
    return train_captioner_model(
        captioner,
        train["processed_path"].tolist(),
        train["description"].tolist(),
        val["processed_path"].tolist(),
        val["description"].tolist(),
        config,
        train_ids=train["product_id"].astype(str).tolist(),
        val_ids=val["product_id"].astype(str).tolist(),
        **kwargs,
    )


def build_initial_captioner(splits: pd.DataFrame, params: dict[str, Any]) -> Captioner:
    """The configured captioner (``captioning.model``) before training.

    The tokenizer (when a BPE) is trained on the training split's descriptions only.

    Args:
        splits: output of :func:`make_captioning_splits`.
        params: ``captioning`` parameters (``model``, ``models``, ``generation``).
    """
    config = select_config(params)
    return build_captioner(
        config, _split(splits, "train")["description"].tolist(), params.get("generation")
    )


def train_captioner(
    captioner: Captioner, splits: pd.DataFrame, params: dict[str, Any]
) -> tuple[Captioner, pd.DataFrame, dict[str, Any]]:
    """Train on the training split, validate every epoch, keep the best epoch.

    Resumes from ``captioning.training.checkpoint_dir`` when an interrupted run with the
    same data and settings left a state there (see
    :mod:`vitrina.models.captioner_training`).

    Args:
        captioner: output of :func:`build_initial_captioner`.
        splits: output of :func:`make_captioning_splits`.
        params: ``captioning`` parameters (``training``).

    Returns:
        The best captioner, the per-epoch history (``epoch, train_loss, val_loss,
        learning_rate, seconds, is_best, sample_caption``) and MLflow metric histories
        (``train_loss``, ``val_loss`` per epoch, ``best_val_loss``, ``training_seconds``,
        ``n_truncated``).
    """
    config = TrainingConfig.from_params(params.get("training") or {})
    result = fit_on_splits(captioner, splits, config)
    # Decoding defaults saved with the model follow the current parameters (they do not
    # change training, so a finished training state is reused when only they change).
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
    metrics: dict[str, Any] = {
        "train_loss": [
            {"value": float(v), "step": int(e)}
            for e, v in zip(history.epoch, history.train_loss, strict=True)
        ],
        "val_loss": [
            {"value": float(v), "step": int(e)}
            for e, v in zip(history.epoch, history.val_loss, strict=True)
        ],
        "best_val_loss": {"value": result.best_val_loss, "step": result.best_epoch},
        "training_seconds": {"value": float(history["seconds"].sum()), "step": 0},
        "n_truncated": {"value": float(result.n_truncated), "step": 0},
        "n_parameters": {"value": float(sizes["total"]), "step": 0},
    }
    return result.captioner, history, metrics


def caption_test_split(
    captioner: Captioner, splits: pd.DataFrame, params: dict[str, Any]
) -> pd.DataFrame:
    """Caption every test image with greedy and beam search.

    Decoding settings are the current ``captioning.generation`` parameters (they win over
    the ones saved with the model).

    Args:
        captioner: the trained captioner; moved to ``evaluation.device`` with
            ``evaluation.precision`` weights (``auto``: bf16 where the CPU has bf16
            instructions, as deployed inference runs).
        splits: output of :func:`make_captioning_splits`.
        params: ``captioning`` parameters (``evaluation.batch_size``,
            ``evaluation.decodings``, ``evaluation.max_items``, ``evaluation.device``,
            ``evaluation.precision``, ``evaluation.num_threads``).

    Returns:
        ``product_id, reference, <decoding>...`` (one caption column per decoding).

    Raises:
        RuntimeError: a test image cannot be read (processed images should all be).
    """
    settings = params.get("evaluation") or {}
    with limit_threads(auto_threads(settings.get("num_threads"))):  # restored afterwards
        captioner.to(settings.get("device", "auto"), settings.get("precision", "auto"))
        test = _split(splits, "test")
        max_items = settings.get("max_items")
        if max_items:
            test = test.iloc[: int(max_items)]
        out = pd.DataFrame({"product_id": test["product_id"], "reference": test["description"]})
        decodings = list(settings.get("decodings", ["greedy", "beam"]))
        start = time.perf_counter()
        rows = caption_paths(  # each image read and preprocessed once for all decodings
            captioner,
            test["processed_path"].tolist(),
            batch_size=int(settings.get("batch_size", 32)),
            decoding=decodings,
            num_workers=int(settings.get("num_workers", 1)),
            **(params.get("generation") or {}),
        )
        failed = [r for r in rows if r["status"] != "ok"]
        if failed:
            raise RuntimeError(
                f"{len(failed)} test images could not be read (e.g. {failed[0]['path']}: "
                f"{failed[0]['error']}); rerun `kedro run --pipeline=image_processing`"
            )
        for decoding in decodings:
            out[decoding] = [r.get("captions", {decoding: r["caption"]})[decoding] for r in rows]
        seconds = time.perf_counter() - start
        logger.info(
            "captioning: %d test images captioned (%s; %s) in %.1f s (%.3f s/image)",
            len(test),
            " + ".join(decodings),
            captioner.precision,
            seconds,
            seconds / max(len(test), 1),
        )

    return out


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
    train, test = _split(splits, "train"), _split(splits, "test")
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


def corpus_sacrebleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU of ``sacrebleu`` with its default settings (13a tokenisation), 0-100."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


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
