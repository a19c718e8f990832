"""Parent side of the fault tests: killed runs, snapshots of results, comparisons.

A :class:`FaultCase` names a ``kedro run`` that is killed with ``SIGKILL`` right after it
began writing a file (:mod:`tests.faults.inject`), what must be redone or kept, and which
results the rerun must share with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tests.conftest import REPO

#: Columns and keys that record how long something took or when: never compared.
VOLATILE = re.compile(
    r"(^|_)(seconds|duration|elapsed|time|timestamp|run_id|date|per_s)(_|$)", re.I
)
#: A Kedro version folder (versioned datasets): compared as ``<version>``, the latest one.
VERSION = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}\.\d{2}\.\d{2}\.\d{3}Z")


@dataclass(frozen=True)
class FaultCase:
    """One kill -9 case.

    Attributes:
        name: test id.
        pipelines: the ``--pipelines`` value of the run that is killed and then rerun.
        kill_at: file name (glob) whose writing is interrupted; a temporary name beside it
            counts as the name itself.
        results: globs under ``data/`` whose content the rerun must share with the
            uninterrupted run (``**`` recursive).
        nth: the run is killed at the ``nth`` opening for writing of ``kill_at``.
        reset: globs under ``data/`` deleted before the killed run: the outputs it must
            redo (resumable steps). Empty: the run overwrites outputs that exist, and the
            killed save must leave the previous file as it was (atomic saves).
        needs: pipelines the uninterrupted reference run needs besides ``pipelines``.
    """

    name: str
    pipelines: str
    kill_at: str
    results: tuple[str, ...]
    nth: int = 1
    reset: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child run: this checkout's ``src`` and ``tests`` importable."""
    path = os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {
        **os.environ,
        "PYTHONPATH": path,
        "KEDRO_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
        **extra,
    }


def run_killed(project: Path, args: list[str], kill_at: str, nth: int = 1) -> str:
    """Run ``args`` (``["kedro", "run", ...]`` or ``["python", "-c", code]``) in ``project``
    under the injector; assert it died of SIGKILL; return its output."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.faults.inject", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=900,
        env=child_env(VITRINA_KILL_AT=f"{kill_at}:{nth}"),
    )
    output = result.stdout + result.stderr
    assert result.returncode == -signal.SIGKILL, (
        f"{' '.join(args)} was not killed at {kill_at} #{nth} (exit {result.returncode}):\n"
        + output[-3000:]
    )
    return output


def copy_project(source: Path, target: Path) -> Path:
    """A copy of a project without its MLflow store (it records absolute artefact paths)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("mlflow.db", "mlruns"))
    return target


def delete(project: Path, globs: tuple[str, ...]) -> None:
    for pattern in globs:
        for path in sorted((project / "data").glob(pattern), reverse=True):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def temporaries(project: Path) -> list[Path]:
    """Temporary files and folders of atomic writes under ``data/``."""
    return [p for p in (project / "data").rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]


def _read(path: Path) -> Any:
    suffix = path.suffix
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        frame = pd.read_csv(path, keep_default_na=False)
        return frame.drop(columns=[c for c in frame.columns if VOLATILE.search(str(c))])
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    if suffix in (".pt", ".bin"):
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    if suffix == ".json":
        return _drop_volatile(json.loads(path.read_text(encoding="utf-8")))
    return path.read_bytes()


def _drop_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_volatile(v) for k, v in value.items() if not VOLATILE.search(str(k))}
    if isinstance(value, list):
        return [_drop_volatile(v) for v in value]
    return value


def snapshot(project: Path, globs: tuple[str, ...]) -> dict[str, Any]:
    """``{relative path: content}`` of the files matching ``globs`` under ``data/``; version
    folders are named ``<version>`` (the latest version of each file kept); temporaries
    are not results."""
    data = project / "data"
    found: dict[str, tuple[str, Path]] = {}
    for pattern in globs:
        for path in sorted(data.glob(pattern)):
            if not path.is_file() or ".tmp-" in path.as_posix() or ".old-" in path.as_posix():
                continue
            relative = path.relative_to(data).as_posix()
            key = VERSION.sub("<version>", relative)
            if key not in found or relative > found[key][0]:
                found[key] = (relative, path)
    return {key: _read(path) for key, (_, path) in sorted(found.items())}


def assert_same(actual: Any, expected: Any, where: str = "") -> None:
    """Exact equality of snapshots (tables, arrays, tensors, nested JSON, bytes)."""
    import torch

    if isinstance(expected, dict):
        assert isinstance(actual, dict) and sorted(actual) == sorted(expected), (
            f"{where}: keys differ: {sorted(set(actual) ^ set(expected))[:10]}"
        )
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(actual, expected, check_exact=True, obj=where)
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(actual, expected, err_msg=where)
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected), f"{where}: tensors differ"
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), f"{where}: lengths differ"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: {str(actual)[:200]} != {str(expected)[:200]}"
