"""The embeddings step in shards: sharding leaves the vectors unchanged, resume and
invalidation through the catalogue's dataset, bad settings, and the Ray backend."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.pipelines.test_pipelines import base_params, demo_inputs
from vitrina.datasets import ShardedEmbeddingsDataset
from vitrina.models.embedding_backends import import_ray
from vitrina.pipelines.embeddings.nodes import (
    shard_products,
    shard_products_with_checkpoint,
    write_tiny_checkpoint,
)

TINY = {"type": "ruclip", "init": "tiny", "tiny": {"seed": 0, "vocab_size": 400, "embed_dim": 16}}
TFIDF = {"type": "tfidf_svd", "n_components": 8, "image_side": 8}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_inputs(tmp_path_factory.mktemp("demo_shards"), n_products=60, seed=5)


def settings(**over):
    return {**base_params("embeddings"), "batch_size": 8, "progress": False, **over}


def test_shards_equal_one_pass_and_rerun_reuses_them(demo, tmp_path):
    products, manifest = demo
    ds = ShardedEmbeddingsDataset(str(tmp_path / "tfidf"))
    one = shard_products(products, manifest, TFIDF, settings(shard_size=10_000)).collect()
    plan = shard_products(products, manifest, TFIDF, settings(shard_size=16))
    assert [b - a for a, b in plan.bounds] == [16, 16, 16, len(one) - 48]
    ds.save(plan)
    back = ds.load()
    assert back.ids.tolist() == one.ids.tolist()
    np.testing.assert_allclose(back.text, one.text, atol=1e-5)
    np.testing.assert_allclose(back.image, one.image, atol=1e-5)
    again = shard_products(products, manifest, TFIDF, settings(shard_size=16))
    assert again.fingerprint == plan.fingerprint and again.inputs == plan.inputs
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "tfidf").glob("shard-*")}
    ds.save(again)
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "tfidf").glob("shard-*")}


def test_fingerprint_follows_the_model_and_inputs_follow_the_products(demo):
    products, manifest = demo
    base = shard_products(products, manifest, TFIDF, settings(shard_size=20))
    other = shard_products(
        products, manifest, {**TFIDF, "n_components": 6}, settings(shard_size=20)
    )
    assert other.fingerprint != base.fingerprint
    renamed = products.assign(title=products["title"].where(products.index != 0, "renamed"))
    changed = shard_products(renamed, manifest, TFIDF, settings(shard_size=20))
    assert changed.inputs[0] != base.inputs[0] and changed.inputs[1:] == base.inputs[1:]


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"shard_size": 0}, r"embeddings.shard_size must be a positive number of products, got 0"),
        ({"shard_size": -5}, r"embeddings.shard_size must be a positive"),
        (
            {"backend": "spark"},
            r"embeddings.backend must be one of \('local', 'ray'\), got 'spark'",
        ),
    ],
)
def test_bad_settings_name_the_key(demo, over, message):
    products, manifest = demo
    with pytest.raises(ValueError, match=message):
        shard_products(products, manifest, TFIDF, settings(**over))


def test_ray_backend_without_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(
        ImportError, match=r'the optional extra `scale`: pip install -e "\.\[scale\]"'
    ):
        import_ray()


@pytest.mark.slow
def test_ray_backend_equals_local_on_the_demo(demo, tmp_path, ray_cluster):
    """tiny_ruclip on two actors over 4 shards in blocks of 8 products: same ids in the
    same order and cosine >= 0.9999 per product, written through the dataset."""
    products, manifest = demo
    bundle = write_tiny_checkpoint(products, TINY)
    local = shard_products_with_checkpoint(
        products, manifest, bundle, TINY, settings(shard_size=16)
    ).collect()
    ray_settings = settings(
        shard_size=16, backend="ray", ray={"num_actors": 2, "block_rows": 8, "batch_size": 8}
    )
    ds = ShardedEmbeddingsDataset(str(tmp_path / "ray"))
    ds.save(shard_products_with_checkpoint(products, manifest, bundle, TINY, ray_settings))
    remote = ds.load()
    assert remote.ids.tolist() == local.ids.tolist()
    for m in ("text", "image"):
        assert (np.sum(remote.modality(m) * local.modality(m), axis=1) >= 0.9999).all()
    assert ray_cluster.is_initialized()  # the session's cluster was reused, not shut down
