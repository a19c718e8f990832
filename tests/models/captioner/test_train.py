"""Both training phases on the engine: resume after kill -9, reuse, fresh starts, pruning."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest

from tests.conftest import REPO
from vitrina.models.captioner import ReportValidation

from .fixtures import train_tiny


def run_job(root, *args, expect_kill=False) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "tests.models.captioner.resume_job", str(root), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    if expect_kill:
        assert result.returncode == -9, result.stderr[-3000:]
        return {}
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["pretraining:0", "captioning:1"])
def test_kill_9_resumes_and_ends_like_an_uninterrupted_run(tmp_path, kill):
    reference = run_job(tmp_path / "reference")
    assert not reference["resumed"] and len(reference["val_loss"]) == 3
    run_job(tmp_path / "killed", "--kill", kill, expect_kill=True)
    phase = kill.split(":")[0]
    assert (tmp_path / "killed" / "run" / phase / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "killed" / "run" / phase / "done.json").exists()
    resumed = run_job(tmp_path / "killed")
    assert resumed["resumed"] == (phase == "captioning")
    assert resumed["val_bow_loss"] == pytest.approx(reference["val_bow_loss"], rel=1e-6)
    assert resumed["val_loss"] == pytest.approx(reference["val_loss"], rel=1e-6)
    assert resumed["checksum"] == reference["checksum"]  # bit for bit the same weights
    assert resumed["best_epoch"] == reference["best_epoch"]
    again = run_job(tmp_path / "killed")  # finished: only reloaded
    assert again["resumed"] and again["checksum"] == reference["checksum"]


def test_finished_run_is_reused_and_changed_settings_start_afresh(images, tmp_path):
    first = train_tiny(images, tmp_path / "run", pretrain_max_epochs=0, bow_weight=0.0)
    best = tmp_path / "run" / "captioning" / "checkpoints" / "best.ckpt"
    stamp = best.stat().st_mtime_ns
    again = train_tiny(images, tmp_path / "run", pretrain_max_epochs=0, bow_weight=0.0)
    assert again.resumed and best.stat().st_mtime_ns == stamp
    assert again.best_val_loss == first.best_val_loss
    assert not (tmp_path / "run" / "pretraining").exists()
    # A runtime setting (threads, samples) is not part of the fingerprint ...
    same = train_tiny(images, tmp_path / "run", pretrain_max_epochs=0, bow_weight=0.0,
                      sample_images=0)  # fmt: skip
    assert same.resumed
    # ... one that changes what is learned is.
    changed = train_tiny(images, tmp_path / "run", pretrain_max_epochs=0, bow_weight=0.0,
                         learning_rate=1e-3)  # fmt: skip
    assert not changed.resumed and best.stat().st_mtime_ns != stamp


def test_validation_reports_reach_the_tuner_and_pruning_stops_training(images, tmp_path):
    seen = []

    def report(value: float, epoch: int) -> None:
        seen.append((epoch, value))
        if epoch == 1:
            raise optuna.TrialPruned

    with pytest.raises(optuna.TrialPruned):
        train_tiny(images, tmp_path / "run", callbacks=[ReportValidation(report)])
    assert [e for e, _ in seen] == [1]  # captioning epochs only, then stopped
    assert not (tmp_path / "run" / "captioning" / "done.json").exists()


def test_changing_only_captioning_settings_reuses_the_pretraining(images, tmp_path):
    train_tiny(images, tmp_path / "run", max_epochs=1)
    done = tmp_path / "run" / "pretraining" / "done.json"
    stamp = done.stat().st_mtime_ns
    again = train_tiny(images, tmp_path / "run", max_epochs=1, token_dropout=0.1)
    assert not again.resumed  # captioning trained afresh ...
    assert done.stat().st_mtime_ns == stamp  # ... on the same pre-trained encoder
    train_tiny(images, tmp_path / "run", max_epochs=1, pretrain_learning_rate=1e-2)
    assert done.stat().st_mtime_ns != stamp
