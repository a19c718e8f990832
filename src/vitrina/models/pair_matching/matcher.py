"""The pair matcher: a fitted feature builder, a fitted classifier and its threshold.

:func:`fit_pair_matchers` fits one :class:`.features.PairFeatureBuilder` on the training
pairs and every configured classifier on its features (:mod:`.estimators`), each with
the F1-optimal validation threshold (:func:`.metrics.select_threshold`); a
:class:`PairMatcher` scores pairs of item ids and round-trips through a directory
(:mod:`.persistence`, no pickle).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import skops.io as skops_io
from sklearn.metrics import average_precision_score
from tqdm.auto import tqdm

from vitrina.embeddings import Embeddings
from vitrina.utils import limit_threads

from .baselines import build_baseline, fit_baseline
from .ensemble import EnsembleEstimator
from .estimators import MLPPairEstimator
from .features import FeatureConfig, PairFeatureBuilder, fit_feature_builder
from .metrics import check_labels, select_threshold
from .persistence import FORMAT, jsonable, load_estimator, load_skops, save_estimator

logger = logging.getLogger(__name__)


@dataclass
class PairMatcher:
    """A fitted feature builder, a fitted classifier and its decision threshold.

    Attributes:
        builder: fitted :class:`PairFeatureBuilder`.
        estimator: fitted :class:`MLPPairEstimator` (``kind="mlp"``), scikit-learn
            classifier (``kind="baseline"``) or :class:`EnsembleEstimator`
            (``kind="ensemble"``); anything with ``predict_proba``.
        kind: ``mlp``, ``baseline`` or ``ensemble``.
        threshold: match when the probability is ``>= threshold`` (chosen on validation).
        info: free-form metadata saved with the model (variant, metrics, training sizes).
    """

    builder: PairFeatureBuilder
    estimator: Any
    kind: str
    threshold: float = 0.5
    info: dict[str, Any] = field(default_factory=dict)

    def predict_proba(
        self,
        left_ids: Sequence[str] | np.ndarray,
        right_ids: Sequence[str] | np.ndarray,
        items: pd.DataFrame | None,
        embeddings: Embeddings | None,
        batch_size: int = 50_000,
        threads: int | None = None,
    ) -> np.ndarray:
        """Match probabilities ``float32 [P]`` of the pairs, computed in batches of pairs
        (``threads``: see :func:`limit_threads`)."""
        left_ids, right_ids = np.asarray(left_ids).astype(str), np.asarray(right_ids).astype(str)
        out = np.empty(len(left_ids), dtype=np.float32)
        starts = range(0, len(left_ids), batch_size)
        with limit_threads(threads):
            for s in tqdm(
                starts,
                desc="scoring pairs",
                unit="batch",
                disable=None if len(starts) > 1 else True,
                leave=False,
            ):
                x = self.builder.transform(
                    left_ids[s : s + batch_size], right_ids[s : s + batch_size], items, embeddings
                )
                out[s : s + batch_size] = self.estimator.predict_proba(x)[:, 1]
        return out

    # -- persistence
    def save(self, path: str | Path) -> None:
        """Write ``config.json``, ``features.skops`` and the estimator into the directory
        ``path`` (created): ``model.pt`` (MLP state dict and feature scaler) +
        ``history.csv``, or ``baseline.skops``; an ensemble writes each member as
        ``<member>.pt`` / ``<member>.skops``. No pickle: skops files name every type they
        hold, and :meth:`load` builds only :data:`.persistence.SKOPS_TRUSTED` ones."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {
            "format": FORMAT,
            "kind": self.kind,
            "threshold": self.threshold,
            "features": asdict(self.builder.config_),
            "feature_dims": self.builder.dims_,
            "n_features": len(self.builder.feature_names),
            "info": jsonable(self.info),
        }
        skops_io.dump(self.builder, path / "features.skops")
        if self.kind == "ensemble":
            ens: EnsembleEstimator = self.estimator
            config["members"] = {
                name: save_estimator(est, path, name) for name, est in ens.members_.items()
            }
            config["weights"] = ens.weights_
        else:
            config.update(
                save_estimator(self.estimator, path, "model" if self.kind == "mlp" else "baseline")
            )
        (path / "config.json").write_text(
            json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8"
        )

    @classmethod
    def load(cls, path: str | Path) -> PairMatcher:
        """Read a directory written by :meth:`save`.

        Raises:
            FileNotFoundError: ``config.json`` or a model file is missing (a directory of
                an older Vitrina, with pickled ``.joblib`` files, is refused: train again).
            skops.io.exceptions.UntrustedTypesFoundException: a file holds a type outside
                :data:`.persistence.SKOPS_TRUSTED` (tampered with, or not written by Vitrina).
            ValueError: the directory was written in another format (an older Vitrina).
        """
        path = Path(path)
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if config.get("format") != FORMAT:
            if (path / "features.joblib").is_file():
                load_skops(path / "features.skops")  # raises: pickled files are not loaded
            raise ValueError(
                f"{path} holds a pair matcher of format {config.get('format')!r}, written by "
                f"an older Vitrina (this one reads format {FORMAT}): train it again "
                "(`kedro run --pipeline=pair_matching`)"
            )
        builder = load_skops(path / "features.skops")
        if config["kind"] == "ensemble":
            members = {
                name: load_estimator(path, name, meta) for name, meta in config["members"].items()
            }
            estimator: Any = EnsembleEstimator.of_fitted(members, config.get("weights"))
        else:
            stem = "model" if config["kind"] == "mlp" else "baseline"
            estimator = load_estimator(path, stem, config)
        return cls(
            builder=builder,
            estimator=estimator,
            kind=config["kind"],
            threshold=float(config["threshold"]),
            info=config.get("info", {}),
        )


