"""Pair classifier (features, MLP, baseline, threshold, persistence) and candidate search."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from vitrina.datasets.pair_matcher import PairMatcherDataset
from vitrina.embeddings import Embeddings
from vitrina.models.candidates import (
    CandidateIndex,
    candidate_pairs,
    candidate_recall,
    match_groups,
)
from vitrina.models.pair_classifier import (
    MLPPairEstimator,
    PairClassifierConfig,
    PairFeatureBuilder,
    PairwiseBinaryClassifier,
    binary_metrics,
    build_baseline,
    check_labels,
    fit_baseline,
    fit_pair_matchers,
    limit_threads,
    model_codes,
    numbers,
    select_threshold,
    to_float,
)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch/OpenMP thread: spinning thread pools make tests slow on busy shared cores."""
    with limit_threads(1):
        yield


SMALL_MLP = {
    "type": "mlp",
    "model": {"hidden_size": 32, "n_layers": 1, "dropout": 0.0},
    "train": {"max_epochs": 25, "patience": 25, "batch_size": 64, "lr": 0.01},
}
SMALL_GBDT = {"type": "hist_gbdt", "params": {"max_iter": 40}}


def toy(n_groups: int = 60, per_group: int = 2, dim: int = 8, seed: int = 0):
    """Items in groups (a group = one product); same-group vectors are close."""
    rng = np.random.default_rng(seed)
    centres_t = rng.normal(size=(n_groups, dim))
    centres_i = rng.normal(size=(n_groups, dim))
    g = np.repeat(np.arange(n_groups), per_group)
    ids = np.array([f"P{i:04d}" for i in range(len(g))])
    text = centres_t[g] + 0.3 * rng.normal(size=(len(g), dim))
    image = centres_i[g] + 0.3 * rng.normal(size=(len(g), dim))
    brands = np.array(["acme", "globex", "initech", "umbrella"])
    items = pd.DataFrame(
        {
            "item_id": ids,
            "group_id": [f"G{x}" for x in g],
            "title": [f"{brands[x % 4]} model x{x:03d}z widget {rng.integers(1, 9)}" for x in g],
            "price": [10.0 + x + rng.random() for x in g],
        }
    )
    emb = Embeddings(ids=ids, text=text.astype(np.float32), image=image.astype(np.float32))
    return items, emb


def toy_pairs(items: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for _, grp in items.groupby("group_id"):
        ids = grp["item_id"].tolist()
        rows.append((ids[0], ids[1], 1))
        for _ in range(2):
            other = items["item_id"].iloc[rng.integers(len(items))]
            if other not in ids:
                rows.append((ids[0], other, 0))
    return pd.DataFrame(rows, columns=["left_id", "right_id", "label"])


# ---------------------------------------------------------------------- text helpers
def test_text_helpers():
    assert model_codes("Sony DSC-W120/P camera 7.2 mp") == {"dscw120p"}
    assert model_codes("24 inch 1080p") == {"1080p"}
    assert model_codes("abcd 1234") == set()
    assert numbers("2,5 kg and 10") == {"2.5", "10"}
    assert to_float("$1,299.00") == 1299.0 and np.isnan(to_float("")) and np.isnan(to_float(None))


# ---------------------------------------------------------------------- features
def test_features_are_symmetric_and_named():
    items, emb = toy()
    indexed = items.set_index("item_id")
    builder = PairFeatureBuilder(
        {
            "modalities": ["text", "image"],
            "string_fields": ["title", "group_id"],
            "numeric_fields": ["price"],
        }
    ).fit(indexed, emb)
    left, right = items["item_id"][:20].to_numpy(), items["item_id"][20:40].to_numpy()
    ab = builder.transform(left, right, indexed, emb)
    ba = builder.transform(right, left, indexed, emb)
    assert ab.dtype == np.float32 and ab.shape == (20, len(builder.feature_names))
    np.testing.assert_allclose(
        np.nan_to_num(ab, nan=-7), np.nan_to_num(ba, nan=-7), rtol=1e-5, atol=1e-6
    )
    assert "text.cosine" in builder.feature_names and "record.code_shared" in builder.feature_names
    same = builder.transform(["P0000"], ["P0001"], indexed, emb)[0]
    names = builder.feature_names
    assert same[names.index("record.code_shared")] == 1  # "x000z" is in both titles
    assert same[names.index("price.ratio")] > 0.9


def test_features_reject_other_dimensions_and_unknown_ids():
    items, emb = toy(dim=8)
    builder = PairFeatureBuilder({"modalities": ["text"]}).fit(None, emb)
    _, other = toy(dim=4)
    with pytest.raises(ValueError, match="dimension 8, got dimension 4"):
        builder.transform(["P0000"], ["P0001"], None, other)
    with pytest.raises(
        ValueError, match=r"2 pair item ids have no embedding \(e.g. \['nope', 'nada'\]\)"
    ):
        builder.transform(["nope", "P0000"], ["P0001", "nada"], None, emb)
    with pytest.raises(ValueError, match="Unknown modality"):
        PairFeatureBuilder({"modalities": ["audio"]})


# ---------------------------------------------------------------------- models
def test_pairwise_classifier_shapes():
    model = PairwiseBinaryClassifier(PairClassifierConfig(n_features=12, hidden_size=8, n_layers=3))
    assert model(torch.zeros(5, 12)).shape == (5,)
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 4


def test_mlp_learns_and_stops_early():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0.8).astype(int)
    est = MLPPairEstimator(
        {"hidden_size": 16, "n_layers": 1},
        {"max_epochs": 20, "patience": 3, "lr": 0.02, "batch_size": 128},
    ).fit(x[:400], y[:400], x[400:], y[400:])
    proba = est.predict_proba(x[400:])
    assert proba.shape == (200, 2) and np.allclose(proba.sum(1), 1)
    t, f1 = select_threshold(y[400:], proba[:, 1])
    assert f1 > 0.85
    assert {"train_loss", "val_loss", "val_pr_auc"} <= set(est.history_)
    assert len(est.history_) in (20, est.best_epoch_ + 3)  # ran out, or stopped 3 epochs on

    # A task it cannot learn (labels independent of x): validation stops improving early,
    # training stops `patience` epochs after the best one and keeps that epoch's weights.
    noise = rng.integers(0, 2, size=600)
    est = MLPPairEstimator(
        {"hidden_size": 64, "n_layers": 2},
        {"max_epochs": 200, "patience": 3, "lr": 0.05, "batch_size": 32, "monitor": "loss"},
    ).fit(x[:400], noise[:400], x[400:], noise[400:])
    assert len(est.history_) == est.best_epoch_ + 3 < 200
    best_loss = est.history_["val_loss"].min()
    assert est.history_.loc[est.best_epoch_ - 1, "val_loss"] == best_loss


