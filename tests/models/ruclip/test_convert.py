"""OpenAI-layout weights <-> ``transformers.CLIPModel`` (``vitrina.models.ruclip.convert``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vitrina.models.ruclip.convert import convert_openai_state_dict, to_openai_state_dict


def test_logit_scale_and_projection_mapping(bundle, state_dict):
    m = bundle.model
    assert torch.equal(m.logit_scale.detach(), state_dict["logit_scale"])
    assert torch.equal(m.visual_projection.weight.detach(), state_dict["visual.proj"].T)
    assert torch.equal(
        m.text_model.encoder.layers[1].layer_norm2.weight.detach(),
        state_dict["transformer.resblocks.1.ln_2.weight"],
    )
    q = m.vision_model.encoder.layers[0].self_attn.q_proj.weight.detach()
    assert torch.equal(q, state_dict["visual.transformer.resblocks.0.attn.in_proj_weight"][:64])
    tc = m.config.text_config
    assert (tc.hidden_act, tc.eos_token_id, tc.bos_token_id, tc.pad_token_id) == (
        "quick_gelu",
        3,
        2,
        0,
    )
    assert m.config.vision_config.hidden_act == "quick_gelu"
    assert not m.training


def test_openai_state_dict_round_trip_is_exact(bundle, state_dict):
    back = to_openai_state_dict(convert_openai_state_dict(state_dict, bundle.config))
    assert list(back) == list(state_dict)
    for k, v in state_dict.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    # the conversion does not alias the caller's tensors
    assert back["visual.proj"].data_ptr() != state_dict["visual.proj"].data_ptr()


def test_convert_rejects_mismatching_state_dicts(bundle, state_dict):
    cfg = bundle.config
    extra = dict(state_dict, input_resolution=torch.tensor(64))  # OpenAI JIT extra: ignored
    convert_openai_state_dict(extra, cfg)
    missing = {k: v for k, v in state_dict.items() if k != "ln_final.bias"}
    with pytest.raises(ValueError, match="ln_final.bias"):
        convert_openai_state_dict(missing, cfg)
    with pytest.raises(ValueError, match="unexpected"):
        convert_openai_state_dict(dict(state_dict, foo=torch.zeros(1)), cfg)
    with pytest.raises(ValueError, match="shapes"):
        convert_openai_state_dict(state_dict, dataclasses.replace(cfg, embed_dim=16))


def test_non_ruclip_clip_models_are_rejected(bundle):
    from transformers import CLIPModel

    clip_config = bundle.config.to_clip_config()
    clip_config.text_config.hidden_act = "gelu"
    with pytest.raises(ValueError, match="quick_gelu"):
        to_openai_state_dict(CLIPModel(clip_config))
