"""Pair matching nodes: source adapters, training and evaluation.

Candidate search is in :mod:`.candidates`, plots and reports in :mod:`.reporting`; the
library they call is :mod:`vitrina.models.pair_matching`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from vitrina.embeddings import Embeddings
from vitrina.models.pair_matching import (
    PairData,
    PairMatcher,
    binary_metrics,
    catalogue_pair_data,
    competition_pair_data,
    er_magellan_pair_data,
    finalise,
    fit_pair_matchers,
    index_items,
    products_pair_data,
    variant_features,
)
from vitrina.models.pair_matching.layouts import BenchmarkData
from vitrina.utils import limit_threads

logger = logging.getLogger(__name__)

SOURCES = ("catalogue", "pairs", "competition", "er_magellan")
METRICS = ["accuracy", "precision", "recall", "f1", "pr_auc"]
METRIC_COLUMNS = [
    "variant",
    "classifier",
    "selected",
    *METRICS,
    "threshold",
    "val_f1",
    "n_pairs",
    "n_positive",
]
SCORE_COLUMNS = [
    "variant",
    "classifier",
    "selected",
    "left_id",
    "right_id",
    "label",
    "score",
    "threshold",
    "val_f1",
]


# ---------------------------------------------------------------------- sources
def _check_source(params: dict[str, Any], expected: str) -> None:
    source = params.get("source", "catalogue")
    if source != expected:
        raise ValueError(
            f"pair_matching.source is {source!r} but the pipeline was built for {expected!r}: the "
            "pipeline's inputs follow the parameters files of conf/base and the environment "
            "(KEDRO_ENV or kedro run --env), not --params; set the source in an environment's "
            "parameters_pair_matching.yml"
        )


def _outputs(
    data: PairData, params: dict[str, Any]
) -> tuple[pd.DataFrame, Embeddings, pd.DataFrame, pd.DataFrame]:
    data = finalise(data, params)
    return data.items, data.embeddings, data.pairs, data.report_frame()


def prepare_catalogue_pairs(
    products: pd.DataFrame, embeddings: Embeddings, params: dict[str, Any]
) -> tuple[pd.DataFrame, Embeddings, pd.DataFrame, pd.DataFrame]:
    """Layout 4: pairs from ``group_id`` (matches) and nearest other groups (hard negatives).

    Args:
        products: canonical products.
        embeddings: one model's embeddings (``pair_matching_embeddings``).
        params: ``pair_matching`` parameters.

    Returns:
        ``pair_items`` (``item_id`` + product columns), ``pair_item_embeddings``,
        ``pair_splits`` (``left_id, right_id, label, split``), ``pair_data_report``.
    """
    _check_source(params, "catalogue")
    return _outputs(catalogue_pair_data(products, embeddings, params), params)


def prepare_product_pairs(
    products: pd.DataFrame, embeddings: Embeddings, pairs: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, Embeddings, pd.DataFrame, pd.DataFrame]:
    """Layout 2: products + embeddings NPZ + a ``left_id, right_id, label`` table, split
    grouped so no item is on two sides (see :func:`vitrina.models.pair_matching.split_pairs`)."""
    _check_source(params, "pairs")
    return _outputs(products_pair_data(products, embeddings, pairs, params), params)


def prepare_competition_pairs(
    text_items: pd.DataFrame, image_items: pd.DataFrame, pairs: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, Embeddings, pd.DataFrame, pd.DataFrame]:
    """Layout 1: the seed competition's parquet tables (``params["competition"]`` names
    the columns)."""
    _check_source(params, "competition")
    return _outputs(
        competition_pair_data(text_items, image_items, pairs, params.get("competition") or {}),
        params,
    )


def prepare_er_magellan_pairs(
    source: BenchmarkData, params: dict[str, Any]
) -> tuple[pd.DataFrame, Embeddings, pd.DataFrame, pd.DataFrame]:
    """Layout 3: an ER-Magellan dataset with its own splits (text embeddings by LSA)."""
    _check_source(params, "er_magellan")
    return _outputs(er_magellan_pair_data(source, params), params)


def train_pair_matchers(
    pair_items: pd.DataFrame,
    embeddings: Embeddings,
    pair_splits: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[PairMatcher, pd.DataFrame, pd.DataFrame]:
    """Train every classifier on every feature variant; keep the primary variant's best.

    For each ``variants`` entry (feature configuration over ``features``: modalities,
    string and numeric fields) one feature builder is fitted on the training pairs and
    every ``classifiers`` entry (the MLP, the scikit-learn baseline) is trained on it with
    early stopping on ``val``; each gets the validation threshold that maximises F1 and is
    scored on ``test``. The model kept is the ``primary_variant``'s classifier named by
    ``select`` (``best``: the higher validation F1).

    Returns:
        ``pair_matcher`` (the kept :class:`PairMatcher`), ``pair_test_scores``
        (:data:`SCORE_COLUMNS`, one row per test pair × variant × classifier) and
        ``pair_training_history`` (``variant, classifier, epoch, train_loss, val_loss,
        val_pr_auc``).

    Raises:
        ValueError: the training pairs hold one class only; ``primary_variant`` or
            ``select`` names nothing configured; a split is empty.
    """
    # `name: null` switches off a variant or classifier of conf/base in an environment
    # (parameters are merged key by key, so an environment cannot delete a key).
    variants = {k: v for k, v in params["variants"].items() if v is not None}
    classifiers = {k: v for k, v in params["classifiers"].items() if v is not None}
    primary = params.get("primary_variant") or next(iter(variants))
    select = params.get("select", "best")
    if primary not in variants:
        raise ValueError(f"primary_variant {primary!r} is not among the variants {list(variants)}")
    if select != "best" and select not in classifiers:
        raise ValueError(
            f"select {select!r} must be 'best' or one of the classifiers {list(classifiers)}"
        )
    items = index_items(pair_items)
    parts = {s: pair_splits[pair_splits["split"] == s] for s in ("train", "val", "test")}
    for s, part in parts.items():
        if part.empty:
            raise ValueError(f"The {s} split has no pairs ({len(pair_splits)} pairs in all)")
    seed = int(params.get("seed", 42))
    scores, histories, kept = [], [], {}
    for variant, spec in variants.items():
        logger.info("pair_matching: training variant %s", variant)
        matchers, hist = fit_pair_matchers(
            parts["train"],
            parts["val"],
            items,
            embeddings,
            variant_features(params.get("features"), spec, items),
            classifiers,
            seed=seed,
            threads=params.get("threads"),
        )
        test = parts["test"]
        builder = next(iter(matchers.values())).builder
        x_test = builder.transform(test["left_id"], test["right_id"], items, embeddings)
        with limit_threads(params.get("threads")):
            test_scores = {n: m.estimator.predict_proba(x_test)[:, 1] for n, m in matchers.items()}
        best = max(matchers, key=lambda n: np.nan_to_num(matchers[n].info["val_f1"], nan=-1.0))
        chosen = best if select == "best" else select
        for name, matcher in matchers.items():
            score = test_scores[name]
            scores.append(
                pd.DataFrame(
                    {
                        "variant": variant,
                        "classifier": name,
                        "selected": variant == primary and name == chosen,
                        "left_id": test["left_id"].to_numpy(),
                        "right_id": test["right_id"].to_numpy(),
                        "label": test["label"].to_numpy().astype(np.int64),
                        "score": score.astype(np.float32),
                        "threshold": matcher.threshold,
                        "val_f1": matcher.info["val_f1"],
                    }
                )
            )
            if not hist[name].empty:
                histories.append(hist[name].assign(variant=variant, classifier=name))
            m = binary_metrics(test["label"].to_numpy(), score, matcher.threshold)
            logger.info(
                "pair_matching: %-20s %-10s test F1 %.4f  PR-AUC %.4f  (val F1 %.4f)",
                variant,
                name,
                m["f1"],
                m["pr_auc"],
                matcher.info["val_f1"],
            )
            if variant == primary:
                kept[name] = matcher
    matcher = kept[chosen]
    matcher.info.update(
        {"variant": primary, "select": select, "source": params.get("source", "catalogue")}
    )
    logger.info(
        "pair_matching: keeping %s / %s (threshold %.3f)", primary, chosen, matcher.threshold
    )
    history = (
        pd.concat(histories, ignore_index=True)[
            ["variant", "classifier", "epoch", "train_loss", "val_loss", "val_pr_auc"]
        ]
        if histories
        else pd.DataFrame(
            columns=["variant", "classifier", "epoch", "train_loss", "val_loss", "val_pr_auc"]
        )
    )
    return matcher, pd.concat(scores, ignore_index=True)[SCORE_COLUMNS], history


def evaluate_pair_matchers(test_scores: pd.DataFrame) -> pd.DataFrame:
    """Test metrics per variant × classifier at each one's validation threshold.

    Returns:
        :data:`METRIC_COLUMNS`: accuracy, precision, recall, F1, PR-AUC, the threshold,
        the validation F1, pair counts; ``selected`` marks the kept model.
    """
    rows = []
    for (variant, classifier), df in test_scores.groupby(["variant", "classifier"], sort=False):
        m = binary_metrics(
            df["label"].to_numpy(), df["score"].to_numpy(), float(df["threshold"].iloc[0])
        )
        selected = bool(df["selected"].iloc[0])
        rows.append(
            {
                "variant": variant,
                "classifier": classifier,
                "selected": selected,
                **{k: m[k] for k in METRICS},
                "threshold": m["threshold"],
                "val_f1": float(df["val_f1"].iloc[0]),
                "n_pairs": m["n_pairs"],
                "n_positive": m["n_positive"],
            }
        )
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)
