"""kill -9 during the save of every parquet and CSV dataset of the catalogue.

For each dataset (factories resolved for the pipelines' dataset names), a child process
builds the catalogue as a run does, makes it atomic as the project hook does, and is
killed right after it began writing the file (:mod:`tests.faults.inject`); the previous
file must be intact, and the next save must give what an uninterrupted save gives.
"""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog

from tests.faults.harness import run_killed, temporaries
from vitrina import settings
from vitrina.datasets.atomic import make_catalog_atomic
from vitrina.utils import remove_stale_temporaries

pytestmark = pytest.mark.slow

SAVE = """
import sys
import pandas as pd
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog
from vitrina import settings
from vitrina.datasets.atomic import make_catalog_atomic
name, table = sys.argv[1], sys.argv[2]
loader = OmegaConfigLoader("conf", env="test", **settings.CONFIG_LOADER_ARGS)
catalog = DataCatalog.from_config(loader["catalog"], credentials=loader["credentials"])
make_catalog_atomic(catalog, [name])
catalog.get(name)._logging_activated = False  # MLflow artefact wrappers: no tracking store
catalog.save(name, pd.read_parquet(table))
"""


def _tables(kind: str) -> pd.DataFrame:
    return pd.DataFrame({"product_id": ["a", "b", "c"], "value": [1.5, 2.5, 3.5], "kind": kind})


def test_a_kill_during_any_table_save_keeps_the_old_file_and_the_next_save_completes(
    kedro_project,
):
    from vitrina.pipeline_registry import build_pipelines

    loader = OmegaConfigLoader(
        str(kedro_project / "conf"), env="test", **settings.CONFIG_LOADER_ARGS
    )
    catalog = DataCatalog.from_config(loader["catalog"], credentials=loader["credentials"])
    names = sorted({d for p in build_pipelines(None).values() for d in p.datasets()})
    tables = [
        name
        for name in sorted(set(catalog.keys()) | {n for n in names if n in catalog})
        if type(catalog.get(name)).__name__.endswith(("ParquetDataset", "CSVDataset"))
    ]
    assert {"products", "image_manifest", "probing_splits", "probing_metrics"} <= set(tables)
    old, new = _tables("old"), _tables("new")
    new.to_parquet(kedro_project / "new.parquet")
    make_catalog_atomic(catalog, tables)
    for name in tables:
        dataset = catalog.get(name)
        dataset._logging_activated = False
        catalog.save(name, old)
        path = dataset._get_load_path()
        before = open(path, "rb").read()  # noqa: SIM115
        code = textwrap.dedent(SAVE)
        run_killed(kedro_project, ["python", "-c", code, name, "new.parquet"], path.name)
        assert open(path, "rb").read() == before, f"{name}: the previous file was damaged"
        catalog.save(name, new)  # the next run
        loaded = catalog.load(name)
        assert loaded["kind"].tolist() == ["new"] * 3, name
    # each killed save left its temporary file; the next run's hook removes them all
    left = temporaries(kedro_project)
    assert len(left) == len(tables)
    assert sorted(remove_stale_temporaries(kedro_project / "data")) == sorted(left)
    assert temporaries(kedro_project) == []