def test_one_class_is_refused():
    with pytest.raises(ValueError, match=r"only label 1 \(3 pairs\)"):
        check_labels(np.array([1, 1, 1]))
    with pytest.raises(ValueError, match="only label 0"):
        MLPPairEstimator().fit(np.zeros((4, 2)), np.zeros(4), np.zeros((2, 2)), np.array([0, 1]))


def test_threshold_and_metrics():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    t, f1 = select_threshold(y, s)
    assert t == pytest.approx(0.35) and f1 == pytest.approx(6 / 7)
    m = binary_metrics(y, s, t)
    assert m["recall"] == 1.0 and m["precision"] == 0.75 and m["n_positive"] == 3
    assert 0 < m["pr_auc"] <= 1
    assert select_threshold(np.zeros(3), np.ones(3))[0] == 0.5


def test_baselines_handle_empty_columns():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    x[:, 2] = np.nan  # e.g. model-number overlap in a catalogue without model numbers
    y = (x[:, 0] > 0).astype(int)
    for kind in ("hist_gbdt", "logreg"):
        est = build_baseline(kind, {"max_iter": 30} if kind == "hist_gbdt" else {}).fit(x, y)
        assert est.predict_proba(x).shape == (200, 2)
    with pytest.raises(ValueError, match="Unknown baseline"):
        build_baseline("svm")


def test_gradient_boosting_stops_early_on_the_given_validation_split():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4))
    x[::7, 1] = np.nan  # FillEmptyColumns and native NaN handling before the classifier
    y = (x[:, 0] > 0).astype(int)
    y_val = 1 - y[400:]  # the validation split disagrees with training from the start
    est = fit_baseline(
        build_baseline("hist_gbdt", {"n_iter_no_change": 5}), x[:400], y[:400], x[400:], y_val
    )
    clf = est[-1]
    # Stopped on the given split: its score only falls, so boosting ends after
    # n_iter_no_change iterations. An internal slice of the training pairs would improve
    # and let it run for hundreds.
    assert clf.n_iter_ == 5 and np.all(np.diff(clf.validation_score_) < 0)
    unchecked = build_baseline("hist_gbdt", {"n_iter_no_change": 5}).fit(x[:400], y[:400])
    assert unchecked[-1].n_iter_ > 50


def test_ensemble_needs_fitted_members():
    items, emb = toy(n_groups=20)
    pairs = toy_pairs(items)
    with pytest.raises(ValueError, match=r"names members \['mlp'\]"):
        fit_pair_matchers(
            pairs,
            pairs,
            None,
            emb,
            {"modalities": ["text"]},
            {
                "ens": {"type": "ensemble", "members": ["mlp"]},
                "mlp": None,
                "lr": {"type": "logreg"},
            },
        )
    # ensembles are fitted after their members, whatever the order
    matchers, _ = fit_pair_matchers(
        pairs,
        pairs,
        None,
        emb,
        {"modalities": ["text"]},
        {"ens": {"type": "ensemble"}, "lr": {"type": "logreg"}, "off": None},
    )
    assert list(matchers) == ["lr", "ens"] and list(matchers["ens"].estimator.members) == ["lr"]


