"""The captioner's LightningModules: losses, seeding, learning, NaN stops cleanly."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from vitrina.models.captioner.task import bag_of_words_loss, bag_of_words_targets, step_seed
from vitrina.training import NonFiniteLossError

from .fixtures import train_tiny


def test_bag_of_words_targets_weight_rare_tokens():
    present, idf = bag_of_words_targets([[3, 4, 2], [3, 5, 2], [3, 3, 2]], 6, ignore=[0, 1, 2])
    assert present.shape == (3, 6)
    assert present[2].tolist() == [False, False, True, True, False, False]
    assert idf[2] == 0 and idf[3] < idf[4] == idf[5]


def test_bag_of_words_loss_rewards_the_description_words():
    head = torch.nn.Identity()
    present = torch.tensor([[False, True, False]])
    idf = torch.ones(3)
    right = torch.tensor([[[0.0, 5.0, 0.0]]])
    wrong = torch.tensor([[[5.0, 0.0, 0.0]]])
    assert bag_of_words_loss(head, right, present, idf) < bag_of_words_loss(
        head, wrong, present, idf
    )


def test_step_seeds_differ_by_phase_epoch_and_batch():
    seeds = {step_seed(42, p, e, b) for p in (1, 2) for e in range(3) for b in range(5)}
    assert len(seeds) == 30 and step_seed(42, 1, 0, 0) == step_seed(42, 1, 0, 0)


def test_training_learns_and_keeps_the_best_epoch(images, tmp_path):
    result = train_tiny(images, tmp_path / "run")
    history = result.history
    assert history["phase"].tolist() == ["pretraining", "captioning", "captioning"]
    captioning = history[history["phase"] == "captioning"]
    assert captioning["val_loss"].notna().all() and captioning["bow_loss"].notna().all()
    # it learns (a trainer that never stepped would resume just as exactly)
    assert captioning["train_loss"].iloc[1] < captioning["train_loss"].iloc[0]
    best = captioning.loc[captioning["val_loss"].idxmin(), "epoch"]
    assert result.best_epoch == best and captioning["is_best"].sum() == 1
    assert result.best_val_loss == pytest.approx(captioning["val_loss"].min(), rel=1e-6)
    meta = result.captioner.meta["training"]
    assert meta["best_epoch"] == best and meta["epochs"] == 2 and meta["n_train"] == 12
    assert result.captioner.device.type == "cpu" and result.captioner.dtype == torch.float32


class PoisonAt(pl.Callback):
    """Fill the decoder's weights with NaN when captioning epoch ``epoch`` starts."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                for p in pl_module.model.decoder.parameters():
                    p.fill_(float("nan"))


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(images, tmp_path):
    with pytest.raises(NonFiniteLossError, match="at epoch 1, global step 3"):
        train_tiny(images, tmp_path / "run", callbacks=[PoisonAt(1)])
    last = tmp_path / "run" / "captioning" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 0
    assert all(
        torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
    )
    assert not (tmp_path / "run" / "captioning" / "done.json").exists()
