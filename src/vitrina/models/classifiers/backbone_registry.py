"""The backbone registry's data: families (config + model classes, pooling) and the
published architectures by name (:data:`REGISTRY`).

Each entry copies the architecture fields of the published hub checkpoint it names
(``hub_id``'s ``config.json``); ``tests/models/test_backbones.py`` checks every one
against the published parameter count and feature width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

#: torchvision / ImageNet statistics (the hub processors of ResNet, ConvNeXt, Swin, DINOv2).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ``[-1, 1]`` scaling of the ViT and MobileNetV2 hub processors.
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Family:
    """A ``transformers`` model family: its config and base-model classes (by name),
    how features are pooled and how the input size is handled."""

    config_class: str
    model_class: str
    pooling: str  # "pooler" | "cls" | "image_embeds" | "tensor"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    sized: bool = False  # config.image_size follows build_backbone(image_size=...)
    interpolate: bool = False  # forward interpolates position embeddings for other sizes


FAMILIES: dict[str, Family] = {
    "resnet": Family("ResNetConfig", "ResNetModel", "pooler"),
    "mobilenet_v2": Family("MobileNetV2Config", "MobileNetV2Model", "pooler"),
    "efficientnet": Family("EfficientNetConfig", "EfficientNetModel", "pooler"),
    "convnext": Family("ConvNextConfig", "ConvNextModel", "pooler"),
    "vit": Family(
        "ViTConfig", "ViTModel", "cls", {"add_pooling_layer": False}, sized=True, interpolate=True
    ),
    "swin": Family("SwinConfig", "SwinModel", "pooler", sized=True),
    # DINOv2 always interpolates its 518-px position embeddings to the input size.
    "dinov2": Family("Dinov2Config", "Dinov2Model", "pooler"),
    "clip_vision": Family(
        "CLIPVisionConfig", "CLIPVisionModelWithProjection", "image_embeds", interpolate=True
    ),
}


@dataclass(frozen=True)
class Entry:
    """A registry name: its family, config fields, the hub checkpoint they copy, and the
    normalisation statistics of that checkpoint's processor."""

    family: str
    config: dict[str, Any]
    hub_id: str | None = None  # the published checkpoint whose config.json these values copy
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def _resnet(depths: list[int], layer_type: str) -> dict[str, Any]:
    widths = [64, 128, 256, 512] if layer_type == "basic" else [256, 512, 1024, 2048]
    return {
        "embedding_size": 64,
        "hidden_sizes": widths,
        "depths": depths,
        "layer_type": layer_type,
    }


def _efficientnet(width: float, depth: float, size: int, dropout: float, dim: int) -> dict:
    return {
        "width_coefficient": width,
        "depth_coefficient": depth,
        "image_size": size,
        "dropout_rate": dropout,
        "hidden_dim": dim,  # = round_filters(1280): the top conv's width
    }


def _dinov2(hidden: int, heads: int) -> dict[str, Any]:
    return {
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_hidden_layers": 12,
        "mlp_ratio": 4,
        "patch_size": 14,
        "image_size": 518,
        "layerscale_value": 1.0,
    }


__all__ = ["FAMILIES", "REGISTRY", "Entry", "Family", "available_backbones"]

#: Registry name -> architecture.  Config values are those of ``hub_id``'s config.json.
REGISTRY: dict[str, Entry] = {
    "resnet18": Entry("resnet", _resnet([2, 2, 2, 2], "basic"), "microsoft/resnet-18"),
    "resnet34": Entry("resnet", _resnet([3, 4, 6, 3], "basic"), "microsoft/resnet-34"),
    "resnet50": Entry("resnet", _resnet([3, 4, 6, 3], "bottleneck"), "microsoft/resnet-50"),
    "resnet101": Entry("resnet", _resnet([3, 4, 23, 3], "bottleneck"), "microsoft/resnet-101"),
    "mobilenet_v2": Entry(
        "mobilenet_v2",
        {"depth_multiplier": 1.0, "image_size": 224, "finegrained_output": True},
        "google/mobilenet_v2_1.0_224",
        HALF,
        HALF,
    ),
    "efficientnet_b0": Entry(
        "efficientnet", _efficientnet(1.0, 1.0, 224, 0.2, 1280), "google/efficientnet-b0"
    ),
    "efficientnet_b3": Entry(
        "efficientnet", _efficientnet(1.2, 1.4, 300, 0.3, 1536), "google/efficientnet-b3"
    ),
    "efficientnet_b4": Entry(
        "efficientnet", _efficientnet(1.4, 1.8, 380, 0.4, 1792), "google/efficientnet-b4"
    ),
    "convnext_tiny": Entry(
        "convnext",
        {"hidden_sizes": [96, 192, 384, 768], "depths": [3, 3, 9, 3], "patch_size": 4},
        "facebook/convnext-tiny-224",
    ),
    "vit_b16": Entry(
        "vit",
        {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "patch_size": 16,
            "image_size": 224,
        },
        "google/vit-base-patch16-224",
        HALF,
        HALF,
    ),
    "swin_tiny": Entry(
        "swin",
        {
            "embed_dim": 96,
            "depths": [2, 2, 6, 2],
            "num_heads": [3, 6, 12, 24],
            "window_size": 7,
            "patch_size": 4,
            "image_size": 224,
        },
        "microsoft/swin-tiny-patch4-window7-224",
    ),
    "dinov2_small": Entry("dinov2", _dinov2(384, 6), "facebook/dinov2-small"),
    "dinov2_base": Entry("dinov2", _dinov2(768, 12), "facebook/dinov2-base"),
    # Tiny variants: a few channels and layers, for tests and the demo (seconds on CPU).
    "tiny_resnet": Entry(
        "resnet",
        {
            "embedding_size": 8,
            "hidden_sizes": [8, 16, 32],
            "depths": [1, 1, 1],
            "layer_type": "basic",
        },
    ),
    "tiny_vit": Entry(
        "vit",
        {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "patch_size": 16,
        },
        mean=HALF,
        std=HALF,
    ),
    "tiny_convnext": Entry(
        "convnext", {"hidden_sizes": [16, 32, 64], "depths": [1, 1, 1], "num_stages": 3}
    ),
    # Vitrina's CLIP image towers: needs checkpoint= (see clip_tower.py).
    "clip_vision": Entry("clip_vision", {}),
}

TIMM_PREFIX = "timm:"


def available_backbones() -> list[str]:
    """Registry names, sorted (``clip_vision`` needs ``checkpoint=``); ``timm:<name>`` too
    where timm imports."""
    return sorted(REGISTRY)


def transformers_class(name: str) -> Any:
    """``transformers.<name>`` (imported lazily)."""
    import transformers

    return getattr(transformers, name)


def feature_dim_of(family: str, model: torch.nn.Module) -> int:
    """Width of the pooled features, read off the built model."""
    cfg = model.config
    if family in ("resnet", "convnext"):
        return int(cfg.hidden_sizes[-1])
    if family == "mobilenet_v2":
        return int(model.conv_1x1.convolution.out_channels)
    if family == "efficientnet":
        return int(cfg.hidden_dim)
    if family in ("vit", "dinov2"):
        return int(cfg.hidden_size)
    if family == "swin":
        return int(model.num_features)
    if family == "clip_vision":
        return int(cfg.projection_dim)
    raise ValueError(f"no feature width rule for family {family!r}")  # pragma: no cover
