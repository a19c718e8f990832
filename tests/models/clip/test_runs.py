"""End-to-end fine-tuning runs: kill -9 and resume, two DDP processes, a NaN loss."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.models.clip.finetune_job import checksum, run
from tests.models.clip.helpers import make_data_dir
from vitrina.training import NonFiniteLossError

pytestmark = pytest.mark.slow
JOB = Path(__file__).with_name("finetune_job.py")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("clip_runs"))


def job(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(JOB), *args], capture_output=True, text=True, timeout=600
    )


def test_resume_after_kill_9_ends_like_an_uninterrupted_run(data_dir, tmp_path):
    reference = job(str(data_dir), str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    ref = json.loads(reference.stdout.strip().splitlines()[-1])
    killed = job(str(data_dir), str(tmp_path / "killed"), "--kill-after-epoch", "0")
    assert killed.returncode == -9, killed.stderr[-3000:]
    last = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0
    resumed = job(str(data_dir), str(tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert out["resumed"] and out["checksum"] == ref["checksum"]  # bit for bit
    assert out["best_epoch"] == ref["best_epoch"] and out["mean_recall"] == ref["mean_recall"]


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    # visual_projection runs once per training batch (3 per epoch) and once per validation
    # batch (1 per epoch): its 6th call is epoch 1's second batch.
    with pytest.raises(NonFiniteLossError, match=r"training loss is nan at epoch 1, global step 4"):
        run(str(data_dir), str(tmp_path / "nan"), nan_at=6)
    last = torch.load(tmp_path / "nan" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and last["global_step"] == 3
    assert all(
        torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point()
    )


def test_two_ddp_processes_on_cpu_match_one(data_dir, tmp_path):
    """ddp_spawn with gloo: 2 ranks x 4 pairs = 1 process x 8 pairs, same weights."""
    one = run(str(data_dir), str(tmp_path / "one"), max_epochs=2, batch_size=8)
    two = run(str(data_dir), str(tmp_path / "two"), max_epochs=2, batch_size=4, devices=2)
    assert two.best_epoch == one.best_epoch
    assert two.best_metrics["mean_recall"] == pytest.approx(
        one.best_metrics["mean_recall"], abs=1e-4
    )
    for (name, a), b in zip(
        one.bundle.model.state_dict().items(), two.bundle.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0, msg=name)
    assert checksum(one.bundle.model) != ""
