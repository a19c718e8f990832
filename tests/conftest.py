"""Shared fixtures: a throw-away copy of the Kedro project with a small test environment."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from tests.review_db import pg_server, review_db_url  # noqa: F401 - shared fixtures

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def make_project(
    root: Path, n_products: int = 300, extra_env: dict[str, str] | None = None
) -> Path:
    """Copy pyproject + conf into ``root`` and add a ``test`` environment.

    The ``test`` environment writes every output under ``root/data/*/test`` and uses a
    demo catalogue of ``n_products`` products, so a whole run takes seconds.
    """
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.copy(REPO / ".telemetry", root / ".telemetry")
    (root / "src").mkdir()  # the package itself is installed (editable) in the venv
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir(exist_ok=True)
    env = root / "conf" / "test"
    env.mkdir(exist_ok=True)
    files = {
        "globals.yml": "catalogue: test\n",
        "catalog.yml": f"""
            raw_products:
              type: vitrina.datasets.DemoCatalogueDataset
              path: data/01_raw/demo_test
              n_products: {n_products}
              seed: 7
              metadata:
                kedro-viz:
                  layer: raw
        """,
        "parameters_ingestion.yml": (REPO / "conf/base/parameters_ingestion.yml")
        .read_text()
        .replace("data/01_raw/demo/images", "data/01_raw/demo_test/images"),
        "parameters_image_processing.yml": """
            image_processing:
              size: 64
              mode: pad
              background: [255, 255, 255]
              output_dir: data/02_intermediate/test/images
              format: JPEG
              quality: 90
              n_workers: 2
        """,
    }
    files.update(extra_env or {})
    for name, text in files.items():
        (env / name).write_text(textwrap.dedent(text))
    return root


@pytest.fixture
def kedro_project(tmp_path, monkeypatch):
    """A project copy in ``tmp_path`` with the ``test`` env active; cwd is the project."""
    root = make_project(tmp_path / "project")
    monkeypatch.chdir(root)
    monkeypatch.setenv("KEDRO_ENV", "test")
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "true")
    return root


def kedro_cli(project: Path, *args: str, timeout: int = 600, expect_failure: bool = False) -> str:
    """Run ``kedro <args>`` in ``project`` as a user would; return its output.

    Args:
        expect_failure: the command must exit non-zero (its output is returned for the
            test to check the error message).

    Raises:
        AssertionError: an exit status other than expected, with the end of the output.
    """
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    result = subprocess.run(
        [str(Path(sys.executable).with_name("kedro")), *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    output = result.stdout + result.stderr
    if expect_failure:
        assert result.returncode != 0, (
            f"kedro {' '.join(args)} should have failed:\n{output[-4000:]}"
        )
    else:
        assert result.returncode == 0, f"kedro {' '.join(args)} failed:\n{output[-4000:]}"
    return output


@pytest.fixture(autouse=True)
def no_mlflow_run_leaks_between_tests():
    """After every test: no MLflow run stays active, whatever store it was opened in.

    A test that opens a run in its own tracking store and restores the tracking URI
    before the run ends would leave the next test's ``mlflow.end_run()`` looking for that
    run in another store ("Run with id=... not found"). Runs are ended where they can be;
    a run of a store that is gone is dropped from MLflow's run stack.
    """
    import mlflow
    import mlflow.tracking.fluent as fluent
    from mlflow.exceptions import MlflowException

    yield
    while mlflow.active_run():
        try:
            mlflow.end_run()
        except MlflowException:
            fluent._active_run_stack.get().clear()


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs, bound to 127.0.0.1, no dashboard, no usage
    statistics) for every Ray test of the session, shut down at its end; skipped with the
    command to install it when the ``scale`` extra is missing."""
    import os

    ray = pytest.importorskip(
        "ray", reason='Ray tests need the scale extra: pip install -e ".[scale]"'
    )
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # node IP: loopback
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
