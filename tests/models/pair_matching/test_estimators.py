"""The pair classifiers: the MLP on the engine, the baselines, and the scikit-learn
estimator contract (``get_params`` / ``set_params`` / ``clone``, fitted attributes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone

from vitrina.models.pair_matching import (
    EnsembleEstimator,
    FeatureScaler,
    FillEmptyColumns,
    MLPPairEstimator,
    PairwiseBinaryClassifier,
    build_baseline,
    fit_baseline,
    select_threshold,
)

QUICK = {"hidden_size": 8, "n_layers": 1, "max_epochs": 3, "patience": None, "batch_size": 64}


def separable(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0.3).astype(int)


def test_pairwise_classifier_shapes():
    model = PairwiseBinaryClassifier(n_features=12, hidden_size=8, n_layers=3)
    assert model(torch.zeros(5, 12)).shape == (5,)
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 4


def test_mlp_learns_and_stops_early():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0.8).astype(int)
    est = MLPPairEstimator(
        hidden_size=16, n_layers=1, max_epochs=20, patience=3, learning_rate=0.02, batch_size=128
    ).fit(x[:400], y[:400], X_val=x[400:], y_val=y[400:])
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
        hidden_size=64,
        n_layers=2,
        max_epochs=200,
        patience=3,
        learning_rate=0.05,
        batch_size=32,
        monitor="loss",
    ).fit(x[:400], noise[:400], X_val=x[400:], y_val=noise[400:])
    assert len(est.history_) == est.best_epoch_ + 3 < 200
    best_loss = est.history_["val_loss"].min()
    assert est.history_.loc[est.best_epoch_ - 1, "val_loss"] == best_loss


def test_one_class_is_refused_by_the_mlp():
    with pytest.raises(ValueError, match="only label 0"):
        MLPPairEstimator().fit(
            np.zeros((4, 2)), np.zeros(4), X_val=np.zeros((2, 2)), y_val=np.array([0, 1])
        )


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


def test_mlp_is_a_scikit_learn_estimator():
    est = MLPPairEstimator(**QUICK, learning_rate=0.01)
    assert est.get_params()["learning_rate"] == 0.01 and est.get_params()["hidden_size"] == 8
    assert vars(est) == est.get_params()  # __init__ stores its parameters and nothing else
    x, y = separable()
    est.fit(x[:200], y[:200], X_val=x[200:], y_val=y[200:])
    learnt = set(vars(est)) - set(est.get_params())
    assert learnt >= {"module_", "scaler_", "classes_", "n_features_in_", "history_"}
    assert all(name.endswith("_") for name in learnt), learnt
    fresh = clone(est)
    assert fresh.get_params() == est.get_params() and not hasattr(fresh, "module_")
    fresh.set_params(hidden_size=4, max_epochs=2)
    assert fresh.hidden_size == 4 and est.hidden_size == 8
    # same parameters, same seed: the clone trains to the same weights
    again = clone(est).fit(x[:200], y[:200], X_val=x[200:], y_val=y[200:])
    np.testing.assert_allclose(again.predict_proba(x), est.predict_proba(x), atol=1e-6)
    assert set(est.predict(x[:10])) <= {0, 1}
    with pytest.raises(ValueError, match="expecting 5 features"):
        est.predict_proba(x[:, :3])


def test_mlp_holds_out_a_validation_split_and_takes_any_two_labels():
    x, y = separable()
    labels = np.where(y == 1, "match", "other")
    est = MLPPairEstimator(**QUICK, validation_fraction=0.2).fit(x, labels)
    assert list(est.classes_) == ["match", "other"] and len(est.history_) == 3
    assert set(est.predict(x)) <= {"match", "other"}
    with pytest.raises(ValueError, match="Only binary classification is supported"):
        MLPPairEstimator(**QUICK).fit(x, np.arange(len(x)) % 3)


def test_mlp_old_training_keys_name_the_engine_key():
    est = MLPPairEstimator.from_blocks({"hidden_size": 16}, {"learning_rate": 0.1, "seed": 3})
    assert est.hidden_size == 16 and est.learning_rate == 0.1 and est.seed == 3
    for old, new in (("lr", "learning_rate"), ("max_grad_norm", "gradient_clip_val")):
        with pytest.raises(ValueError, match=rf"train\.{old} is now train\.{new}"):
            MLPPairEstimator.from_blocks(None, {old: 1})
    with pytest.raises(ValueError, match=r"model\.width is not a setting; model takes"):
        MLPPairEstimator.from_blocks({"width": 3}, None)
    with pytest.raises(ValueError, match=r"training\.learning_rate=-1 must be > 0"):
        MLPPairEstimator(**QUICK, learning_rate=-1).fit(*separable())


def test_mlp_nan_loss_stops_cleanly():
    from vitrina.training import NonFiniteLossError

    x, y = separable()
    with pytest.raises(NonFiniteLossError, match="training loss is nan"):
        MLPPairEstimator(**QUICK, learning_rate=1e30, gradient_clip_val=None).fit(
            x * 1e30, y, X_val=x, y_val=y
        )


def test_mlp_epoch_hook_sees_every_epoch_and_can_stop_training():
    x, y = separable()
    seen = []

    class Stop(Exception):
        pass

    def hook(row, scores):
        seen.append((row["epoch"], scores.shape))
        if row["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        MLPPairEstimator(**{**QUICK, "max_epochs": 10}).fit(
            x[:200], y[:200], X_val=x[200:], y_val=y[200:], on_epoch=hook
        )
    assert seen == [(1, (100,)), (2, (100,))]


def test_transformers_and_ensemble_clone():
    x, y = separable()
    x[:, 4] = np.nan
    for step in (FeatureScaler(), FillEmptyColumns()):
        assert clone(step).get_params() == {}
        out = step.fit(x).transform(x)
        assert out.shape == x.shape and not np.isnan(out[:, 4]).any()
    ens = EnsembleEstimator(
        {"lr": build_baseline("logreg"), "mlp": MLPPairEstimator(**QUICK)}, {"lr": 3, "mlp": 1}
    )
    fitted = clone(ens).fit(x[:200], y[:200], X_val=x[200:], y_val=y[200:])
    assert fitted.weights_ == {"lr": 0.75, "mlp": 0.25} and set(fitted.members_) == {"lr", "mlp"}
    assert not hasattr(ens.members["lr"], "classes_")  # fit fitted clones, not the members
    p = fitted.predict_proba(x[200:])
    expected = (
        0.75 * fitted.members_["lr"].predict_proba(x[200:])[:, 1]
        + 0.25 * (fitted.members_["mlp"].predict_proba(x[200:])[:, 1])
    )
    np.testing.assert_allclose(p[:, 1], expected) and np.testing.assert_allclose(p.sum(1), 1)
    with pytest.raises(ValueError, match="at least one member"):
        EnsembleEstimator({}).fit(x, y)


@pytest.mark.slow
def test_mlp_passes_scikit_learns_estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator

    est = MLPPairEstimator(
        hidden_size=16,
        n_layers=1,
        max_epochs=20,
        patience=None,
        precision="32-true",
        learning_rate=0.01,
        batch_size=32,
    )
    failed = [
        (r["check_name"], str(r["exception"])[:200])
        for r in check_estimator(est, on_fail=None)
        if r["status"] == "failed"
    ]
    assert failed == []
