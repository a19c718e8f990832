"""Vitrina's CLIP image towers as classification backbones (family ``clip_vision``).

A ruCLIP checkpoint (``bpe.model``, ``config.json``, ``pytorch_model.bin``) or a Hugging
Face CLIP ``save_pretrained`` directory -- a base model or the ``clip_finetune`` output --
is loaded through the project's own loaders (:meth:`vitrina.models.clip.ClipBundle.load`),
and its vision transformer + visual projection are copied into a
``transformers.CLIPVisionModelWithProjection``.  Its ``image_embeds`` equal
``CLIPModel.get_image_features`` (what the embeddings pipeline L2-normalises), so a head
on top starts from the very features the catalogue's embeddings hold.
"""

from __future__ import annotations

import json
from typing import Any

import torch

__all__ = ["clip_vision_tower"]


def _tower_from_clip(model: Any, overrides: dict[str, Any] | None) -> torch.nn.Module:
    """Copy ``model.vision_model`` + ``model.visual_projection`` into a
    ``CLIPVisionModelWithProjection`` (config: the vision config + ``projection_dim``)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from vitrina.models.classifiers.backbones import patch_config

    if not hasattr(model, "visual_projection") or not hasattr(model, "vision_model"):
        raise ValueError(
            f"clip_vision needs a CLIP model with a vision tower and a visual projection; "
            f"{type(model).__name__} has none (SigLIP-style models are not supported)"
        )
    vision = json.loads(model.config.vision_config.to_json_string(use_diff=False))
    vision["projection_dim"] = int(model.config.projection_dim)
    config = patch_config(CLIPVisionConfig.from_dict(vision), overrides, "clip_vision")
    tower = CLIPVisionModelWithProjection(config)
    tower.vision_model.load_state_dict(model.vision_model.state_dict())
    tower.visual_projection.load_state_dict(model.visual_projection.state_dict())
    return tower


def clip_vision_tower(
    checkpoint: str, overrides: dict[str, Any] | None = None
) -> tuple[torch.nn.Module, tuple, tuple]:
    """The image tower of a CLIP checkpoint.

    Args:
        checkpoint: local directory or hub id of a ruCLIP checkpoint, a Hugging Face CLIP
            ``save_pretrained`` directory (with its processor), or a directory written by
            ``ImageBackbone.save_pretrained`` of a ``clip_vision`` backbone.
        overrides: ``CLIPVisionConfig`` fields to patch (shape-changing ones fail to load).

    Returns:
        ``(CLIPVisionModelWithProjection, image_mean, image_std)``; mean/std are the
        checkpoint's processor's (ruCLIP: its ``config.json``).

    Raises:
        vitrina.models.ruclip.CheckpointNotFoundError: not local and not downloadable, or
            no complete CLIP layout.
        ValueError: a model without a visual projection.
    """
    from transformers import CLIPVisionModelWithProjection

    from vitrina.models.classifiers.backbones import REGISTRY, checkpoint_stats, patch_config
    from vitrina.models.clip import ClipBundle
    from vitrina.models.ruclip import resolve_checkpoint

    path = resolve_checkpoint(checkpoint, required_files=None)
    config_file = path / "config.json"
    model_type = (
        json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None
    )
    if model_type == "clip_vision_model":  # an ImageBackbone.save_pretrained directory
        config = patch_config(
            CLIPVisionModelWithProjection.config_class.from_pretrained(path),
            overrides,
            "clip_vision",
        )
        tower = CLIPVisionModelWithProjection.from_pretrained(path, config=config)
        mean, std = checkpoint_stats(path, REGISTRY["clip_vision"])
        return tower, mean, std
    bundle = ClipBundle.load(path)
    return _tower_from_clip(bundle.model, overrides), bundle.mean, bundle.std
