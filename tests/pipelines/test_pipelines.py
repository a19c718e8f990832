"""Each pipeline on a tiny generated catalogue with SequentialRunner and an in-memory catalogue."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from tests.conftest import REPO
from vitrina.datasets.embeddings import Embeddings
from vitrina.demo import generate_demo_catalogue
from vitrina.embeddings import EmbeddingShards
from vitrina.pipelines.embeddings.pipeline import model_pipeline as embeddings_for_model
from vitrina.pipelines.image_processing.pipeline import create_pipeline as image_processing
from vitrina.pipelines.ingestion.pipeline import create_pipeline as ingestion
from vitrina.pipelines.probing.pipeline import model_pipeline as probing_for_model
from vitrina.splits import make_probing_splits

MODELS = {
    "tiny_ruclip": {
        "type": "ruclip",
        "init": "tiny",
        "tiny": {
            "seed": 0,
            "vocab_size": 600,
            "embed_dim": 16,
            "vision_width": 64,
            "transformer_width": 32,
        },
    },
    "tfidf_svd": {"type": "tfidf_svd", "n_components": 16, "image_side": 8},
}


def base_params(name: str) -> dict:
    return yaml.safe_load((REPO / "conf" / "base" / f"parameters_{name}.yml").read_text())[name]


def demo_inputs(root, n_products: int, seed: int, size: int = 32):
    """``products`` and ``image_manifest`` of a generated demo catalogue under ``root``."""
    table = generate_demo_catalogue(root / "raw", n_products=n_products, seed=seed)
    images = str(root / "raw" / "images")
    params = {**base_params("ingestion"), "image_root": images}
    products = run(ingestion(), raw_products=table, **{"params:ingestion": params})["products"]
    params = {**base_params("image_processing"), "size": size, "output_dir": str(root / "img")}
    manifest = run(
        image_processing(),
        products=products,
        **{"params:ingestion.image_root": images, "params:image_processing": params},
    )["image_manifest"]
    return products, manifest


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    table = generate_demo_catalogue(root / "raw", n_products=120, seed=3)
    return root, table


def run(pipeline, **data):
    catalog = DataCatalog({k: MemoryDataset(v) for k, v in data.items()})
    for name in pipeline.outputs():
        catalog[name] = MemoryDataset()
    SequentialRunner().run(pipeline, catalog)
    out = {name: catalog[name].load() for name in pipeline.outputs()}
    # the embeddings nodes return lazy shards, which the catalogue's dataset computes
    return {k: v.collect() if isinstance(v, EmbeddingShards) else v for k, v in out.items()}


@pytest.fixture(scope="module")
def products(demo):
    root, table = demo
    params = {**base_params("ingestion"), "image_root": str(root / "raw" / "images")}
    out = run(ingestion(), raw_products=table, **{"params:ingestion": params})
    return out["products"], out["ingestion_quality_report"]


@pytest.fixture(scope="module")
def manifest(demo, products):
    root, _ = demo
    params = {**base_params("image_processing"), "size": 48, "output_dir": str(root / "processed")}
    out = run(
        image_processing(),
        products=products[0],
        **{
            "params:ingestion.image_root": str(root / "raw" / "images"),
            "params:image_processing": params,
        },
    )
    return out["image_manifest"], out["image_quality_report"]


def test_ingestion_pipeline(products):
    df, report = products
    assert len(df) == 120 - 7  # 8 planted defects, the truncated JPEG is only found by decoding
    assert df["product_id"].is_unique
    assert set(report["reason"]) >= {
        "missing_title",
        "duplicate_product_id",
        "unsafe_image_path",
        "missing_image",
        "kept",
    }


def test_image_processing_pipeline(products, manifest):
    image_manifest, report = manifest
    assert len(image_manifest) == len(products[0]) - 1
    assert report["reason"].tolist() == ["decode_error"]


@pytest.fixture(scope="module")
def embeddings(products, manifest):
    settings = {**base_params("embeddings"), "batch_size": 16}
    out = {}
    for name, spec in MODELS.items():
        pipeline = embeddings_for_model(name, spec)
        assert (f"{name}.checkpoint" in pipeline.all_outputs()) == bool(spec.get("init"))
        result = run(
            pipeline,
            products=products[0],
            image_manifest=manifest[0],
            **{f"params:embeddings.models.{name}": spec, "params:embeddings": settings},
        )
        assert set(result) == {f"{name}.embeddings"}
        out[name] = result[f"{name}.embeddings"]
    return out


def test_embeddings_pipeline(embeddings, manifest):
    for emb in embeddings.values():
        assert isinstance(emb, Embeddings)
        assert sorted(emb.ids) == sorted(manifest[0]["product_id"])
    assert embeddings["tiny_ruclip"].text.shape[1] == 16


def test_probing_pipeline(products, manifest, embeddings):
    params = {**base_params("probing"), "min_class_size": 4, "probes": {"logreg": {"C": 1.0}}}
    splits, report = make_probing_splits(products[0], manifest[0], params)
    for name, emb in embeddings.items():
        out = run(
            probing_for_model(name),
            probing_splits=splits,
            **{
                f"{name}.embeddings": emb,
                "params:probing": params,
                "params:embeddings.device": "cpu",
            },
        )
        metrics = out[f"{name}.probing_metrics"]
        ok_tasks = set(report.loc[report.status == "ok", "task"])
        assert set(metrics["task"]) == ok_tasks
        assert len(metrics[["modality", "task", "probe"]].drop_duplicates()) == 3 * len(ok_tasks)
        assert isinstance(metrics, pd.DataFrame) and metrics["value"].notna().any()
