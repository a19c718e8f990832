"""A small, independent OpenAI-layout CLIP forward pass -- used ONLY by the tests.

Same module tree (and therefore the same ``state_dict`` keys) as ``ruclip.CLIP`` / OpenAI's
``clip.model.CLIP`` with a ViT image tower:

* ``visual``: ``conv1`` (patchify, no bias) -> prepend ``class_embedding`` -> add
  ``positional_embedding`` -> ``ln_pre`` -> ``transformer.resblocks`` -> ``ln_post`` of the
  class token -> ``@ proj``;
* text: ``token_embedding`` + ``positional_embedding`` -> ``transformer.resblocks`` with a
  causal (upper-triangular ``-inf``) mask -> ``ln_final`` -> the hidden state at the eos
  token (id 3, ``torch.where(text == eos_id)[1]`` as in ruclip) ``@ text_projection``;
* residual blocks: ``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))``, ``nn.MultiheadAttention``
  with packed ``in_proj_weight``, MLP ``c_fc`` -> QuickGELU ``x * sigmoid(1.702 x)`` ->
  ``c_proj``.

It deliberately shares no code with ``vitrina.models.ruclip`` so that it can check the
conversion to ``transformers.CLIPModel``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, 4 * width)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(4 * width, width)),
                ]
            )
        )
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads) for _ in range(layers)]
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, mask)
        return x


class VisionTransformer(nn.Module):
    def __init__(
        self, resolution: int, patch: int, width: int, layers: int, heads: int, out_dim: int
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros((resolution // patch) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, out_dim))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.conv1(pixels)  # [B, W, g, g]
        x = x.flatten(2).transpose(1, 2)  # [B, g*g, W]
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.ln_pre(x)
        x = self.transformer(x.transpose(0, 1)).transpose(0, 1)  # sequence-first inside
        return self.ln_post(x[:, 0, :]) @ self.proj


class ReferenceCLIP(nn.Module):
    """ruclip.CLIP-compatible module; build with :meth:`from_state_dict`."""

    def __init__(self, cfg: dict, eos_id: int = 3) -> None:
        super().__init__()
        self.eos_id = eos_id
        self.visual = VisionTransformer(
            cfg["image_resolution"],
            cfg["vision_patch_size"],
            cfg["vision_width"],
            cfg["vision_layers"],
            cfg["vision_width"] // 64,
            cfg["embed_dim"],
        )
        self.transformer = Transformer(
            cfg["transformer_width"], cfg["transformer_layers"], cfg["transformer_heads"]
        )
        self.token_embedding = nn.Embedding(cfg["vocab_size"], cfg["transformer_width"])
        self.positional_embedding = nn.Parameter(
            torch.zeros(cfg["context_length"], cfg["transformer_width"])
        )
        self.ln_final = nn.LayerNorm(cfg["transformer_width"])
        self.text_projection = nn.Parameter(torch.zeros(cfg["transformer_width"], cfg["embed_dim"]))
        self.logit_scale = nn.Parameter(torch.zeros(()))

    @classmethod
    def from_state_dict(cls, state_dict: dict, cfg: dict) -> ReferenceCLIP:
        model = cls(cfg)
        model.load_state_dict(state_dict, strict=True)
        return model.eval()

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        n = text.shape[1]
        x = self.token_embedding(text) + self.positional_embedding[:n]
        mask = torch.full((n, n), float("-inf")).triu_(1)
        x = self.transformer(x.transpose(0, 1), mask).transpose(0, 1)
        x = self.ln_final(x)
        rows, cols = torch.where(text == self.eos_id)
        assert torch.equal(rows, torch.arange(text.shape[0])), "exactly one eos per row"
        return x[rows, cols] @ self.text_projection
