"""Several tuning workers on one Optuna storage: they share the study's trial budget, never
run a trial twice, and a killed worker's trial is failed by the heartbeat and retried.

Each worker is a real process (:mod:`tests.pipelines.tuning_worker`) running the study
through the tuning node's functions on a cheap objective, on one SQLite file (and one
PostgreSQL database, the production backend, for the shared budget).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from kedro.io import DatasetError

from tests.conftest import REPO
from vitrina.datasets import OptunaStorageDataset
from vitrina.tuning import TuningStorageError, open_storage, redact

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def worker(url: str, n_trials: int, log_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    cmd = [sys.executable, "-m", "tests.pipelines.tuning_worker", url, "s", str(n_trials)]
    return subprocess.Popen(
        [*cmd, str(log_dir), *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]


def executed(log_dir: Path) -> dict[str, list[dict]]:
    """``{pid: [params of each objective call]}`` from the workers' logs."""
    return {
        p.stem: [json.loads(line) for line in p.read_text().splitlines()]
        for p in log_dir.glob("*.log")
    }


def test_two_workers_share_the_budget_and_run_no_trial_twice(tmp_path, review_db_url):
    # a fresh SQLite file (BEGIN IMMEDIATE claims, no row locks), then a fresh PostgreSQL
    # database (SELECT ... FOR UPDATE claims)
    url = review_db_url
    # a long grace period: on a loaded machine a stalled heartbeat thread must not make
    # the other worker fail and retry a live trial (that would be a rerun, not a race)
    procs = [worker(url, 6, tmp_path, "--workers", "2", "--grace", "30") for _ in range(2)]
    for proc in procs:
        finish(proc)
    study = optuna.load_study(study_name="s", storage=url)
    runs = executed(tmp_path)
    assert len(runs) == 2 and all(runs.values()), "both workers ran trials"
    calls = [tuple(sorted(p.items())) for params in runs.values() for p in params]
    trials = [tuple(sorted(t.params.items())) for t in study.trials]
    # the counts add up: every trial of the study was run by exactly one worker, once
    assert sorted(calls) == sorted(trials) and len(set(trials)) == len(trials)
    finished = study.get_trials(states=FINISHED)
    assert len(finished) == len(study.trials)  # nothing failed or left running
    assert 6 <= len(finished) <= 7  # the budget; at most one overshoot (one per other worker)
    defaults = [t for t in study.trials if t.user_attrs.get("defaults")]
    assert len(defaults) == 1 and defaults[0].params == {"x": 0.5, "kind": "a"}


def test_sqlite_workers_never_claim_one_waiting_trial_twice(tmp_path):
    # Three workers (threads, each with its own storage and connections) pop 24 enqueued
    # trials of one SQLite file at once. Without BEGIN IMMEDIATE, Optuna's read-check-write
    # claim let about a third of them be claimed twice here.
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    for i in range(24):
        study.enqueue_trial({"x": i}, skip_if_exists=False)
    workers = [optuna.load_study(study_name="s", storage=open_storage(url)) for _ in range(3)]
    claimed: list[int] = []
    barrier = threading.Barrier(len(workers))

    def claim_all(worker_study: optuna.Study) -> None:
        barrier.wait()
        while (trial_id := worker_study._pop_waiting_trial_id()) is not None:
            claimed.append(trial_id)

    threads = [threading.Thread(target=claim_all, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(claimed) == sorted(t._trial_id for t in study.trials)  # each exactly once


def test_a_killed_workers_trial_is_failed_by_the_heartbeat_and_retried(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    doomed = worker(url, 3, tmp_path / "a", "--hang")
    deadline = time.monotonic() + 30
    while not (tmp_path / "a" / "hung").exists():
        assert doomed.poll() is None and time.monotonic() < deadline, doomed.stdout.read()
        time.sleep(0.05)
    hung = json.loads((tmp_path / "a" / "hung").read_text())
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    time.sleep(2.5)  # past the grace period: no heartbeat for 2 s
    finish(worker(url, 3, tmp_path / "b"))
    study = optuna.load_study(study_name="s", storage=url)
    killed = study.trials[0]
    assert killed.state == optuna.trial.TrialState.FAIL and killed.params == hung
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].state == optuna.trial.TrialState.COMPLETE
    assert retried[0].params == hung and retried[0].user_attrs == killed.user_attrs
    assert len(study.get_trials(states=FINISHED)) == 3
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))


def test_storage_passwords_never_reach_messages():
    url = "postgresql+psycopg://vitrina:s3cr3t-pw@127.0.0.1:1/optuna"
    assert redact(url) == "postgresql+psycopg://vitrina:***@127.0.0.1:1/optuna"
    assert redact(url, "password 's3cr3t-pw' rejected") == "password '***' rejected"
    with pytest.raises(TuningStorageError) as err:
        open_storage(url)
    assert "s3cr3t-pw" not in str(err.value) and "vitrina:***@127.0.0.1" in str(err.value)
    # the catalogue entry tuning_storage: the URL from credentials, redacted in its description
    dataset = OptunaStorageDataset(credentials={"url": url})
    assert dataset.load() == url and "s3cr3t-pw" not in str(dataset._describe())
    assert OptunaStorageDataset(credentials={"url": ""}).load() is None  # → tuning.storage
    with pytest.raises(DatasetError, match="'url' string"):
        OptunaStorageDataset(credentials={"url": 5})
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save("sqlite:///x.db")
