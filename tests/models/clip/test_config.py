"""clip_finetune.train: the engine's names, CLIP's defaults, old keys named."""

from __future__ import annotations

import pytest

from vitrina.models.clip.config import ClipFinetuneConfig


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("epochs", "max_epochs"),
        ("lr", "learning_rate"),
        ("max_grad_norm", "gradient_clip_val"),
        ("grad_accum_steps", "accumulate_grad_batches"),
        ("torch_threads", "num_threads"),
        ("device", "accelerator"),
    ],
)
def test_an_old_key_fails_naming_the_new_one(old, new):
    with pytest.raises(
        ValueError, match=rf"clip_finetune.train.{old} is no longer a setting: use {new}"
    ):
        ClipFinetuneConfig.from_params({old: 1})


def test_defaults_unknown_keys_and_ranges():
    config = ClipFinetuneConfig.from_params(None)
    assert config.training.learning_rate == 6e-5 and config.training.max_epochs == 2
    assert config.training.patience is None and config.options.betas == (0.9, 0.98)
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['lrr'\].*learning_rate"):
        ClipFinetuneConfig.from_params({"lrr": 1e-4})
    with pytest.raises(ValueError, match="batch_size=1 must be >= 2"):
        ClipFinetuneConfig.from_params({"batch_size": 1})
    with pytest.raises(ValueError, match="leave nothing to train"):
        ClipFinetuneConfig.from_params({"freeze_text": True, "freeze_vision": True})
    parsed = ClipFinetuneConfig.from_params({"recall_ks": [10, 1], "gradient_clip_val": None})
    assert parsed.options.recall_ks == (1, 10) and parsed.training.gradient_clip_val is None
    assert parsed.to_dict()["recall_ks"] == [1, 10]
