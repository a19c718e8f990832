"""The contrastive LightningModule: freezing, learning, determinism, clamps, refusals."""

from __future__ import annotations

import math

import pytest
import torch

from tests.models.clip.finetune_job import checksum, run
from tests.models.clip.helpers import FAST, make_data_dir, split
from vitrina.models.clip import ClipBundle, ClipFinetuneConfig
from vitrina.models.clip.finetune import evaluate_retrieval, fine_tune
from vitrina.models.clip.task import freeze_parameters


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("clip_task"))


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    return run(str(data_dir), str(tmp_path_factory.mktemp("a") / "run"))


def test_freezing_a_tower_or_all_but_the_last_blocks(data_dir):
    model = ClipBundle.load(data_dir / "ckpt").model
    counts = freeze_parameters(model, freeze_text=True)
    assert not any(p.requires_grad for p in model.text_model.parameters())
    assert not model.text_projection.weight.requires_grad
    assert all(p.requires_grad for p in model.vision_model.parameters())
    assert model.logit_scale.requires_grad and counts["frozen"] > 0
    freeze_parameters(model, train_last_n_blocks=0)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "logit_scale",
        "visual_projection.weight",
        "text_projection.weight",
        "text_model.final_layer_norm.weight",
        "text_model.final_layer_norm.bias",
        "vision_model.post_layernorm.weight",
        "vision_model.post_layernorm.bias",
    }
    freeze_parameters(model, train_last_n_blocks=1)  # 1 block per tower: all blocks
    assert model.text_model.encoder.layers[0].mlp.fc1.weight.requires_grad
    assert not model.text_model.embeddings.token_embedding.weight.requires_grad
    with pytest.raises(ValueError, match="leaves nothing to train"):
        freeze_parameters(model, freeze_text=True, freeze_vision=True)


def test_training_learns_is_reproducible_and_keeps_the_base(data_dir, uninterrupted, tmp_path):
    base = ClipBundle.load(data_dir / "ckpt")
    before_weights = checksum(base.model)
    config = ClipFinetuneConfig.from_params(FAST)
    _, val = split(__import__("pandas").read_parquet(data_dir / "pairs.parquet"))
    before = evaluate_retrieval(base, val, config)
    after = evaluate_retrieval(uninterrupted.bundle, val, config)
    assert after["mean_recall"] > before["mean_recall"] + 0.2, (before, after)
    assert after["t2i_recall_10"] > 2 * after["chance_t2i_recall_10"]
    assert after["mean_recall"] == pytest.approx(
        uninterrupted.best_metrics["mean_recall"], abs=1e-6
    )
    history = uninterrupted.history
    assert history["epoch"].tolist() == [1, 2, 3] and history["step"].iloc[-1] == 9  # 3 x 3 steps
    assert history["is_best"].iloc[0] == 1 and history["train_loss"].notna().all()
    again = run(str(data_dir), str(tmp_path / "again"))
    assert checksum(again.bundle.model) == checksum(uninterrupted.bundle.model)
    assert checksum(ClipBundle.load(data_dir / "ckpt").model) == before_weights


def test_a_finished_run_is_reused_and_changed_settings_start_afresh(data_dir, tmp_path):
    first = run(str(data_dir), str(tmp_path / "run"), max_epochs=1)
    again = run(str(data_dir), str(tmp_path / "run"), max_epochs=1)
    assert again.fit.resumed and checksum(again.bundle.model) == checksum(first.bundle.model)
    fresh = run(str(data_dir), str(tmp_path / "run"), max_epochs=2)
    assert not fresh.fit.resumed and fresh.history["epoch"].tolist() == [1, 2]


def test_accumulation_and_the_logit_scale_clamp(data_dir, tmp_path):
    result = run(
        str(data_dir),
        str(tmp_path / "acc"),
        max_epochs=1,
        accumulate_grad_batches=3,
        max_logit_scale=5.0,
        learning_rate=0.5,
        gradient_clip_val=None,
    )
    assert result.history["step"].iloc[-1] == 1  # 3 micro-batches, one optimiser step
    assert math.exp(float(result.bundle.model.logit_scale)) <= 5.0 + 1e-4


def test_a_validation_split_smaller_than_k_is_refused(data_dir, tmp_path):
    import pandas as pd

    bundle = ClipBundle.load(data_dir / "ckpt")
    train, val = split(pd.read_parquet(data_dir / "pairs.parquet"))
    with pytest.raises(ValueError, match=r"validation split has 6 pairs, too few for recall@10"):
        fine_tune(bundle, train, val.head(6), ClipFinetuneConfig.from_params(FAST), tmp_path)
    assert torch.isfinite(bundle.model.logit_scale)