def fit_pair_matchers(
    train: pd.DataFrame,
    val: pd.DataFrame,
    items: pd.DataFrame | None,
    embeddings: Embeddings | None,
    features: FeatureConfig | dict[str, Any],
    classifiers: dict[str, dict[str, Any]],
    seed: int = 42,
    threads: int | None = None,
) -> tuple[dict[str, PairMatcher], dict[str, pd.DataFrame]]:
    """Fit one feature builder and every configured classifier on the same features.

    Args:
        train, val: pairs ``left_id, right_id, label``.
        items: item table indexed by id (string features), or None.
        embeddings: the items' embeddings, or None.
        features: :class:`FeatureConfig` or its keyword arguments.
        classifiers: ``{name: spec}``; a spec has ``type`` ``mlp`` (keys ``model``,
            ``train``: :meth:`.estimators.MLPPairEstimator.from_blocks`),
            ``hist_gbdt`` / ``logreg`` (key ``params``) or ``ensemble`` (keys ``members``:
            names of other classifiers, default all; ``weights``): the mean of their
            probabilities, with its own validation threshold. A ``None`` spec is skipped
            (how an environment switches off a classifier of ``conf/base``).
        seed: seed of every estimator.
        threads: cap on torch/OpenMP threads while fitting (:func:`limit_threads`).

    Returns:
        ``({name: PairMatcher with its F1-optimal validation threshold}, {name: history})``
        (history: MLP epochs; empty for scikit-learn estimators).

    Raises:
        ValueError: the training pairs hold one class only; an unknown classifier type.
    """
    with limit_threads(threads):
        check_labels(train["label"].to_numpy())
        builder = fit_feature_builder(train, items, embeddings, features)
        x_tr = builder.transform(train["left_id"], train["right_id"], items, embeddings)
        x_va = builder.transform(val["left_id"], val["right_id"], items, embeddings)
        y_tr, y_va = train["label"].to_numpy().astype(int), val["label"].to_numpy().astype(int)
        matchers, histories = {}, {}
        active = {n: s for n, s in classifiers.items() if s is not None}  # null switches one off
        ordered = sorted(active, key=lambda n: (active[n] or {}).get("type") == "ensemble")
        for name in ordered:  # ensembles last, whatever the configured order
            spec = dict(active[name])
            kind = spec.pop("type", name)
            if kind == "mlp":
                est: Any = MLPPairEstimator.from_blocks(
                    spec.get("model"), {"seed": seed, **(spec.get("train") or {})}
                )
                est.fit(x_tr, y_tr, X_val=x_va, y_val=y_va)
                histories[name] = est.history_
                matcher_kind = "mlp"
            elif kind == "ensemble":
                names = list(spec.get("members") or [n for n in matchers])
                missing = [n for n in names if n not in matchers]
                if missing:
                    raise ValueError(
                        f"Ensemble {name!r} names members {missing} that are not trained "
                        f"classifiers ({list(matchers)})"
                    )
                est = EnsembleEstimator.of_fitted(
                    {n: matchers[n].estimator for n in names}, spec.get("weights")
                )
                histories[name] = pd.DataFrame()
                matcher_kind = "ensemble"
            elif kind in ("hist_gbdt", "logreg"):
                est = fit_baseline(
                    build_baseline(kind, spec.get("params"), seed=seed), x_tr, y_tr, x_va, y_va
                )
                histories[name] = pd.DataFrame()
                matcher_kind = "baseline"
            else:
                raise ValueError(
                    f"Unknown classifier type {kind!r} for {name!r}; expected mlp, hist_gbdt, "
                    "logreg or ensemble"
                )
            val_scores = est.predict_proba(x_va)[:, 1]
            threshold, val_f1 = select_threshold(y_va, val_scores)
            matchers[name] = PairMatcher(
                builder=builder,
                estimator=est,
                kind=matcher_kind,
                threshold=threshold,
                info={
                    "classifier": name,
                    "type": kind,
                    "val_f1": val_f1,
                    "val_pr_auc": float(average_precision_score(y_va, val_scores))
                    if 0 < y_va.sum() < len(y_va)
                    else math.nan,
                    "n_train": int(len(y_tr)),
                    "n_train_positive": int(y_tr.sum()),
                    "n_val": int(len(y_va)),
                    "n_features": int(x_tr.shape[1]),
                },
            )
            logger.info(
                "pair matcher %s: validation F1 %.4f at threshold %.3f (%d train pairs, %d features)",
                name,
                val_f1,
                threshold,
                len(y_tr),
                x_tr.shape[1],
            )
        return matchers, histories
