"""ruCLIP's OpenAI-layout weights <-> :class:`transformers.CLIPModel`.

``pytorch_model.bin`` of a ruCLIP checkpoint is a ``torch.save``-d state dict in the OpenAI
CLIP key layout (``visual.conv1.weight``, ``transformer.resblocks.0.attn.in_proj_weight``,
...); :func:`convert_openai_state_dict` builds the ``CLIPModel`` and
:func:`to_openai_state_dict` is its exact inverse.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from transformers import CLIPModel

from vitrina.models.ruclip.configuration import RuClipConfig

__all__ = ["convert_openai_state_dict", "expected_openai_shapes", "to_openai_state_dict"]

# Keys found in some OpenAI state dicts (JIT archives) that are not parameters.
_IGNORED_OPENAI_KEYS = frozenset({"input_resolution", "context_length", "vocab_size"})


def expected_openai_shapes(cfg: RuClipConfig) -> dict[str, tuple[int, ...]]:
    """OpenAI/ruclip CLIP parameter shapes, in ``ruclip.CLIP.state_dict()`` order."""
    vw, tw, e = cfg.vision_width, cfg.transformer_width, cfg.embed_dim
    p = cfg.vision_patch_size
    shapes: dict[str, tuple[int, ...]] = {
        "positional_embedding": (cfg.context_length, tw),
        "text_projection": (tw, e),
        "logit_scale": (),
        "visual.class_embedding": (vw,),
        "visual.positional_embedding": (cfg.grid_size**2 + 1, vw),
        "visual.proj": (vw, e),
        "visual.conv1.weight": (vw, 3, p, p),
        "visual.ln_pre.weight": (vw,),
        "visual.ln_pre.bias": (vw,),
    }

    def blocks(prefix: str, width: int, layers: int) -> None:
        for i in range(layers):
            b = f"{prefix}.resblocks.{i}"
            shapes.update(
                {
                    f"{b}.attn.in_proj_weight": (3 * width, width),
                    f"{b}.attn.in_proj_bias": (3 * width,),
                    f"{b}.attn.out_proj.weight": (width, width),
                    f"{b}.attn.out_proj.bias": (width,),
                    f"{b}.ln_1.weight": (width,),
                    f"{b}.ln_1.bias": (width,),
                    f"{b}.mlp.c_fc.weight": (4 * width, width),
                    f"{b}.mlp.c_fc.bias": (4 * width,),
                    f"{b}.mlp.c_proj.weight": (width, 4 * width),
                    f"{b}.mlp.c_proj.bias": (width,),
                    f"{b}.ln_2.weight": (width,),
                    f"{b}.ln_2.bias": (width,),
                }
            )

    blocks("visual.transformer", vw, cfg.vision_layers)
    shapes.update({"visual.ln_post.weight": (vw,), "visual.ln_post.bias": (vw,)})
    blocks("transformer", tw, cfg.transformer_layers)
    shapes.update(
        {
            "token_embedding.weight": (cfg.vocab_size, tw),
            "ln_final.weight": (tw,),
            "ln_final.bias": (tw,),
        }
    )
    return shapes


def _block_map(openai_prefix: str, hf_prefix: str, layers: int) -> dict[str, str]:
    """OpenAI resblock key -> HF encoder layer key (``in_proj`` handled separately)."""
    m = {}
    for i in range(layers):
        o, h = f"{openai_prefix}.resblocks.{i}", f"{hf_prefix}.layers.{i}"
        for pn in ("weight", "bias"):
            m[f"{o}.attn.out_proj.{pn}"] = f"{h}.self_attn.out_proj.{pn}"
            m[f"{o}.ln_1.{pn}"] = f"{h}.layer_norm1.{pn}"
            m[f"{o}.mlp.c_fc.{pn}"] = f"{h}.mlp.fc1.{pn}"
            m[f"{o}.mlp.c_proj.{pn}"] = f"{h}.mlp.fc2.{pn}"
            m[f"{o}.ln_2.{pn}"] = f"{h}.layer_norm2.{pn}"
    return m


def _key_map(cfg: RuClipConfig) -> dict[str, str]:
    """OpenAI key -> HF ``CLIPModel`` key for all 1:1 tensors (no transpose, no split)."""
    m = {
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
        "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "visual.ln_post.weight": "vision_model.post_layernorm.weight",
        "visual.ln_post.bias": "vision_model.post_layernorm.bias",
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
        "logit_scale": "logit_scale",
    }
    m.update(_block_map("visual.transformer", "vision_model.encoder", cfg.vision_layers))
    m.update(_block_map("transformer", "text_model.encoder", cfg.transformer_layers))
    return m


# (OpenAI in_proj prefix, HF attention prefix, layers) for both towers.
def _attn_pairs(cfg: RuClipConfig) -> list[tuple[str, str]]:
    pairs = []
    for o, h, n in (
        ("visual.transformer", "vision_model.encoder", cfg.vision_layers),
        ("transformer", "text_model.encoder", cfg.transformer_layers),
    ):
        pairs += [(f"{o}.resblocks.{i}.attn", f"{h}.layers.{i}.self_attn") for i in range(n)]
    return pairs


def convert_openai_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: RuClipConfig
) -> CLIPModel:
    """Build a :class:`transformers.CLIPModel` from an OpenAI/ruclip-layout state dict.

    Mapping: ``attn.in_proj_weight``/``in_proj_bias`` ``[3W, W]``/``[3W]`` are split into
    ``q_proj``/``k_proj``/``v_proj``; ``visual.proj`` ``[Wv, E]`` and ``text_projection``
    ``[Wt, E]`` become the transposed ``visual_projection``/``text_projection`` Linear
    weights ``[E, W]``; everything else is renamed (``ln_1`` -> ``layer_norm1``,
    ``mlp.c_fc`` -> ``mlp.fc1``, ``ln_pre`` -> ``pre_layrnorm``, ...).  Tensors of any float
    dtype are copied into the float32 model; the input is not modified.

    Args:
        state_dict: ``torch.load("pytorch_model.bin")`` of a ruCLIP checkpoint.  The
            non-tensor keys ``input_resolution``/``context_length``/``vocab_size`` of OpenAI
            JIT archives are ignored.
        config: the checkpoint's :class:`RuClipConfig`.

    Returns:
        A float32 ``CLIPModel`` in eval mode on the CPU.

    Raises:
        ValueError: missing or unexpected keys, or shapes that do not match ``config``.
    """
    expected = expected_openai_shapes(config)
    keys = set(state_dict) - _IGNORED_OPENAI_KEYS
    missing = sorted(set(expected) - keys)
    unexpected = sorted(keys - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"state dict does not match the ruCLIP config: missing {missing[:10]}"
            f"{'...' if len(missing) > 10 else ''}, unexpected {unexpected[:10]}"
            f"{'...' if len(unexpected) > 10 else ''}"
        )
    bad = [
        f"{k}: {tuple(state_dict[k].shape)} != {shape}"
        for k, shape in expected.items()
        if tuple(state_dict[k].shape) != shape
    ]
    if bad:
        raise ValueError(f"state dict shapes do not match the ruCLIP config: {bad[:10]}")

    hf: dict[str, torch.Tensor] = {}
    for o, h in _key_map(config).items():
        hf[h] = state_dict[o]
    for o, h in _attn_pairs(config):
        for name, t in (
            ("weight", state_dict[f"{o}.in_proj_weight"]),
            ("bias", state_dict[f"{o}.in_proj_bias"]),
        ):
            q, k, v = t.chunk(3, dim=0)
            hf[f"{h}.q_proj.{name}"], hf[f"{h}.k_proj.{name}"], hf[f"{h}.v_proj.{name}"] = q, k, v
    hf["visual_projection.weight"] = state_dict["visual.proj"].t()
    hf["text_projection.weight"] = state_dict["text_projection"].t()

    model = CLIPModel(config.to_clip_config())
    result = model.load_state_dict(hf, strict=False)
    # position_ids buffers are not persistent; anything else missing is a mapping bug.
    missing_hf = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing_hf or result.unexpected_keys:
        raise ValueError(
            f"conversion bug: missing {missing_hf}, unexpected {result.unexpected_keys}"
        )
    return model.eval()


def to_openai_state_dict(model: CLIPModel) -> dict[str, torch.Tensor]:
    """Inverse of :func:`convert_openai_state_dict`: a ruclip/OpenAI-layout state dict.

    ``to_openai_state_dict(convert_openai_state_dict(sd, cfg))`` equals ``sd`` exactly
    (same keys, dtypes and values).  Tensors are detached, contiguous CPU copies in the
    model's dtype, ordered like ``ruclip.CLIP.state_dict()``, ready for ``torch.save``.

    Raises:
        ValueError: ``model`` is not a ruCLIP-compatible ``CLIPModel`` (e.g. vision width not
            a multiple of 64).
    """
    cfg = RuClipConfig.from_clip_model(model)
    sd = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    key_map = _key_map(cfg)
    attn = dict(_attn_pairs(cfg))
    for key in expected_openai_shapes(cfg):
        if key in key_map:
            t = sd[key_map[key]]
        elif key == "visual.proj":
            t = sd["visual_projection.weight"].t()
        elif key == "text_projection":
            t = sd["text_projection.weight"].t()
        elif key.endswith(".in_proj_weight") or key.endswith(".in_proj_bias"):
            o = key.rsplit(".", 1)[0]
            name = "weight" if key.endswith("weight") else "bias"
            t = torch.cat([sd[f"{attn[o]}.{p}_proj.{name}"] for p in "qkv"], dim=0)
        else:  # pragma: no cover - expected_openai_shapes and the maps are in sync
            raise KeyError(key)
        out[key] = t.detach().to("cpu", copy=True).contiguous()
    return out
