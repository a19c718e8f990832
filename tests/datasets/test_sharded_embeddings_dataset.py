"""ShardedEmbeddingsDataset: shard by shard saves, resume after a kill, invalidation,
damaged files, the memory-mapped load and the NPZ export."""

from __future__ import annotations

import json

import numpy as np
import pytest
from kedro.io import DatasetError

from vitrina.datasets import EmbeddingsDataset, ShardedEmbeddingsDataset
from vitrina.embeddings import Embeddings, EmbeddingShards
from vitrina.shards import shard_bounds


def plan(n=10, size=4, seed=0, calls=None, die_after=None, fingerprint="m1"):
    """A plan over ``n`` random products; ``calls`` records computed shards; the compute
    raises after ``die_after`` shards (a killed run)."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"p{i:03d}" for i in range(n)])
    text, image = rng.normal(size=(n, 3)), rng.normal(size=(n, 5))
    bounds = shard_bounds(n, size)

    def compute(indices):
        for k, i in enumerate(indices):
            if die_after is not None and k == die_after:
                raise RuntimeError("killed")
            if calls is not None:
                calls.append(i)
            a, b = bounds[i]
            yield i, Embeddings(ids=ids[a:b], text=text[a:b], image=image[a:b])

    inputs = [f"in{a}-{b}" for a, b in bounds]
    return EmbeddingShards("m", fingerprint, ids, bounds, inputs, compute, export_npz=True)


def test_shards_round_trip_memory_mapped_with_manifest_and_npz_export(tmp_path):
    ds = ShardedEmbeddingsDataset(str(tmp_path / "emb" / "m"))
    p = plan()
    ds.save(p)
    back, ref = ds.load(), p.collect()
    assert back.ids.tolist() == ref.ids.tolist()
    np.testing.assert_array_equal(back.text, ref.text)
    np.testing.assert_array_equal(back.image, ref.image)
    assert isinstance(back.text.base, np.memmap) and back.text.dtype == np.float32
    manifest = json.loads((tmp_path / "emb" / "m" / "manifest.json").read_text())
    assert manifest["completed"] and manifest["num_shards"] == 3 and manifest["num_rows"] == 10
    assert manifest["dims"] == {"text": 3, "image": 5} and manifest["dtype"] == "float32"
    assert [manifest["shards"][str(i)]["rows"] for i in range(3)] == [4, 4, 2]
    npz = EmbeddingsDataset(str(tmp_path / "emb" / "m.npz")).load()
    np.testing.assert_array_equal(npz.text, ref.text)


def test_a_killed_run_resumes_at_its_shard_and_a_complete_one_computes_nothing(tmp_path):
    ds = ShardedEmbeddingsDataset(str(tmp_path / "m"))
    calls = []
    with pytest.raises(DatasetError):
        ds.save(plan(calls=calls, die_after=2))
    assert calls == [0, 1]
    with pytest.raises(DatasetError, match=r"incomplete \(2 of 3 shards\).*resumes"):
        ds.load()
    calls.clear()
    ds.save(plan(calls=calls))
    assert calls == [2]
    np.testing.assert_array_equal(ds.load().text, plan().collect().text)
    calls.clear()
    views = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "m").glob("*.np[yz]")}
    ds.save(plan(calls=calls))
    assert calls == []  # nothing computed, and the views are not rewritten
    assert views == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "m").glob("*.np[yz]")}


def test_another_model_or_changed_products_are_recomputed(tmp_path):
    ds = ShardedEmbeddingsDataset(str(tmp_path / "m"))
    ds.save(plan())
    calls = []
    ds.save(plan(seed=1, calls=calls, fingerprint="m2"))  # another model: all shards
    assert calls == [0, 1, 2]
    np.testing.assert_array_equal(ds.load().text, plan(seed=1).collect().text)
    calls.clear()
    ds.save(plan(n=11, seed=1, calls=calls, fingerprint="m2"))  # one more product
    assert calls == [2]
    assert len(ds.load()) == 11


def test_a_truncated_shard_is_rewritten_and_a_damaged_view_is_named(tmp_path):
    folder = tmp_path / "m"
    ds = ShardedEmbeddingsDataset(str(folder))
    ds.save(plan())
    shard = folder / "shard-00001.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    calls = []
    ds.save(plan(calls=calls))
    assert calls == [1]
    (folder / "text.npy").write_bytes((folder / "text.npy").read_bytes()[:100])
    with pytest.raises(DatasetError, match=r"text.npy"):
        ds.load()


def test_missing_folder_names_the_pipeline_and_wrong_types_are_refused(tmp_path):
    ds = ShardedEmbeddingsDataset(str(tmp_path / "none"))
    assert not ds.exists()
    with pytest.raises(
        DatasetError, match=r"no manifest.json: run `kedro run --pipeline=embeddings`"
    ):
        ds.load()
    with pytest.raises(DatasetError, match=r"saves EmbeddingShards or Embeddings, got dict"):
        ds.save({})
    emb = plan(n=5).collect()
    ds.save(emb)  # a plain Embeddings: one shard
    assert ds.exists() and ds.load().ids.tolist() == emb.ids.tolist()
    assert ds.preview()["data"][-1] == ["shape", "[5, 3]", "[5, 5]"]
