"""Contrastive fine-tuning: loss, metrics, optimisation pieces, determinism, resume, DDP."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPModel

from tests.conftest import REPO
from vitrina.models.clip_training import (
    ClipAdapter,
    NonFiniteLossError,
    TrainConfig,
    WarmupCosine,
    chance_recall,
    contrastive_loss,
    epoch_batches,
    evaluate_retrieval,
    freeze_parameters,
    load_training_state,
    pair_data_from_frame,
    parameter_groups,
    retrieval_metrics,
    retrieval_ranks,
    train_clip,
)
from vitrina.models.ruclip import load_ruclip, write_tiny_ruclip_checkpoint

COLOURS = {
    "красный": (220, 30, 30),
    "зелёный": (30, 180, 60),
    "синий": (30, 60, 220),
    "жёлтый": (240, 220, 40),
    "чёрный": (10, 10, 10),
    "белый": (250, 250, 250),
}
PARTS = {
    "верх": (0, 0, 32, 16),
    "низ": (0, 16, 32, 32),
    "лево": (0, 0, 16, 32),
    "право": (16, 0, 32, 32),
}
TINY = dict(
    vocab_size=80,
    embed_dim=16,
    image_resolution=32,
    vision_patch_size=16,
    vision_width=64,
    vision_layers=1,
    transformer_width=32,
    transformer_heads=2,
    transformer_layers=1,
    context_length=16,
)
FAST = dict(progress=False, num_workers=1, eval_batch_size=64)


# ---------------------------------------------------------------------- data helpers
def make_pairs(root: Path, copies: int = 2) -> pd.DataFrame:
    """24 colour × part combinations, ``copies`` noisy images of each: a learnable task."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for c, (colour, rgb) in enumerate(COLOURS.items()):
        for p, (part, box) in enumerate(PARTS.items()):
            for k in range(copies):
                arr = rng.integers(100, 156, size=(32, 32, 3)).astype(np.uint8)
                x0, y0, x1, y1 = box
                arr[y0:y1, x0:x1] = rgb
                path = root / f"{c}{p}{k}.png"
                Image.fromarray(arr).save(path)
                title = f"{colour} {part}"
                rows.append(
                    {
                        "product_id": f"{c}{p}{k}",
                        "title": title,
                        "processed_path": str(path),
                        "group_id": f"{c}{p}",
                        "image_key": f"{c}{p}{k}",
                        "text_key": title,
                    }
                )
    return pd.DataFrame(rows)


def make_checkpoint(path: Path, titles: list[str], seed: int = 0) -> Path:
    return write_tiny_ruclip_checkpoint(path, titles * 4, seed=seed, **TINY)


