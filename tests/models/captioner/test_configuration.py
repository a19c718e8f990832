"""Captioner configuration and training settings: validation names the problem."""

from __future__ import annotations

import pytest

from vitrina.models.captioner import (
    CaptionerConfig,
    select_config,
    settings_dict,
    training_settings,
)


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match=r"Unknown captioner configuration keys \['layers'\]"):
        CaptionerConfig.from_params({"layers": 3}, "x")
    with pytest.raises(ValueError, match="multiple of patch_size"):
        CaptionerConfig(image_size=30, patch_size=16)
    with pytest.raises(ValueError, match="multiple of decoder_heads"):
        CaptionerConfig(decoder_width=30, decoder_heads=4)
    with pytest.raises(KeyError, match=r"'huge' is not in captioning.models \['small'\]"):
        select_config({"model": "huge", "models": {"small": {}}})
    assert select_config({"model": "small", "models": {"small": None}}).name == "small"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("epochs", "max_epochs"),
        ("pretrain_epochs", "pretrain_max_epochs"),
        ("lr", "learning_rate"),
        ("grad_clip", "gradient_clip_val"),
        ("max_grad_norm", "gradient_clip_val"),
        ("device", "accelerator"),
        ("checkpoint_dir", "captioning.output_dir"),
        ("state_dir", "captioning.output_dir"),
    ],
)
def test_old_training_keys_name_the_new_key(old, new):
    with pytest.raises(ValueError, match=rf"captioning.training.{old} was renamed: use {new}"):
        training_settings({old: 1})


def test_training_settings_split_engine_and_task_and_refuse_unknown_keys():
    config, options = training_settings(
        {"max_epochs": 3, "token_dropout": 0.2, "gradient_clip_val": None, "num_threads": "auto"}
    )
    assert config.max_epochs == 3 and config.gradient_clip_val is None
    assert options.token_dropout == 0.2
    assert config.num_threads is None and config.extra["num_threads"] == "auto"
    flat = settings_dict(config, options)
    assert flat["num_threads"] == "auto" and flat["token_dropout"] == 0.2
    assert training_settings(flat) == (config, options)  # round trip
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['dropuot'\]"):
        training_settings({"dropuot": 0.1})
    with pytest.raises(ValueError, match=r"token_dropout=1.5 must be in \[0, 1\)"):
        training_settings({"token_dropout": 1.5})
    with pytest.raises(ValueError, match=r"training.max_epochs=0 must be >= 1"):
        training_settings({"max_epochs": 0})
