"""vitrina.shards: shard bounds, digests, and the manifest's resume rules."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from vitrina.shards import ShardError, ShardSpec, ShardStore, digest, read_shard, shard_bounds


def specs(n=10, size=4, salt=""):
    return [
        ShardSpec(i, a, b, digest(salt, list(map(str, range(a, b)))))
        for i, (a, b) in enumerate(shard_bounds(n, size))
    ]


def table(spec):
    return pa.table({"x": np.arange(spec.start, spec.stop, dtype=np.int64)})


def test_shard_bounds_cover_the_rows_and_refuse_bad_sizes():
    assert shard_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert shard_bounds(8, 4) == [(0, 4), (4, 8)]
    for bad in (0, -3, 2.5, True, "100"):
        with pytest.raises(ValueError, match=r"embeddings.shard_size must be a positive"):
            shard_bounds(10, bad, "embeddings.shard_size")


def test_digest_separates_neighbouring_strings_and_arrays():
    assert digest(["ab", "c"]) != digest(["a", "bc"])
    assert digest(np.zeros(3, np.float32)) != digest(np.zeros(3, np.float64))
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})


def test_resume_keeps_finished_shards_and_recomputes_damaged_or_changed_ones(tmp_path, caplog):
    plan = specs()
    store = ShardStore(tmp_path, "embeddings", "model-a")
    assert store.open(plan) == [0, 1, 2]
    for spec in plan[:2]:  # "killed" after two shards
        store.write(spec, table(spec))
    assert ShardStore(tmp_path, "embeddings", "model-a").open(plan) == [2]
    # a truncated shard file is detected and recomputed, naming the file
    path = tmp_path / "shard-00001.parquet"
    path.write_bytes(path.read_bytes()[:-20])
    with caplog.at_level("WARNING"):
        assert ShardStore(tmp_path, "embeddings", "model-a").open(plan) == [1, 2]
    assert "shard-00001.parquet" in caplog.text
    with pytest.raises(ShardError, match=r"shard-00001.parquet' cannot be read"):
        read_shard(path)
    # changed products in shard 0 only
    changed = [plan[0].__class__(0, 0, 4, "other")] + plan[1:]
    assert ShardStore(tmp_path, "embeddings", "model-a").open(changed) == [0, 1, 2]


def test_another_fingerprint_rebuilds_everything_and_drops_extra_files(tmp_path, caplog):
    store = ShardStore(tmp_path, "embeddings", "model-a")
    store.open(specs(12))
    for spec in specs(12):
        store.write(spec, table(spec))
    store.finish()
    with caplog.at_level("WARNING"):
        pending = ShardStore(tmp_path, "embeddings", "model-b").open(specs(8))
    assert pending == [0, 1]
    assert "made by another model" in caplog.text
    assert not (tmp_path / "shard-00002.parquet").exists()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["completed"] is False and manifest["fingerprint"] == "model-b"


def test_a_broken_manifest_is_named_and_the_store_rebuilds(tmp_path, caplog):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ShardError, match=r"manifest.json' is not valid JSON"):
        ShardStore.read_manifest(tmp_path)
    with caplog.at_level("WARNING"):
        assert ShardStore(tmp_path, "images", "k").open(specs(4)) == [0]
    with pytest.raises(ShardError, match=r"shard 0 has 3 rows, expected 4"):
        ShardStore(tmp_path, "images", "k").write(specs(4)[0], table(ShardSpec(0, 0, 3, "")))
