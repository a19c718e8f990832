"""Atomic saves of kedro-datasets' writers: kill -9 mid-save, failed saves, the whole catalogue."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset

from tests.conftest import REPO
from vitrina.datasets.atomic import AtomicLocalFileSystem, make_atomic, make_catalog_atomic

#: Dataset types that write through vitrina.utils.atomic_path themselves, or never write
#: a file (memory, MLflow metrics, read-only sources, a folder its node fills atomically).
SELF_ATOMIC_OR_NO_FILE = {
    "CaptionerDataset",
    "ClassifierDataset",
    "DemoCatalogueDataset",
    "EmbeddingsDataset",
    "ErMagellanDataset",
    "ImageFolderDataset",
    "MemoryDataset",
    "MlflowMetricsHistoryDataset",
    "PairMatcherDataset",
    "ClipCheckpointDataset",
    "ReviewStoreDataset",  # a database: transactions, no file written
    "JSONPostDataset",  # an HTTP POST
    "SQLQueryDataset",  # a read-only query of the review database (save raises)
    "OptunaStorageDataset",  # read-only: the storage URL from credentials (save raises)
    "SeedClassificationDataset",  # read-only sources
    "SeedMetricLearningDataset",
    "ShardedEmbeddingsDataset",  # each shard, view and manifest through atomic_path
}

SAVER = """
import sys
import numpy as np, pandas as pd
from kedro.io import DataCatalog
from vitrina.datasets.atomic import make_catalog_atomic
catalog = DataCatalog.from_config({"products": {"type": "pandas.ParquetDataset", "filepath": sys.argv[1]}})
make_catalog_atomic(catalog, ["products"])  # what the project hook does before a run
n = 4_000_000
rng = np.random.default_rng(0)
big = pd.DataFrame({"id": np.arange(n), "x": rng.random(n), "title": rng.integers(0, 10**9, n).astype(str)})
print("saving", flush=True)
catalog.save("products", big)
print("saved", flush=True)
"""


def test_kill_9_during_the_save_of_a_large_parquet_leaves_the_old_file(tmp_path):
    target = tmp_path / "products.parquet"
    old = pd.DataFrame({"id": np.arange(1000), "title": [f"t{i}" for i in range(1000)]})
    old.to_parquet(target)
    before = target.read_bytes()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SAVER), str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout.readline().strip() == "saving", child.stderr.read()
    deadline = time.monotonic() + 60
    while (
        time.monotonic() < deadline
    ):  # the save has begun: a temporary file, or the target changed
        temporaries = list(tmp_path.glob(".products.parquet.tmp-*"))
        if temporaries or not target.exists() or target.stat().st_size != len(before):
            break
        time.sleep(0.005)
    time.sleep(0.05)
    child.send_signal(signal.SIGKILL)  # kill -9, mid-save
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, "the save finished before the kill: make it bigger"
    assert target.read_bytes() == before, "the previous good file was damaged"
    pd.testing.assert_frame_equal(pd.read_parquet(target), old)


def test_a_save_that_fails_midway_leaves_the_old_file(tmp_path):
    catalog = DataCatalog.from_config(
        {
            "report": {"type": "pandas.CSVDataset", "filepath": str(tmp_path / "r.csv")},
            "summary": {"type": "text.TextDataset", "filepath": str(tmp_path / "s.md")},
        }
    )
    assert make_catalog_atomic(catalog, ["report", "summary", "absent"]) == ["report", "summary"]
    catalog.save("report", pd.DataFrame({"a": [1, 2]}))
    catalog.save("summary", "# old")

    class Unwritable(pd.DataFrame):
        def to_csv(self, path_or_buf=None, **kwargs):
            path_or_buf.write("a\n")
            raise OSError("disk full")

    with pytest.raises(Exception, match="disk full"):
        catalog.save("report", Unwritable({"a": [3]}))
    assert catalog.load("report")["a"].tolist() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "s.md"]  # no temporary left
    assert make_atomic(catalog.get("report")) and make_atomic(MemoryDataset()) is False
    copied = pickle.loads(pickle.dumps(catalog.get("report")))  # as ParallelRunner sends it
    assert isinstance(copied._fs, AtomicLocalFileSystem)


def test_every_file_dataset_of_every_environment_saves_atomically(kedro_project):
    """The hook's wrapping covers every catalogue entry (factories resolved for the run's
    dataset names); datasets it does not wrap must be of a type that is atomic itself."""
    from kedro.config import OmegaConfigLoader

    from vitrina import settings
    from vitrina.pipeline_registry import build_pipelines

    names = sorted({d for p in build_pipelines(None).values() for d in p.datasets()})
    checked = set()
    for env in ("test", "hm", "er_magellan", "seed004_multiclass", "seed004_metric"):
        loader = OmegaConfigLoader(
            str(kedro_project / "conf"), env=env, **settings.CONFIG_LOADER_ARGS
        )
        catalog = DataCatalog.from_config(loader["catalog"], credentials=loader["credentials"])
        keys = sorted(set(catalog.keys()) | {n for n in names if n in catalog})
        wrapped = set(make_catalog_atomic(catalog, keys))
        for name in keys:
            dataset = catalog.get(name)
            kind = type(dataset).__name__
            if name in wrapped:
                assert isinstance(dataset._fs, AtomicLocalFileSystem)
            else:
                assert kind in SELF_ATOMIC_OR_NO_FILE, f"{env}: {name} ({kind}) is not atomic"
            checked.add(kind)
    assert {"ParquetDataset", "CSVDataset", "JSONDataset", "TextDataset"} <= checked
    assert any("Mlflow" in k for k in checked)


def test_the_run_hook_makes_the_run_datasets_atomic(tmp_path):
    from kedro.pipeline import Node, Pipeline

    from vitrina.hooks import RunChecks

    catalog = DataCatalog.from_config(
        {"products": {"type": "pandas.ParquetDataset", "filepath": str(tmp_path / "p.parquet")}}
    )
    pipeline = Pipeline([Node(lambda: pd.DataFrame({"a": [1]}), None, "products", name="make")])
    RunChecks().before_pipeline_run({"project_path": str(tmp_path)}, pipeline, catalog)
    assert isinstance(catalog.get("products")._fs, AtomicLocalFileSystem)
    assert Path(tmp_path).exists()