def split(pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Copy 0 of every combination trains, copy 1 validates (titles seen, images new)."""
    val = pairs["product_id"].str.endswith("1")
    return pairs[~val].reset_index(drop=True), pairs[val].reset_index(drop=True)


def train_from_files(
    data_dir: str,
    state_dir: str | None,
    config: dict,
    raise_at: int | None = None,
    kill_at: int | None = None,
    nan_at: int | None = None,
):
    """Build everything from ``data_dir`` and train (also run in a subprocess)."""
    pairs = pd.read_parquet(Path(data_dir) / "pairs.parquet")
    bundle = load_ruclip(Path(data_dir) / "ckpt")
    adapter = ClipAdapter(bundle)
    train_df, val_df = split(pairs)
    train = pair_data_from_frame(adapter, train_df, progress=False)
    val = pair_data_from_frame(adapter, val_df, progress=False)
    calls = {"n": 0}
    if nan_at is not None:

        def poison(module, args, out):
            calls["n"] += 1
            return out * float("nan") if calls["n"] == nan_at else out

        bundle.model.visual_projection.register_forward_hook(poison)

    class Interrupt:
        def on_step(self, step, metrics):
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if step == raise_at:
                raise KeyboardInterrupt(f"interrupted at step {step}")

        def on_epoch(self, epoch, metrics):
            pass

    return train_clip(
        bundle.model,
        train,
        val,
        TrainConfig(**{**FAST, **config}),
        state_dir=state_dir,
        hooks=[Interrupt()],
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_pairs")
    pairs = make_pairs(root / "images")
    pairs.to_parquet(root / "pairs.parquet")
    make_checkpoint(root / "ckpt", pairs["title"].tolist())
    return root


RESUME_CONFIG = dict(epochs=3, batch_size=8, lr=3e-3, save_every_steps=2, seed=3)


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    return train_from_files(str(data_dir), str(tmp_path_factory.mktemp("a")), RESUME_CONFIG)


def _assert_same_run(a, b, atol=1e-4):
    assert [h["epoch"] for h in a.history] == [h["epoch"] for h in b.history]
    for ha, hb in zip(a.history, b.history, strict=True):
        for key in ("train_loss", "val_loss", "mean_recall", "t2i_recall_1", "i2t_recall_10"):
            assert ha[key] == pytest.approx(hb[key], abs=atol), key
    assert a.best_epoch == b.best_epoch
    for (name, pa), pb in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(pa, pb, atol=atol, rtol=0, msg=name)


# ---------------------------------------------------------------------- loss
def test_contrastive_loss_matches_the_formula_on_a_hand_made_batch():
    img = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalised: e1, e2
    txt = torch.tensor([[3.0, 0.0], [1.0, 1.0]])  # normalised: e1, (e1 + e2) / sqrt 2
    scale = torch.tensor(math.log(10.0))
    s = 10 * np.array([[1.0, 1 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]])  # image x text

    def ce(logits, target):
        return -(logits[target] - np.log(np.exp(logits).sum()))

    i2t = (ce(s[0], 0) + ce(s[1], 1)) / 2
    t2i = (ce(s[:, 0], 0) + ce(s[:, 1], 1)) / 2
    assert float(contrastive_loss(img, txt, scale)) == pytest.approx((i2t + t2i) / 2, rel=1e-6)
    # Uninformative features: log B; perfectly aligned ones with a large scale: ~0.
    same = torch.ones(4, 8)
    assert float(contrastive_loss(same, same, torch.tensor(0.0))) == pytest.approx(math.log(4))
    eye = torch.eye(4)
    assert float(contrastive_loss(eye, eye, torch.tensor(math.log(100.0)))) < 1e-10


def test_duplicate_pairs_need_no_special_target():
    """Pairs 0 and 1 share an image (one encoder output used twice): the hard-target loss
    and its gradients equal those of a target spread evenly over both titles."""
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    txt = torch.tensor([[1.0, 0.3], [1.0, -0.2], [0.1, 1.0]], requires_grad=True)
    img = images[[0, 0, 1]]
    scale = torch.tensor(math.log(20.0))
    loss = contrastive_loss(img, txt, scale)
    logits = 20 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()
    target = torch.tensor([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1.0]])
    soft_i = -(target * logits.log_softmax(1)).sum(1).mean()
    soft_t = -(target * logits.t().log_softmax(1)).sum(1).mean()
    soft = (soft_i + soft_t) / 2
    assert loss.item() == pytest.approx(soft.item(), rel=1e-6)
    hard_grads = torch.autograd.grad(loss, [images, txt], retain_graph=True)
    for a, b in zip(hard_grads, torch.autograd.grad(soft, [images, txt]), strict=True):
        torch.testing.assert_close(a, b)


def test_a_batch_of_one_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="a batch of one has no negative"):
        contrastive_loss(torch.ones(1, 4), torch.ones(1, 4), torch.tensor(1.0))
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        TrainConfig(batch_size=1)
    # A trailing batch of one is merged into the previous batch; every batch has >= 2 pairs.
    batches = epoch_batches(9, 4, epoch=0, seed=0)
    assert [len(b) for b in batches] == [4, 5]
    assert sorted(np.concatenate(batches)) == list(range(9))
    with pytest.raises(ValueError, match="at least 2 training pairs"):
        epoch_batches(1, 4, 0, 0)


def test_epoch_batches_are_seeded_and_split_evenly_across_processes():
    a, b = epoch_batches(50, 8, 3, 7), epoch_batches(50, 8, 3, 7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], epoch_batches(50, 8, 4, 7)[0])  # new order each epoch
    two = epoch_batches(51, 8, 3, 7, world_size=2)
    assert all(len(x) % 2 == 0 and len(x) >= 2 for x in two)
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        epoch_batches(50, 7, 0, 0, world_size=2)


# ---------------------------------------------------------------------- retrieval metrics
def test_retrieval_ranks_and_recall_on_hand_made_embeddings():
    # text i is closest to image perm[i]: ranks are known by construction.
    text = np.eye(4, dtype=np.float32)
    image = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float32)
    image = image + 0.1 * np.eye(4, dtype=np.float32)  # the true image is second best
    ranks = retrieval_ranks(text, image)
    assert ranks.tolist() == [1, 2, 2, 1]
    m = retrieval_metrics(text, image, ks=(1, 2))
    assert m["t2i_recall_1"] == 0.5 and m["t2i_recall_2"] == 1.0
    assert m["t2i_median_rank"] == 1.5 and m["n"] == 4
    # Ties count against the query: constant embeddings get the worst rank, not the best.
    const = retrieval_metrics(np.ones((4, 3)), np.ones((4, 3)), ks=(1,))
    assert const["t2i_recall_1"] == 0.0 and const["t2i_median_rank"] == 4
    # Pairs 1 and 2 share a title: either image counts for either title.
    keys = retrieval_metrics(text, image, ks=(1, 2), text_keys=np.array([0, 1, 1, 2]))
    assert keys["t2i_recall_1"] == 1.0 and keys["i2t_recall_1"] == 1.0


def test_chance_recall_equals_the_exact_combinatorics():
    n, k = 7, 3
    for p in (1, 2, 4):
        hits = [any(i < p for i in top) for top in combinations(range(n), k)]
        assert chance_recall(np.array([p]), n, k) == pytest.approx(np.mean(hits))
    m = retrieval_metrics(np.eye(20), np.eye(20), ks=(10,))
    assert m["chance_t2i_recall_10"] == pytest.approx(0.5)


def test_a_validation_split_smaller_than_k_is_refused(data_dir):
    with pytest.raises(ValueError, match="needs at least 10 pairs"):
        retrieval_metrics(np.eye(5), np.eye(5), ks=(1, 10))
    bundle = load_ruclip(data_dir / "ckpt")
    pairs = pd.read_parquet(data_dir / "pairs.parquet")
    data = pair_data_from_frame(ClipAdapter(bundle), pairs, progress=False)
    with pytest.raises(ValueError, match=r"validation split has 6 pairs, too few for recall@10"):
        train_clip(bundle.model, data, data.subset(np.arange(6)), TrainConfig(**FAST))


# ---------------------------------------------------------------------- optimisation pieces
@pytest.fixture(scope="module")
def clip_model(data_dir):
    return load_ruclip(data_dir / "ckpt").model


def test_parameter_groups_spare_biases_norms_and_embeddings(clip_model):
    groups = {g["name"]: g for g in parameter_groups(clip_model, 0.2)}
    names = {id(p): n for n, p in clip_model.named_parameters()}
    no_decay = {names[id(p)] for p in groups["no_decay"]["params"]}
    decay = {names[id(p)] for p in groups["decay"]["params"]}
    assert groups["decay"]["weight_decay"] == 0.2 and groups["no_decay"]["weight_decay"] == 0.0
    assert {
        "logit_scale",
        "text_model.embeddings.token_embedding.weight",
        "text_model.embeddings.position_embedding.weight",
        "vision_model.embeddings.class_embedding",
        "vision_model.embeddings.position_embedding.weight",
        "vision_model.pre_layrnorm.weight",
        "text_model.final_layer_norm.bias",
    } <= no_decay
    assert all(n.endswith("weight") for n in decay) and not any("norm" in n for n in decay)
    assert (
        "text_projection.weight" in decay
        and "vision_model.embeddings.patch_embedding.weight" in decay
    )
    assert len(decay) + len(no_decay) == len(names)


def test_warmup_then_cosine_schedule():
    s = WarmupCosine(warmup_steps=4, total_steps=14)
    assert [s(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert s(4) == 1.0 and s(9) == pytest.approx(0.5) and s(14) == pytest.approx(0.0)
    assert all(s(i) >= s(i + 1) for i in range(4, 14))
    assert WarmupCosine(0, 10, min_ratio=0.1)(10) == pytest.approx(0.1)


def test_freezing_a_tower_or_all_but_the_last_blocks(clip_model):
    counts = freeze_parameters(clip_model, freeze_text=True)
    assert not any(p.requires_grad for p in clip_model.text_model.parameters())
    assert not clip_model.text_projection.weight.requires_grad
    assert all(p.requires_grad for p in clip_model.vision_model.parameters())
    assert clip_model.logit_scale.requires_grad and counts["frozen"] > 0
    freeze_parameters(clip_model, train_last_n_blocks=0)
    trainable = {n for n, p in clip_model.named_parameters() if p.requires_grad}
    assert trainable == {
        "logit_scale",
        "visual_projection.weight",
        "text_projection.weight",
        "text_model.final_layer_norm.weight",
        "text_model.final_layer_norm.bias",
        "vision_model.post_layernorm.weight",
        "vision_model.post_layernorm.bias",
    }
    freeze_parameters(clip_model, train_last_n_blocks=1)  # 1 block per tower: all blocks
    assert clip_model.text_model.encoder.layers[0].mlp.fc1.weight.requires_grad
    assert not clip_model.text_model.embeddings.token_embedding.weight.requires_grad
    with pytest.raises(ValueError, match="leaves nothing to train"):
        freeze_parameters(clip_model, freeze_text=True, freeze_vision=True)
    freeze_parameters(clip_model)
    assert all(p.requires_grad for p in clip_model.parameters())


def test_config_names_unknown_or_invalid_parameters():
    with pytest.raises(
        ValueError, match=r"unknown clip_finetune.train parameter\(s\) \['learning_rate'\]"
    ):
        TrainConfig.from_dict({"learning_rate": 1e-4})
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="int8")
    assert TrainConfig.from_dict({"betas": [0.9, 0.95], "recall_ks": [10, 1]}).recall_ks == (1, 10)


# ---------------------------------------------------------------------- training
def test_training_learns_and_is_reproducible(data_dir, uninterrupted, tmp_path):
    base = load_ruclip(data_dir / "ckpt")
    pairs = pd.read_parquet(data_dir / "pairs.parquet")
    val = pair_data_from_frame(ClipAdapter(base), split(pairs)[1], progress=False)
    before = evaluate_retrieval(base.model, val, (1, 5, 10))
    after = uninterrupted.best_metrics
    assert after["mean_recall"] > before["mean_recall"] + 0.2, (before, after)
    assert after["t2i_recall_10"] > 2 * after["chance_t2i_recall_10"]
    assert [h["epoch"] for h in uninterrupted.history] == [1, 2, 3]
    assert uninterrupted.global_step == 9  # 24 pairs / batch 8 = 3 steps x 3 epochs
    again = train_from_files(str(data_dir), None, RESUME_CONFIG)  # in memory, no state dir
    _assert_same_run(uninterrupted, again, atol=0)


def test_resume_after_an_interruption_ends_like_an_uninterrupted_run(
    data_dir, uninterrupted, tmp_path
):
    state = tmp_path / "state"
    with pytest.raises(KeyboardInterrupt):
        train_from_files(str(data_dir), str(state), RESUME_CONFIG, raise_at=5)
    saved = load_training_state(state)
    assert saved["progress"]["global_step"] == 4 and saved["progress"]["batch_in_epoch"] == 1
    resumed = train_from_files(str(data_dir), str(state), RESUME_CONFIG)
    assert resumed.resumed_from_step == 4
    _assert_same_run(uninterrupted, resumed)
    # A finished run is not trained again; changed hyper-parameters start afresh.
    done = train_from_files(str(data_dir), str(state), RESUME_CONFIG)
    assert done.resumed_from_step == 9 and done.history == resumed.history
    fresh = train_from_files(str(data_dir), str(state), {**RESUME_CONFIG, "epochs": 1})
    assert fresh.resumed_from_step is None and len(fresh.history) == 1


def test_resume_after_kill_9_ends_like_an_uninterrupted_run(data_dir, uninterrupted, tmp_path):
    state = tmp_path / "state"
    code = (
        "from tests.models.test_clip_training import train_from_files, RESUME_CONFIG; "
        f"train_from_files({str(data_dir)!r}, {str(state)!r}, RESUME_CONFIG, kill_at=7)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert load_training_state(state)["progress"]["global_step"] == 6  # epoch 2's end
    resumed = train_from_files(str(data_dir), str(state), RESUME_CONFIG)
    assert resumed.resumed_from_step == 6
    _assert_same_run(uninterrupted, resumed)


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    state = tmp_path / "state"
    # visual_projection runs once per training batch and once for the 24 validation pairs
    # after each epoch: its 7th call is epoch 2's third batch. NaN features → NaN loss.
    with pytest.raises(
        NonFiniteLossError,
        match=r"the loss is nan at epoch 2, batch 3 \(after 5 optimiser steps\).*last good checkpoint \(step 4\)",
    ):
        train_from_files(str(data_dir), str(state), RESUME_CONFIG, nan_at=7)
    saved = load_training_state(state)
    assert saved["progress"]["global_step"] == 4
    assert all(torch.isfinite(t).all() for t in saved["model"].values())


def test_data_parallel_training_with_two_processes_matches_one(data_dir, tmp_path):
    """torchrun + DDP on CPU (gloo): 2 processes x 4 pairs = 1 process x 8 pairs."""
    from vitrina.models.clip_launch import run_training

    pairs = pd.read_parquet(data_dir / "pairs.parquet")
    bundle = load_ruclip(data_dir / "ckpt")
    train_df, val_df = split(pairs)
    config = TrainConfig(
        **{**FAST, "epochs": 2, "batch_size": 8, "lr": 3e-3, "seed": 1, "device": "cpu"}
    )
    one = run_training(bundle, train_df, val_df, config, state_dir=tmp_path / "one")
    two = run_training(
        bundle, train_df, val_df, config, state_dir=tmp_path / "two", nproc_per_node=2
    )
    assert (tmp_path / "two" / "job" / "job.json").is_file()
    _assert_same_run(one, two, atol=1e-4)
    assert isinstance(bundle.model, CLIPModel) and not bundle.model.training  # base untouched
