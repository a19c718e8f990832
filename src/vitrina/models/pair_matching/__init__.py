"""Pair matching: are two listings the same product?

The pieces, in the order a pair goes through them:

* :mod:`.pairs` / :mod:`.layouts` / :mod:`.text_embeddings` — every input layout to one
  shape (:class:`PairData`: items, embeddings, labelled and split pairs, a report of what
  was dropped);
* :mod:`.features` (with :mod:`.strings`) — :class:`PairFeatureBuilder`, one
  order-independent feature row per pair;
* :mod:`.estimators`, :mod:`.baselines`, :mod:`.ensemble` — scikit-learn classifiers on
  those rows: the MLP (:class:`MLPPairEstimator`, trained on the engine by :mod:`.mlp`),
  gradient boosting / logistic regression, their ensemble;
* :mod:`.metrics` — the F1-optimal threshold and the test scores;
* :mod:`.matcher` (with :mod:`.persistence`) — :class:`PairMatcher`, a fitted builder, a
  fitted classifier and its threshold, saved without pickle;
* :mod:`.candidates` — FAISS candidate search over a whole catalogue and match groups.
"""

from .baselines import FillEmptyColumns, build_baseline, fit_baseline
from .candidates import (
    CandidateIndex,
    IndexConfig,
    candidate_pairs,
    candidate_recall,
    match_groups,
)
from .ensemble import EnsembleEstimator, fit_classifier
from .estimators import MODEL_PARAMS, TRAIN_PARAMS, FeatureScaler, MLPPairEstimator
from .features import (
    FeatureConfig,
    PairFeatureBuilder,
    feature_config,
    fit_feature_builder,
    variant_features,
)
from .item_embeddings import text_embeddings_lsa, vectors_from_column
from .layouts import (
    catalogue_pair_data,
    catalogue_pairs,
    competition_pair_data,
    er_magellan_pair_data,
    mining_source,
    mining_vectors,
    products_pair_data,
    split_items_by_group,
)
from .matcher import PairMatcher, fit_pair_matchers
from .metrics import binary_metrics, check_labels, select_threshold
from .mlp import PairwiseBinaryClassifier, train_pair_mlp
from .pairs import (
    PAIR_COLUMNS,
    REPORT_COLUMNS,
    SPLITS,
    PairData,
    clean_pairs,
    finalise,
    index_items,
    split_pairs,
)
from .strings import model_codes, numbers, to_float

__all__ = [
    "MODEL_PARAMS",
    "PAIR_COLUMNS",
    "REPORT_COLUMNS",
    "SPLITS",
    "TRAIN_PARAMS",
    "CandidateIndex",
    "EnsembleEstimator",
    "FeatureConfig",
    "FeatureScaler",
    "FillEmptyColumns",
    "IndexConfig",
    "MLPPairEstimator",
    "PairData",
    "PairFeatureBuilder",
    "PairMatcher",
    "PairwiseBinaryClassifier",
    "binary_metrics",
    "build_baseline",
    "candidate_pairs",
    "candidate_recall",
    "catalogue_pair_data",
    "catalogue_pairs",
    "check_labels",
    "clean_pairs",
    "competition_pair_data",
    "er_magellan_pair_data",
    "feature_config",
    "finalise",
    "fit_baseline",
    "fit_classifier",
    "fit_feature_builder",
    "fit_pair_matchers",
    "index_items",
    "match_groups",
    "mining_source",
    "mining_vectors",
    "model_codes",
    "numbers",
    "products_pair_data",
    "select_threshold",
    "split_items_by_group",
    "split_pairs",
    "text_embeddings_lsa",
    "to_float",
    "train_pair_mlp",
    "variant_features",
    "vectors_from_column",
]
