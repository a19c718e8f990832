"""Pair features: text helpers, symmetry, names, dimension and id checks, variants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from tests.models.pair_matching.toys import toy
from vitrina.models.pair_matching import (
    PairFeatureBuilder,
    model_codes,
    numbers,
    to_float,
    variant_features,
)


def test_text_helpers():
    assert model_codes("Sony DSC-W120/P camera 7.2 mp") == {"dscw120p"}
    assert model_codes("24 inch 1080p") == {"1080p"}
    assert model_codes("abcd 1234") == set()
    assert numbers("2,5 kg and 10") == {"2.5", "10"}
    assert to_float("$1,299.00") == 1299.0 and np.isnan(to_float("")) and np.isnan(to_float(None))


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
    with pytest.raises(ValueError, match="Unknown modality"):  # checked in fit (scikit-learn)
        PairFeatureBuilder({"modalities": ["audio"]}).fit(None, emb)


def test_feature_builder_is_a_scikit_learn_estimator():
    items, emb = toy()
    builder = PairFeatureBuilder({"modalities": ["text"], "string_fields": ["title"]})
    assert builder.get_params() == {"config": {"modalities": ["text"], "string_fields": ["title"]}}
    assert not hasattr(builder, "config_")  # __init__ stores the parameter only
    fitted = builder.fit(items.set_index("item_id"), emb)
    fresh = clone(fitted)
    assert fresh.get_params() == fitted.get_params() and not hasattr(fresh, "word_")
    with pytest.raises(RuntimeError, match="before fit"):
        fresh.transform(["P0000"], ["P0001"], None, emb)


def test_variant_features_resolve_auto_string_fields():
    items = pd.DataFrame(
        {
            "item_id": ["a", "b"],
            "side": ["left", "right"],
            "title": ["x", "y"],
            "brand": ["p", "q"],
            "price": ["1", "2"],
            "n": [1, 2],
        }
    )
    out = variant_features(
        {"string_fields": "auto", "numeric_fields": ["price"]}, {"modalities": ["text"]}, items
    )
    assert out["string_fields"] == ["title", "brand"]  # not ids, sides, numeric or non-text
    assert out["modalities"] == ["text"] and out["numeric_fields"] == ["price"]
    assert variant_features({"max_chars": 5}, None, items) == {"max_chars": 5}
