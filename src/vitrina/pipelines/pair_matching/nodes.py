"""Pair matching nodes: source adapters, training, evaluation, reports, candidate search."""

from __future__ import annotations

import logging
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import precision_recall_curve  # noqa: E402

from vitrina.datasets.er_magellan import ErMagellanData  # noqa: E402
from vitrina.embeddings import Embeddings  # noqa: E402
from vitrina.models.candidates import (  # noqa: E402
    candidate_pairs,
    candidate_recall,
    match_groups,
)
from vitrina.models.pair_classifier import (  # noqa: E402
    PairMatcher,
    binary_metrics,
    fit_pair_matchers,
    limit_threads,
)

from .adapters import (  # noqa: E402
    PairData,
    catalogue_pair_data,
    competition_pair_data,
    er_magellan_pair_data,
    finalise,
    mining_vectors,
    products_pair_data,
)

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
RECALL_COLUMNS = ["scope", "k", "n_positive", "n_retrieved", "recall", "n_candidates"]


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
    grouped so no item is on two sides (see :func:`.adapters.split_pairs`)."""
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
    source: ErMagellanData, params: dict[str, Any]
) -> tuple[pd.DataFrame, Embeddings, pd.DataFrame, pd.DataFrame]:
    """Layout 3: an ER-Magellan dataset with its own splits (text embeddings by LSA)."""
    _check_source(params, "er_magellan")
    return _outputs(er_magellan_pair_data(source, params), params)


# ---------------------------------------------------------------------- training
def _indexed(items: pd.DataFrame) -> pd.DataFrame:
    return items.assign(item_id=items["item_id"].astype(str)).set_index("item_id")


NOT_TEXT = {"item_id", "side", "group_id", "image_path"}


def _variant_features(
    params: dict[str, Any], spec: dict[str, Any], items: pd.DataFrame
) -> dict[str, Any]:
    """``features`` overridden by the variant; ``string_fields: auto`` means every text
    column of the items except ids, sides, groups, image paths and ``numeric_fields``
    (ER-Magellan datasets name their attributes differently)."""
    features = {**(params.get("features") or {}), **(spec or {})}
    if features.get("string_fields") == "auto":
        skip = NOT_TEXT | set(features.get("numeric_fields") or [])
        features["string_fields"] = [
            c
            for c in items.columns
            if c not in skip
            and (pd.api.types.is_string_dtype(items[c]) or items[c].dtype == object)
        ]
    return features


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
    items = _indexed(pair_items)
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
            _variant_features(params, spec, items),
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


# ---------------------------------------------------------------------- plots
def plot_pr_curves(test_scores: pd.DataFrame) -> plt.Figure:
    """Precision-recall curves on the test split: one panel per classifier, one line per
    variant (average precision in the legend); the operating point of each threshold
    is marked."""
    classifiers = list(dict.fromkeys(test_scores["classifier"]))
    fig, axes = plt.subplots(
        1, len(classifiers), figsize=(4.6 * len(classifiers), 4.2), squeeze=False, sharey=True
    )
    colours = plt.get_cmap("tab10").colors
    for ax, clf in zip(axes[0], classifiers, strict=True):
        for k, (variant, df) in enumerate(
            test_scores[test_scores["classifier"] == clf].groupby("variant", sort=False)
        ):
            y, s = df["label"].to_numpy(), df["score"].to_numpy()
            if y.sum() == 0:
                continue
            p, r, _ = precision_recall_curve(y, s)
            m = binary_metrics(y, s, float(df["threshold"].iloc[0]))
            colour = colours[k % len(colours)]
            ax.plot(
                r,
                p,
                color=colour,
                lw=1.6,
                label=f"{variant} (AP {m['pr_auc']:.3f}, F1 {m['f1']:.3f})",
            )
            ax.plot([m["recall"]], [m["precision"]], "o", color=colour, ms=5)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_title(clf, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0][0].set_ylabel("precision")
    fig.suptitle(
        "Pair matching: precision-recall on the test split (dot: chosen threshold)",
        fontsize=10,
        x=0.01,
        ha="left",
    )
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def plot_loss_curves(history: pd.DataFrame) -> plt.Figure:
    """MLP training and validation loss per epoch, one panel per variant × classifier."""
    keys = list(dict.fromkeys(zip(history["variant"], history["classifier"], strict=True))) or [
        ("-", "-")
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    for ax, (variant, clf) in zip(axes[0], keys, strict=True):
        df = history[(history["variant"] == variant) & (history["classifier"] == clf)]
        ax.plot(df["epoch"], df["train_loss"], label="train", lw=1.5)
        ax.plot(df["epoch"], df["val_loss"], label="validation", lw=1.5)
        if len(df):
            best = df.loc[df["val_pr_auc"].fillna(-1).idxmax()]
            ax.axvline(best["epoch"], color="grey", ls=":", lw=1)
        ax.set_title(f"{variant} · {clf}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("weighted BCE")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        "Pair MLP loss (dotted: epoch kept by early stopping)", fontsize=10, x=0.01, ha="left"
    )
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


def plot_metrics_chart(metrics: pd.DataFrame) -> plt.Figure:
    """Test accuracy, precision, recall, F1 and PR-AUC: one panel per metric, one bar per
    variant × classifier (the kept model hatched and starred)."""
    labels = [
        f"{r.variant} · {r.classifier}" + (" *" if r.selected else "") for r in metrics.itertuples()
    ]
    variants = list(dict.fromkeys(metrics["variant"]))
    colours = plt.get_cmap("tab10").colors
    colour = [colours[variants.index(v) % len(colours)] for v in metrics["variant"]]
    fig, axes = plt.subplots(
        1, len(METRICS), figsize=(2.6 * len(METRICS) + 1.5, 0.32 * len(labels) + 1.4), sharey=True
    )
    ys = np.arange(len(labels))[::-1]
    for ax, m in zip(np.atleast_1d(axes), METRICS, strict=True):
        values = metrics[m].to_numpy(dtype=float)
        bars = ax.barh(ys, np.nan_to_num(values), color=colour, height=0.75)
        for bar, selected in zip(bars, metrics["selected"], strict=True):
            if selected:
                bar.set_hatch("//")
                bar.set_edgecolor("black")
        for y, v in zip(ys, values, strict=True):
            if not np.isnan(v):
                ax.text(
                    min(v, 0.98), y, f"{v:.3f}", va="center", ha="right", fontsize=6, color="white"
                )
        ax.set_xlim(0, 1)
        ax.set_title(m, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    np.atleast_1d(axes)[0].set_yticks(ys, labels, fontsize=7)
    fig.suptitle("Pair matching: test metrics (* = kept model)", fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- candidates
def search_candidates(
    pair_items: pd.DataFrame, embeddings: Embeddings, params: dict[str, Any]
) -> pd.DataFrame:
    """Top-``k`` nearest neighbours of every item over the whole catalogue (FAISS).

    Args:
        params: ``pair_matching`` parameters; ``candidates``: ``k``, ``modality``
            (``text``, ``image``, ``text+image``), ``index`` (see
            :class:`vitrina.models.candidates.IndexConfig`).

    Returns:
        ``left_id, right_id, similarity, rank`` (unordered pairs, each once).
    """
    cfg = params.get("candidates") or {}
    k = int(cfg.get("k", 10))
    emb = embeddings.align(pair_items["item_id"].astype(str))
    vectors = mining_vectors(emb, cfg.get("modality", "text+image"))
    out = candidate_pairs(
        emb.ids,
        vectors,
        k,
        {
            "seed": int(params.get("seed", 42)),
            "threads": params.get("threads"),
            **{k: v for k, v in (cfg.get("index") or {}).items() if v is not None},
        },
    )
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
    items = _indexed(pair_items)
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


# ---------------------------------------------------------------------- reports
def pair_matching_metrics_for_mlflow(
    metrics: pd.DataFrame, recall: pd.DataFrame
) -> dict[str, dict[str, float]]:
    """``{"<variant>.<classifier>.<metric>": {"value", "step"}}`` plus
    ``candidates.recall.<scope>`` for MLflow (NaN left out)."""
    out = {}
    for r in metrics.itertuples():
        for m in METRICS:
            value = float(getattr(r, m))
            if not math.isnan(value):
                out[f"{r.variant}.{r.classifier}.{m}"] = {"value": value, "step": 0}
    for r in recall.itertuples():
        if not math.isnan(float(r.recall)):
            out[f"candidates.recall.{r.scope}"] = {"value": float(r.recall), "step": 0}
    return out


def _markdown(df: pd.DataFrame) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "—" if math.isnan(v) else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_pair_matching_summary(
    metrics: pd.DataFrame, recall: pd.DataFrame, report: pd.DataFrame, pair_matcher: PairMatcher
) -> str:
    """Markdown summary: input report, test metrics, the kept model, candidate recall."""
    info = pair_matcher.info
    lines = [
        "# Pair matching summary",
        "",
        f"Kept model: variant **{info.get('variant')}**, classifier **{info.get('classifier')}** "
        f"({pair_matcher.kind}), threshold {pair_matcher.threshold:.4f} (validation F1 "
        f"{info.get('val_f1', float('nan')):.4f}), {info.get('n_features')} features, "
        f"{info.get('n_train')} training pairs.",
        "",
        "## Input",
        "",
        _markdown(report),
        "",
        "## Test metrics",
        "",
        _markdown(metrics),
        "",
        "## Candidate recall",
        "",
        _markdown(recall),
        "",
    ]
    return "\n".join(lines)


def register_pair_matcher_model(
    pair_matcher: PairMatcher,
    pair_items: pd.DataFrame,
    embeddings: Embeddings,
    mlflow_params: dict[str, Any],
) -> dict[str, Any]:
    """Log the kept pair matcher as an MLflow model and register it
    (``<prefix>-pair-classifier``).

    Only with ``mlflow.register_models: true``; see :mod:`vitrina.registry` (a ``pyfunc``
    scoring ``left_id, right_id`` pairs of the catalogue's items, which it carries with
    their embeddings; the version is tagged with classifier, variant, threshold and
    validation F1).

    Args:
        pair_matcher: output of :func:`train_pair_matchers`.
        pair_items, embeddings: the prepared items and their embeddings.
        mlflow_params: the ``mlflow`` parameters (``register_models``,
            ``model_name_prefix``).

    Returns:
        ``{"registered", "name", "version", "model_uri", "run_id"}`` (``registered``
        false and no version when registration is off).
    """
    from vitrina.registry import register_pair_matcher

    return register_pair_matcher(pair_matcher, pair_items, embeddings, mlflow_params)
