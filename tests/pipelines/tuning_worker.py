"""A tuning worker process for the multi-worker tests (not a test module).

``python -m tests.pipelines.tuning_worker URL STUDY N_TRIALS LOG_DIR [--workers W] [--hang]``
runs the study the way the tuning node does (:func:`vitrina.tuning.open_storage` with a
heartbeat of 1 s and a grace period of 2 s (``--grace``), :func:`vitrina.tuning.make_sampler`,
:func:`vitrina.tuning.run_study`) on a cheap objective. It waits until ``W`` workers are
up (so they really overlap), and appends one line per objective call to
``LOG_DIR/<pid>.log``: the parameters it ran. With ``--hang`` the first trial writes
``LOG_DIR/hung`` and sleeps until the process is killed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from vitrina.tuning import make_sampler, open_storage, parse_space, run_study

SPACE = {
    "x": {"type": "float", "low": 0.0, "high": 1.0},
    "kind": {"type": "categorical", "choices": ["a", "b", "c"]},
}
DEFAULTS = {"x": 0.5, "kind": "a"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("study")
    parser.add_argument("n_trials", type=int)
    parser.add_argument("log_dir", type=Path)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--hang", action="store_true")
    # seconds without a heartbeat before a trial counts as its worker's death
    parser.add_argument("--grace", type=int, default=2)
    args = parser.parse_args()
    storage = open_storage(args.url, heartbeat_interval=1, grace_period=args.grace, max_retry=1)
    (args.log_dir / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 90  # a loaded machine starts Python slowly
    while len(list(args.log_dir.glob("ready-*"))) < args.workers:
        if time.monotonic() > deadline:
            raise SystemExit("the other workers did not start")
        time.sleep(0.02)
    log = args.log_dir / f"{os.getpid()}.log"

    def objective(params, report):
        with log.open("a") as f:
            f.write(json.dumps(params) + "\n")
        if args.hang:
            (args.log_dir / "hung").write_text(json.dumps(params))
            time.sleep(600)  # killed here
        time.sleep(0.02)
        report(params["x"], 0)
        return params["x"] + (params["kind"] == "b")

    run_study(
        objective,
        parse_space(SPACE),
        study_name=args.study,
        storage=storage,
        sampler=make_sampler({"type": "tpe", "seed": 42, "n_startup_trials": 5}),
        n_trials=args.n_trials,
        log_to_mlflow=False,
        first_trial=DEFAULTS,
    )


if __name__ == "__main__":
    main()
