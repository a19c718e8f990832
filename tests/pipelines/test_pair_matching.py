"""Pair matching: every input adapter, bad input, splits, and the pipeline (SequentialRunner)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from tests.conftest import REPO, SHARED_DATA
from vitrina.datasets.er_magellan import (
    find_er_magellan,
    read_er_magellan,
)
from vitrina.embeddings import Embeddings
from vitrina.models.pair_matching import (
    catalogue_pair_data,
    finalise,
)
from vitrina.pipelines.pair_matching.nodes import train_pair_matchers
from vitrina.pipelines.pair_matching.pipeline import configured_source, create_pipeline
from vitrina.utils import limit_threads

FAST = {
    "threads": 1,
    "variants": {
        "text": {"modalities": ["text"]},
        "text_image_strings": {"modalities": ["text", "image"], "string_fields": ["title"]},
    },
    "primary_variant": "text_image_strings",
    "classifiers": {
        "mlp": {
            "type": "mlp",
            "model": {"hidden_size": 32, "n_layers": 1},
            "train": {"max_epochs": 8, "patience": 8, "batch_size": 128, "learning_rate": 0.01},
        },
        "hist_gbdt": {"type": "hist_gbdt", "params": {"max_iter": 30}},
    },
}


def params(**overrides) -> dict:
    base = yaml.safe_load((REPO / "conf/base/parameters_pair_matching.yml").read_text())[
        "pair_matching"
    ]
    return {**base, **FAST, **overrides}


def catalogue(n_groups: int = 80, dim: int = 8, seed: int = 0):
    """Products in colour-variant groups (2-3 per group) and their embeddings."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, n_groups)
    g = np.repeat(np.arange(n_groups), sizes)
    ids = np.array([f"P{i:05d}" for i in range(len(g))])
    colours = np.array(["red", "blue", "green", "black"])
    products = pd.DataFrame(
        {
            "product_id": ids,
            "title": [f"dress model m{x:03d}k {colours[rng.integers(4)]}" for x in g],
            "description": [f"soft cotton dress {x % 7}" for x in g],
            "group_id": [f"G{x}" for x in g],
        }
    )
    text = rng.normal(size=(n_groups, dim))[g] + 0.3 * rng.normal(size=(len(g), dim))
    image = rng.normal(size=(n_groups, dim))[g] + 0.3 * rng.normal(size=(len(g), dim))
    return products, Embeddings(
        ids=ids, text=text.astype(np.float32), image=image.astype(np.float32)
    )


