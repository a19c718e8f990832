"""The pair matcher: fitting every classifier on one feature builder, save / load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.models.pair_matching.toys import SMALL_GBDT, SMALL_MLP, toy, toy_pairs
from vitrina.datasets.pair_matcher import PairMatcherDataset
from vitrina.models.pair_matching import binary_metrics, fit_pair_matchers


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
    assert list(matchers) == ["lr", "ens"] and list(matchers["ens"].estimator.members_) == ["lr"]


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
    assert matchers["ens"].kind == "ensemble" and set(matchers["ens"].estimator.members_) == {
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


def test_matcher_of_an_older_format_is_refused(tmp_path):
    from kedro.io import DatasetError

    items, emb = toy(n_groups=20)
    pairs = toy_pairs(items)
    matchers, _ = fit_pair_matchers(
        pairs, pairs, None, emb, {"modalities": ["text"]}, {"lr": {"type": "logreg"}}
    )
    matchers["lr"].save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "format": 1}))
    with pytest.raises(DatasetError, match="format 1, written by an older Vitrina"):
        PairMatcherDataset(str(tmp_path)).load()