def test_fit_save_load_round_trip(tmp_path):
    items, emb = toy()
    pairs = toy_pairs(items)
    train, val = pairs.iloc[::2], pairs.iloc[1::2]
    indexed = items.set_index("item_id")
    matchers, histories = fit_pair_matchers(
        train,
        val,
        indexed,
        emb,
        {"modalities": ["text", "image"], "string_fields": ["title"]},
        {"mlp": SMALL_MLP, "gbdt": SMALL_GBDT, "ens": {"type": "ensemble"}},
        seed=0,
    )
    assert set(matchers) == {"mlp", "gbdt", "ens"} and not histories["mlp"].empty
    assert matchers["ens"].kind == "ensemble" and set(matchers["ens"].estimator.members) == {
        "mlp",
        "gbdt",
    }
    for name, matcher in matchers.items():
        before = matcher.predict_proba(val["left_id"], val["right_id"], indexed, emb)
        assert binary_metrics(val["label"], before, matcher.threshold)["f1"] > 0.8, name
        ds = PairMatcherDataset(str(tmp_path / name))
        ds.save(matcher)
        loaded = ds.load()
        after = loaded.predict_proba(val["left_id"], val["right_id"], indexed, emb)
        np.testing.assert_allclose(before, after, atol=1e-6)
        assert loaded.threshold == matcher.threshold and loaded.kind == matcher.kind
        preview = json.loads(ds.preview())
        assert preview["config"]["kind"] == matcher.kind
    assert not list(tmp_path.glob(".*tmp*"))  # atomic: no temporary directory left


def test_matcher_dataset_missing_and_wrong_type(tmp_path):
    from kedro.io import DatasetError

    ds = PairMatcherDataset(str(tmp_path / "none"))
    assert "not written yet" in ds.preview()
    with pytest.raises(DatasetError, match="run `kedro run --pipeline=pair_matching`"):
        ds.load()
    with pytest.raises(DatasetError, match="saves a PairMatcher"):
        ds.save("model")


# ---------------------------------------------------------------------- candidates
def clustered(n: int = 3000, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 10, dim))
    return (centres[rng.integers(0, len(centres), n)] + 0.2 * rng.normal(size=(n, dim))).astype(
        np.float32
    )


def test_flat_index_is_exact():
    x = clustered(500)
    sims, rows = CandidateIndex({"kind": "auto", "exact_max": 1000}).build(x).search(x[:20], 5)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    exact = np.argsort(-(xn[:20] @ xn.T), axis=1)[:, :5]
    assert (rows == exact).mean() > 0.99 and (rows[:, 0] == np.arange(20)).all()
    assert np.all(np.diff(sims, axis=1) <= 1e-6)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_recall(kind):
    x = clustered(3000)
    index = CandidateIndex(
        {"kind": "auto", "approximate": kind, "exact_max": 100, "nprobe": 8}
    ).build(x)
    assert index.kind_ == kind
    _, rows = index.search(x[:200], 10)
    _, exact = CandidateIndex({"kind": "flat"}).build(x).search(x[:200], 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact, strict=True)])
    assert recall > 0.8, recall
    with pytest.raises(ValueError, match="dimension"):
        index.search(np.zeros((1, 3), np.float32), 2)


def test_candidate_pairs_recall_and_groups():
    items, emb = toy(n_groups=40)
    cands = candidate_pairs(emb.ids, emb.text, k=3)
    assert (cands["left_id"] < cands["right_id"]).all()
    assert not cands.duplicated(["left_id", "right_id"]).any()
    assert cands["rank"].between(1, 3).all()
    positives = (
        items.groupby("group_id")["item_id"]
        .agg(list)
        .apply(lambda x: pd.Series(x[:2]))
        .set_axis(["left_id", "right_id"], axis=1)
    )
    rec = candidate_recall(cands, positives)
    assert rec["n_positive"] == 40 and rec["recall"] > 0.9
    groups = match_groups(emb.ids, positives.iloc[:5])
    assert len(groups) == len(emb.ids)
    assert (groups["group_size"] == 2).sum() == 10 and groups["match_group"].nunique() == len(
        emb.ids
    ) - 5
    with pytest.raises(ValueError, match="not among the items"):
        match_groups(emb.ids[:3], positives.iloc[:5])
    with pytest.raises(ValueError, match="NaN"):
        CandidateIndex().build(np.full((3, 2), np.nan))
