"""ruCLIP ``config.json`` (``vitrina.models.ruclip.configuration``)."""

from __future__ import annotations

import dataclasses

import pytest

from vitrina.models.ruclip.configuration import RuClipConfig


def test_config_json_round_trip(bundle, tmp_path):
    cfg = bundle.config
    assert RuClipConfig.from_json(cfg.to_json(tmp_path / "config.json")) == cfg
    assert cfg.vision_heads == 1 and cfg.grid_size == 4
    d = cfg.to_dict()
    del d["mean"], d["std"]  # optional: ruclip falls back to the OpenAI CLIP values
    assert RuClipConfig.from_dict(d).mean == (0.48145466, 0.4578275, 0.40821073)
    del d["vocab_size"]
    with pytest.raises(ValueError, match="vocab_size"):
        RuClipConfig.from_dict(d)
    with pytest.raises(ValueError, match="multiple of 64"):
        dataclasses.replace(cfg, vision_width=96)
    with pytest.raises(ValueError, match="vision_patch_size"):
        dataclasses.replace(cfg, vision_patch_size=24)
