"""Projected text and image features of a ruCLIP ``CLIPModel`` (``ruclip.CLIP.encode_*``)."""

from __future__ import annotations

import torch
from transformers import CLIPModel

__all__ = ["image_features", "text_features"]


def text_features(
    model: CLIPModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Projected (not normalised) text features ``[B, embed_dim]`` = ``ruclip.CLIP.encode_text``.

    Inputs are moved to the model's device.  Works with ``transformers`` 4 (tensor return)
    and 5 (``BaseModelOutputWithPooling`` return) ``get_text_features``.
    """
    device = model.text_projection.weight.device
    out = model.get_text_features(
        input_ids=input_ids.to(device),
        attention_mask=None if attention_mask is None else attention_mask.to(device),
    )
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def image_features(model: CLIPModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected (not normalised) image features ``[B, embed_dim]`` = ``ruclip.CLIP.encode_image``.

    ``pixel_values``: float ``[B, 3, R, R]`` from :func:`make_image_processor`.
    """
    p = model.visual_projection.weight
    out = model.get_image_features(pixel_values=pixel_values.to(device=p.device, dtype=p.dtype))
    return out if isinstance(out, torch.Tensor) else out.pooler_output
