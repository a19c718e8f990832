"""The four input layouts, each to :class:`PairData` (competition, products, ER-Magellan,
catalogue)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.pipelines.test_pair_matching import (
    assert_disjoint,
    catalogue,
    params,
    reasons,
    write_er,
)
from vitrina.datasets.er_magellan import ErMagellanDataset, parse_record, read_er_magellan
from vitrina.models.pair_matching import (
    catalogue_pair_data,
    competition_pair_data,
    er_magellan_pair_data,
    finalise,
    products_pair_data,
    vectors_from_column,
)


def test_vectors_from_column_excludes_nan_and_refuses_mixed_dimensions():
    table = pd.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "emb": [np.ones(4), np.array([1.0, np.nan, 0, 0]), None, np.zeros(4)],
        }
    )
    ids, x, bad = vectors_from_column(table, "id", "emb")
    assert ids.tolist() == ["1", "4"] and x.shape == (2, 4) and x.dtype == np.float32 and bad == 2
    table.loc[3, "emb"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"mixes dimensions \[3, 4\]"):
        vectors_from_column(table, "id", "emb")


def test_competition_layout(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    ids = np.arange(1000, 1000 + n)
    text = rng.normal(size=(n, 6))
    image = rng.normal(size=(n, 5))
    text_items = pd.DataFrame(
        {"variantid": ids, "name": [f"item {i}" for i in ids], "name_bert_64": list(text)}
    )
    text_items.at[3, "name_bert_64"] = np.full(6, np.nan)  # excluded and counted
    # one vector per picture: the first is used
    image_items = pd.DataFrame(
        {"variantid": ids, "main_pic_embeddings_resnet_v1": [[v, v * 0] for v in image]}
    )
    pairs = pd.DataFrame(
        {
            "variantid1": ids[:40],
            "variantid2": np.r_[ids[1:40], ids[0]],
            "target": (np.arange(40) % 3 == 0).astype(int),
        }
    )
    pairs.loc[len(pairs)] = [ids[5], ids[5], 1]  # self-pair
    pairs.loc[len(pairs)] = [ids[7], ids[6], 0]  # duplicate in the other order
    # parquet round trip: embedding columns hold arrays, as in the competition files
    for name, df in {"t": text_items, "i": image_items, "p": pairs}.items():
        df.to_parquet(tmp_path / f"{name}.parquet")
    t, i, p = (pd.read_parquet(tmp_path / f"{x}.parquet") for x in "tip")
    cfg = params()["competition"]
    data = competition_pair_data(t, i, p, cfg)
    assert data.embeddings.text.shape == (n - 1, 6) and data.embeddings.image.shape == (n - 1, 5)
    np.testing.assert_allclose(data.embeddings.image[0], image[0], rtol=1e-6)
    r = reasons(data.report)
    assert r["nan_text_embeddings"] == 1 and r["self_pairs"] == 1 and r["duplicate_pairs"] == 1
    assert r["pairs_with_excluded_item"] == 2  # both pairs touching item 1003
    assert list(data.items.columns) == ["item_id", "name"]
    out = finalise(data, params())
    assert set(out.pairs["split"]) == {"train", "val", "test"}

    bad = t.copy()
    bad.at[10, "name_bert_64"] = np.zeros(7)
    with pytest.raises(ValueError, match="mixes dimensions"):
        competition_pair_data(bad, i, p, cfg)
    unknown = p.copy()
    unknown.loc[len(unknown)] = [99999, 1000, 1]
    with pytest.raises(ValueError, match=r"1 ids in the pairs table have no item .*'99999'"):
        competition_pair_data(t, i, unknown, cfg)


def test_products_layout_and_grouped_split():
    products, emb = catalogue(60)
    rng = np.random.default_rng(1)
    ids = emb.ids
    pairs = pd.DataFrame(
        {
            "left_id": rng.choice(ids, 150),
            "right_id": rng.choice(ids, 150),
            "label": rng.integers(0, 2, 150),
        }
    )
    data = products_pair_data(
        products.iloc[:-1], emb, pairs[~pairs.isin([ids[-1]]).any(axis=1)], params()
    )
    assert len(data.embeddings) == len(products) - 1
    assert (
        "title" in data.items.columns
        and data.items["item_id"].tolist() == data.embeddings.ids.tolist()
    )
    with pytest.raises(ValueError, match="have no item or embedding"):
        products_pair_data(products.iloc[:-1], emb, pairs.assign(left_id=ids[-1]), params())


def test_er_magellan_reader_and_adapter(tmp_path):
    assert parse_record("COL title VAL a b COL price VAL  ") == {"title": "a b", "price": ""}
    with pytest.raises(ValueError, match="not a 'COL"):
        parse_record("title: a")
    write_er(tmp_path)
    data = read_er_magellan(tmp_path)
    assert data.attributes == ["title", "price"]
    assert data.pairs.groupby("split").size().to_dict() == {"test": 20, "train": 40, "val": 20}
    assert data.items["item_id"].is_unique and set(data.items["side"]) == {"left", "right"}
    prepared = finalise(
        er_magellan_pair_data(data, {"lsa": {"n_components": 8, "exclude_fields": ["price"]}}), {}
    )
    assert prepared.embeddings.text.shape == (len(data.items), 8)
    assert prepared.embeddings.image.shape == (len(data.items), 0)
    ds = ErMagellanDataset(str(tmp_path))
    assert ds.load().pairs.equals(data.pairs) and ds.preview()["data"][0][0] == "train"
    (tmp_path / "test.txt").write_text("only one field\n")
    with pytest.raises(ValueError, match=r"test.txt:1: expected"):
        read_er_magellan(tmp_path)


def test_catalogue_pairs_from_groups():
    products, emb = catalogue(120)
    p = params()
    data = finalise(catalogue_pair_data(products, emb, p), p)
    pairs, items = data.pairs, data.items.set_index("item_id")
    assert_disjoint(pairs)
    same = (
        items.loc[pairs["left_id"], "group_id"].to_numpy()
        == items.loc[pairs["right_id"], "group_id"].to_numpy()
    )
    assert (same == pairs["label"].astype(bool)).all()  # 1 exactly when group_id is shared
    n_true = sum(k * (k - 1) // 2 for k in products["group_id"].value_counts())
    assert pairs["label"].sum() == n_true  # every same-group pair (groups are small)
    assert (pairs["left_id"] < pairs["right_id"]).all() and not pairs.duplicated(
        ["left_id", "right_id"]
    ).any()
    assert set(pairs["split"]) == {"train", "val", "test"}