@pytest.fixture(autouse=True)
def one_thread():
    """One torch/OpenMP thread: spinning thread pools make tests slow on busy shared cores."""
    with limit_threads(1):
        yield


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner cannot release, so intermediate outputs can be checked."""

    def _release(self) -> None:
        pass


def run(pipeline, **data):
    data.setdefault("params:mlflow", {"register_models": False})
    catalog = DataCatalog({k: MemoryDataset(v) for k, v in data.items()})
    for name in pipeline.all_outputs():
        catalog[name] = KeptDataset()
    SequentialRunner().run(pipeline, catalog)
    out = {name: catalog[name].load() for name in pipeline.all_outputs()}
    plt.close("all")  # the plot nodes' figures (MatplotlibDataset would save and close them)
    return out


def reasons(report) -> dict[str, int]:
    df = report if isinstance(report, pd.DataFrame) else pd.DataFrame(report)
    return dict(zip(df["reason"], df["count"], strict=True))


# ---------------------------------------------------------------------- bad input
def test_one_class_training_set_is_a_clear_error():
    products, emb = catalogue(30)
    data = finalise(catalogue_pair_data(products, emb, params()), params())
    pairs = data.pairs.assign(label=0)
    with pytest.raises(ValueError, match="hold only label 0"):
        train_pair_matchers(data.items, data.embeddings, pairs, params())


# ---------------------------------------------------------------------- layout 1
# ---------------------------------------------------------------------- layout 2
def assert_disjoint(pairs: pd.DataFrame) -> None:
    side = pd.concat(
        [
            pairs[["left_id", "split"]].set_axis(["id", "split"], axis=1),
            pairs[["right_id", "split"]].set_axis(["id", "split"], axis=1),
        ]
    )
    assert (side.groupby("id")["split"].nunique() == 1).all()


# ---------------------------------------------------------------------- layout 3
def write_er(tmp_path, n=40):
    rng = np.random.default_rng(0)
    lines = {}
    for split, count in (("train", n), ("valid", n // 2), ("test", n // 2)):
        rows = []
        for _i in range(count):
            k = int(rng.integers(0, 30))
            match = rng.random() < 0.4
            j = k if match else (k + 1 + int(rng.integers(0, 28))) % 30
            left = f"COL title VAL acme widget w{k:03}x deluxe COL price VAL {10 + k}.0 "
            right = f"COL title VAL widget by acme model w{j:03}x COL price VAL {10 + j}.5 "
            rows.append(f"{left}\t{right}\t{int(match)}")
        lines[split] = rows
        (tmp_path / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return lines


@pytest.mark.integration
@pytest.mark.skipif(
    not (SHARED_DATA / "er_magellan").is_dir(), reason="../shared/data/er_magellan not found"
)
def test_er_magellan_shared_data_reads():
    folders = find_er_magellan(SHARED_DATA / "er_magellan")
    assert {f.name for f in folders} == {"Abt-Buy", "Walmart-Amazon"} and len(folders) == 3
    abt = read_er_magellan(SHARED_DATA / "er_magellan/Textual/Abt-Buy")
    sizes = abt.pairs.groupby("split")["label"].agg(["size", "sum"])
    assert sizes.loc["train"].tolist() == [5743, 616] and sizes.loc["test"].tolist() == [1916, 206]


# ---------------------------------------------------------------------- layout 4
def test_configured_source_reads_parameters(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "er").mkdir()
    (tmp_path / "base/parameters_pair_matching.yml").write_text(
        "pair_matching: {source: catalogue}\n"
    )
    (tmp_path / "er/parameters_pair_matching.yml").write_text(
        "pair_matching: {source: er_magellan}\n"
    )
    assert configured_source(tmp_path, "base") == "catalogue"
    assert configured_source(tmp_path, "er") == "er_magellan"
    with pytest.raises(ValueError, match=r"'missing_env' does not exist.*are: er;"):
        configured_source(tmp_path, "missing_env")  # an unknown environment is an error
    (tmp_path / "er/parameters_pair_matching.yml").write_text("pair_matching: {source: csv}\n")
    with pytest.raises(ValueError, match="must be one of"):
        configured_source(tmp_path, "er")


# ---------------------------------------------------------------------- pipeline
def test_catalogue_pipeline_end_to_end():
    products, emb = catalogue(150)
    p = params(candidates={**params()["candidates"], "k": 5})
    pipeline = create_pipeline(source="catalogue")
    out = run(
        pipeline, products=products, pair_matching_embeddings=emb, **{"params:pair_matching": p}
    )
    metrics = out["pair_matching_metrics"]
    assert set(metrics["variant"]) == {"text", "text_image_strings"}
    assert set(metrics["classifier"]) == {"mlp", "hist_gbdt"} and metrics["selected"].sum() == 1
    assert (
        metrics[["accuracy", "precision", "recall", "f1", "pr_auc"]]
        .apply(lambda c: c.between(0, 1))
        .all()
        .all()
    )
    primary = metrics[metrics["variant"] == "text_image_strings"]
    assert primary["f1"].max() > 0.8, metrics  # the synthetic groups are easy
    matcher = out["pair_matcher"]
    assert matcher.info["variant"] == "text_image_strings" and 0 < matcher.threshold < 1
    recall = out["pair_candidate_recall"].set_index("scope")
    assert recall.loc["group_id", "recall"] > 0.9
    groups = out["match_groups"]
    assert len(groups) == len(emb) and groups["group_size"].max() >= 2
    matched = out["matched_pairs"]
    assert (matched["score"] >= matcher.threshold).all()
    assert {
        "pair_matching_pr_curve",
        "pair_matching_loss_curve",
        "pair_matching_metrics_chart",
    } <= set(out)
    assert "# Pair matching summary" in out["pair_matching_summary"]
    mlflow_metrics = out["pair_matching_mlflow_metrics"]
    assert (
        "text_image_strings.mlp.f1" in mlflow_metrics
        and "candidates.recall.group_id" in mlflow_metrics
    )
    history = out["pair_training_history"]
    assert set(history["classifier"]) == {"mlp"} and len(history) >= 2
    assert out["pair_matcher_registration"]["registered"] is False  # off by default


def test_er_magellan_pipeline_uses_its_splits(tmp_path):
    write_er(tmp_path, n=80)
    p = params(
        source="er_magellan",
        lsa={"n_components": 8},
        variants={
            "text_strings": {
                "modalities": ["text"],
                "string_fields": "auto",  # every attribute but price: title
                "numeric_fields": ["price"],
            }
        },
        primary_variant="text_strings",
        candidates={**params()["candidates"], "k": 3, "modality": "text"},
    )
    pipeline = create_pipeline(source="er_magellan")
    out = run(
        pipeline, pair_matching_source=read_er_magellan(tmp_path), **{"params:pair_matching": p}
    )
    assert out["pair_splits"].groupby("split").size().to_dict() == {
        "test": 40,
        "train": 80,
        "val": 40,
    }
    assert out["pair_matching_metrics"]["f1"].max() > 0.6
    names = out["pair_matcher"].builder.feature_names
    assert "title.jaccard" in names and "price.ratio" in names and "side.jaccard" not in names
    with pytest.raises(Exception, match="pipeline was built for 'catalogue'"):
        products, emb = catalogue(30)
        run(
            create_pipeline(source="catalogue"),
            products=products,
            pair_matching_embeddings=emb,
            **{"params:pair_matching": p},
        )


def test_competition_and_pairs_pipelines_end_to_end(tmp_path):
    products, emb = catalogue(120, seed=3)
    rng = np.random.default_rng(3)
    ids = products["product_id"].to_numpy()
    groups = products["group_id"].to_numpy()
    pos = [
        (a, b)
        for g in np.unique(groups)
        for a, b in zip(ids[groups == g][:-1], ids[groups == g][1:], strict=True)
    ]
    neg = [
        (a, b)
        for a, b in zip(rng.choice(ids, 3 * len(pos)), rng.choice(ids, 3 * len(pos)), strict=True)
    ]
    pairs = pd.DataFrame(pos + neg, columns=["left_id", "right_id"])
    pairs["label"] = (
        groups[pd.Index(ids).get_indexer(pairs["left_id"])]
        == groups[pd.Index(ids).get_indexer(pairs["right_id"])]
    ).astype(int)
    p = params(
        variants={
            "text_image_strings": {"modalities": ["text", "image"], "string_fields": ["name"]}
        },
        candidates={**params()["candidates"], "k": 3},
    )
    # layout 1: parquet tables with array columns, seed column names
    text_items = pd.DataFrame(
        {"variantid": ids, "name": products["title"], "name_bert_64": list(emb.text)}
    )
    image_items = pd.DataFrame(
        {"variantid": ids, "main_pic_embeddings_resnet_v1": [[v] for v in emb.image]}
    )
    seed_pairs = pairs.rename(
        columns={"left_id": "variantid1", "right_id": "variantid2", "label": "target"}
    )
    for name, df in {"t": text_items, "i": image_items, "p": seed_pairs}.items():
        df.to_parquet(tmp_path / f"{name}.parquet")
    out = run(
        create_pipeline(source="competition"),
        pair_matching_text_items=pd.read_parquet(tmp_path / "t.parquet"),
        pair_matching_image_items=pd.read_parquet(tmp_path / "i.parquet"),
        pair_matching_pairs=pd.read_parquet(tmp_path / "p.parquet"),
        **{"params:pair_matching": {**p, "source": "competition"}},
    )
    assert_disjoint(out["pair_splits"])
    assert out["pair_matching_metrics"]["f1"].max() > 0.8
    # layout 2: products + embeddings + pairs
    out = run(
        create_pipeline(source="pairs"),
        products=products.rename(columns={"title": "name"}),
        pair_matching_embeddings=emb,
        pair_matching_pairs=pairs,
        **{"params:pair_matching": {**p, "source": "pairs"}},
    )
    assert_disjoint(out["pair_splits"])
    assert out["pair_matching_metrics"]["f1"].max() > 0.8
    assert len(out["match_groups"]) == len(products)
