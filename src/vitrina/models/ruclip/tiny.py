"""Tiny random-weight ruCLIP checkpoints, for tests, benchmarks and CPU smoke runs."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from vitrina.models.ruclip.checkpoint import save_ruclip_checkpoint
from vitrina.models.ruclip.configuration import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, RuClipConfig
from vitrina.models.ruclip.convert import convert_openai_state_dict, expected_openai_shapes
from vitrina.models.ruclip.tokenization import RUCLIP_SPECIAL_TOKENS, RuClipTokenizer
from vitrina.models.ruclip.yttm_tokenizers import train_yttm_bpe

__all__ = ["write_tiny_ruclip_checkpoint"]


def _random_openai_state_dict(cfg: RuClipConfig, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic random float32 weights in the OpenAI layout.

    Scales follow ``ruclip.CLIP.initialize_parameters`` / OpenAI CLIP (token embedding std
    0.02, positional std 0.01, attention std width^-0.5, ...).  Unlike a fresh model, every
    LayerNorm weight/bias and every bias is random too (1 + 0.1 N(0,1), 0.1 N(0,1)), so a
    conversion that swapped two LayerNorms or dropped a bias would change the outputs.
    """
    g = torch.Generator().manual_seed(seed)
    shapes = expected_openai_shapes(cfg)
    out: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        width = cfg.vision_width if key.startswith("visual.") else cfg.transformer_width
        layers = cfg.vision_layers if key.startswith("visual.") else cfg.transformer_layers
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        noise = torch.randn(shape, generator=g)
        if key == "logit_scale":
            t = torch.tensor(math.log(1 / 0.07))  # CLIP paper: temperature 0.07
        elif key.endswith(".weight") and (".ln_" in key or key.startswith("ln_")):
            t = 1.0 + 0.1 * noise
        elif key.endswith("bias"):
            t = 0.1 * noise
        elif key == "token_embedding.weight":
            t = 0.02 * noise
        elif key == "positional_embedding":
            t = 0.01 * noise
        elif key in (
            "visual.class_embedding",
            "visual.positional_embedding",
            "visual.proj",
            "text_projection",
        ):
            t = width**-0.5 * noise
        elif key == "visual.conv1.weight":
            t = (3 * cfg.vision_patch_size**2) ** -0.5 * noise
        elif key.endswith("attn.in_proj_weight"):
            t = width**-0.5 * noise
        elif key.endswith("mlp.c_fc.weight"):
            t = (2 * width) ** -0.5 * noise
        elif key.endswith("out_proj.weight") or key.endswith("mlp.c_proj.weight"):
            t = proj_std * noise
        else:  # pragma: no cover - every key is handled above
            raise KeyError(key)
        out[key] = t.to(torch.float32).contiguous()
    return out


def write_tiny_ruclip_checkpoint(
    out_dir: str | os.PathLike[str],
    texts: Sequence[str],
    *,
    seed: int = 0,
    vocab_size: int = 512,
    coverage: float = 1.0,
    embed_dim: int = 32,
    image_resolution: int = 64,
    vision_layers: int = 2,
    vision_width: int = 64,
    vision_patch_size: int = 16,
    context_length: int = 77,
    transformer_width: int = 64,
    transformer_heads: int = 2,
    transformer_layers: int = 2,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> Path:
    """Write a tiny random-weight ruCLIP checkpoint (for tests and CPU smoke runs).

    Trains a youtokentome-format BPE on ``texts``
    (:func:`~vitrina.models.ruclip.yttm_tokenizers.train_yttm_bpe`, special ids pad 0 /
    unk 1 / bos 2 / eos 3), draws deterministic random weights from
    ``seed`` in the OpenAI layout, and saves the three ruCLIP files atomically with
    :func:`save_ruclip_checkpoint`.  Same ``texts`` + arguments -> identical files' contents.

    Defaults (1 vision head of width 64, 2+2 layers, 64 px images / 16 px patches = 17 image
    tokens, text width 64 with 2 heads, embed_dim 32, 77 text positions as in ruCLIP) keep a
    CPU forward of ~1000 texts + images to about a second.  The text embedding has
    ``vocab_size`` rows even if the BPE ends up smaller.

    Returns:
        ``Path(out_dir)``.

    Raises:
        ValueError: invalid sizes, or ``vocab_size`` too small for the texts' alphabet.
    """
    config = RuClipConfig(
        embed_dim=embed_dim,
        image_resolution=image_resolution,
        vision_layers=vision_layers,
        vision_width=vision_width,
        vision_patch_size=vision_patch_size,
        context_length=context_length,
        vocab_size=vocab_size,
        transformer_width=transformer_width,
        transformer_heads=transformer_heads,
        transformer_layers=transformer_layers,
        mean=tuple(mean),
        std=tuple(std),
    )
    bpe = train_yttm_bpe(texts, vocab_size, coverage=coverage, special=RUCLIP_SPECIAL_TOKENS)
    tokenizer = RuClipTokenizer(bpe, context_length)
    model = convert_openai_state_dict(_random_openai_state_dict(config, seed), config)
    return save_ruclip_checkpoint(model, tokenizer, config, out_dir)
