"""Pair matching nodes: candidate search over the whole catalogue, scoring, recall."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from vitrina.embeddings import Embeddings
from vitrina.models.pair_matching import (
    PairMatcher,
    candidate_pairs,
    candidate_recall,
    index_items,
    match_groups,
    mining_source,
)

logger = logging.getLogger(__name__)

RECALL_COLUMNS = ["scope", "k", "n_positive", "n_retrieved", "recall", "n_candidates"]


def search_candidates(
    pair_items: pd.DataFrame, embeddings: Embeddings, params: dict[str, Any]
) -> pd.DataFrame:
    """Top-``k`` nearest neighbours of every item over the whole catalogue (FAISS).

    Args:
        params: ``pair_matching`` parameters; ``candidates``: ``k``, ``modality``
            (``text``, ``image``, ``text+image``), ``index`` (see
            :class:`vitrina.models.pair_matching.IndexConfig`).

    Returns:
        ``left_id, right_id, similarity, rank`` (unordered pairs, each once).

    The vectors are indexed and searched ``index.chunk`` rows at a time; embeddings
    already in the items' order are used as they are (a memory-mapped ``Embeddings`` is
    not copied), and ``text+image`` is concatenated chunk by chunk.
    """
    cfg = params.get("candidates") or {}
    k = int(cfg.get("k", 10))
    index = {
        "seed": int(params.get("seed", 42)),
        "threads": params.get("threads"),
        **{k: v for k, v in (cfg.get("index") or {}).items() if v is not None},
    }
    wanted = pair_items["item_id"].astype(str).to_numpy()
    emb = embeddings if np.array_equal(embeddings.ids, wanted) else embeddings.align(wanted)
    source = mining_source(emb, cfg.get("modality", "text+image"), int(index.get("chunk", 100_000)))
    out = candidate_pairs(emb.ids, source, k, index)
    logger.info(
        "pair_matching: %d candidate pairs from top-%d search over %d items", len(out), k, len(emb)
    )
    return out


def score_candidates(
    candidates: pd.DataFrame,
    pair_matcher: PairMatcher,
    pair_items: pd.DataFrame,
    embeddings: Embeddings,
    params: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score candidate pairs with the trained matcher; group accepted pairs.

    Args:
        params: ``candidates.match_threshold`` (``null``: the matcher's validation
            threshold), ``candidates.batch_size``.

    Returns:
        ``matched_pairs`` (``left_id, right_id, similarity, rank, score`` with
        ``score >= threshold``, best first) and ``match_groups`` (``product_id,
        match_group, group_size``: connected components of the matched pairs; every item
        appears, unmatched ones alone).
    """
    cfg = params.get("candidates") or {}
    threshold = cfg.get("match_threshold")
    threshold = pair_matcher.threshold if threshold is None else float(threshold)
    items = index_items(pair_items)
    score = pair_matcher.predict_proba(
        candidates["left_id"],
        candidates["right_id"],
        items,
        embeddings,
        batch_size=int(cfg.get("batch_size", 50_000)),
        threads=params.get("threads"),
    )
    scored = candidates.assign(score=score)
    matched = scored[scored["score"] >= threshold].sort_values(
        "score", ascending=False, kind="stable"
    )
    groups = match_groups(items.index.to_numpy(), matched)
    logger.info(
        "pair_matching: %d of %d candidate pairs matched (threshold %.3f): %d groups of 2+ items",
        len(matched),
        len(candidates),
        threshold,
        int((groups.drop_duplicates("match_group")["group_size"] > 1).sum()),
    )
    return matched.reset_index(drop=True), groups


def candidate_recall_report(
    candidates: pd.DataFrame,
    pair_items: pd.DataFrame,
    pair_splits: pd.DataFrame,
    params: dict[str, Any],
) -> pd.DataFrame:
    """Recall of the candidate step: the share of known matches within the top-``k``.

    Scopes: ``labelled`` (every positive pair of ``pair_splits``), ``labelled_test``, and,
    when items carry ``group_id``, ``group_id`` (every pair of items sharing a group in
    the whole catalogue: the complete truth for catalogue pairs).

    Returns:
        :data:`RECALL_COLUMNS`, one row per scope.
    """
    k = int((params.get("candidates") or {}).get("k", 10))
    rows = []
    pos = pair_splits[pair_splits["label"] == 1]
    scopes = {"labelled": pos, "labelled_test": pos[pos["split"] == "test"]}
    if "group_id" in pair_items.columns:
        g = pair_items[["item_id", "group_id"]].astype(str)
        sizes = g["group_id"].map(g["group_id"].value_counts())
        g = g[sizes > 1]
        pairs = g.merge(g, on="group_id")
        scopes["group_id"] = pairs[pairs["item_id_x"] < pairs["item_id_y"]].rename(
            columns={"item_id_x": "left_id", "item_id_y": "right_id"}
        )
    for scope, positives in scopes.items():
        r = candidate_recall(candidates, positives)
        rows.append({"scope": scope, "k": k, **r})
        logger.info(
            "pair_matching: candidate recall@%d (%s) = %.4f of %d matches",
            k,
            scope,
            r["recall"],
            r["n_positive"],
        )
    return pd.DataFrame(rows, columns=RECALL_COLUMNS)
