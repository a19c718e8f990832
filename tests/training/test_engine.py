"""The training engine: precision rules, settings, schedules, logs, resume after kill -9."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from vitrina.training import TrainingConfig, precision
from vitrina.training.data import epoch_order
from vitrina.training.loggers import training_history
from vitrina.training.optim import adamw_with_cosine, parameter_groups

JOB = Path(__file__).with_name("resume_job.py")


def run_job(root: Path, *args: str, expect_kill: bool = False) -> dict:
    result = subprocess.run(
        [sys.executable, str(JOB), str(root), *args], capture_output=True, text=True, timeout=600
    )
    if expect_kill:
        assert result.returncode == -9, result.stderr[-3000:]
        return {}
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("flags", "accelerator", "expected"),
    [
        ({"avx2", "fma"}, "cpu", "32-true"),
        ({"avx2", "avx512f", "avx512_bf16"}, "cpu", "bf16-mixed"),
        ({"avx2", "amx_bf16", "amx_tile"}, "cpu", "bf16-mixed"),
    ],
)
def test_auto_precision_follows_cpu_flags(monkeypatch, flags, accelerator, expected):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    assert precision.resolve_precision("auto", accelerator) == expected


def test_explicit_precision_and_aliases():
    assert precision.resolve_precision("fp32", "cpu") == "32-true"
    assert precision.resolve_precision("bf16", "cpu") == "bf16-mixed"
    with pytest.raises(ValueError, match="fp8"):
        precision.resolve_precision("fp8", "cpu")


def test_training_config_names_unknown_and_bad_settings():
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['lr'\].*learning_rate"):
        TrainingConfig.from_params({"lr": 0.1}, where="classification.tasks.x.training")
    with pytest.raises(ValueError, match=r"training.warmup_ratio=1.5 must be in \[0, 1\)"):
        TrainingConfig.from_params({"warmup_ratio": 1.5})
    config = TrainingConfig.from_params({"gradient_clip_val": None, "patience": None})
    assert config.gradient_clip_val is None and config.to_dict()["patience"] is None


def test_parameter_groups_decay_only_matrices_and_scale_backbone():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    groups = parameter_groups(model, 0.1, lr_scales={"0.": 0.5})
    by_name = {g["name"]: g for g in groups}
    assert by_name["decay-x0.5"]["params"] == [model[0].weight]
    assert by_name["decay-x1"]["params"] == [model[2].weight]
    assert (
        model[1].weight in by_name["no_decay-x1"]["params"]
        and by_name["no_decay-x1"]["weight_decay"] == 0
    )
    out = adamw_with_cosine(
        model,
        learning_rate=1.0,
        weight_decay=0.1,
        total_steps=10,
        warmup_ratio=0.2,
        lr_scales={"0.": 0.5},
    )
    lrs = sorted({g["lr"] for g in out["optimizer"].param_groups})
    assert lrs == [0.0]  # warm-up starts at 0
    for _ in range(2):
        out["optimizer"].step()
        out["lr_scheduler"]["scheduler"].step()
    assert sorted({g["lr"] for g in out["optimizer"].param_groups}) == [
        0.5,
        1.0,
    ]  # peak after warm-up


def test_epoch_order_depends_on_seed_and_epoch_only():
    assert torch.equal(epoch_order(50, 1, 3), epoch_order(50, 1, 3))
    assert not torch.equal(epoch_order(50, 1, 3), epoch_order(50, 1, 4))
    assert sorted(epoch_order(50, 2, 0).tolist()) == list(range(50))


def test_training_history_prefers_the_later_attempt(tmp_path):
    for version, rows in {0: [(0, 5, 1.0), (1, 10, 0.9)], 1: [(1, 10, 0.7), (2, 15, 0.6)]}.items():
        folder = tmp_path / "logs" / f"version_{version}"
        folder.mkdir(parents=True)
        pd.DataFrame(rows, columns=["epoch", "step", "train_loss"]).to_csv(
            folder / "metrics.csv", index=False
        )
    history = training_history(tmp_path)
    assert history["train_loss"].tolist() == [1.0, 0.7, 0.6]


@pytest.mark.slow
def test_kill_9_resumes_and_ends_like_an_uninterrupted_run(tmp_path):
    reference = run_job(tmp_path / "reference")
    assert reference["epochs"] == 4 and not reference["resumed"]
    run_job(tmp_path / "killed", "--kill-after-epoch", "0", expect_kill=True)
    last = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0  # killed once epoch 0 was over
    resumed = run_job(tmp_path / "killed")
    assert resumed["resumed"]
    assert resumed["best_score"] == reference["best_score"]
    assert resumed["checksum"] == reference["checksum"]  # bit for bit the same weights
    # The two attempts' CSV logs merge into one history over all four epochs.
    history = training_history(tmp_path / "killed")
    assert sorted(history["epoch"].dropna().unique()) == [0, 1, 2, 3]
    # A finished run is not trained again.
    again = run_job(tmp_path / "killed")
    assert again["resumed"] and again["best_score"] == resumed["best_score"]


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    result = subprocess.run(
        [sys.executable, str(JOB), str(tmp_path), "--nan-at-epoch", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0
    assert "NonFiniteLossError" in result.stderr and "at epoch 2, global step" in result.stderr
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1
    assert all(
        torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point()
    )
