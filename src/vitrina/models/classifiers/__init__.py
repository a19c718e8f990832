"""Image classifiers: backbones by name (:mod:`.backbones`)."""

from .backbones import (
    REGISTRY,
    SPEC_FORMAT,
    ImageBackbone,
    available_backbones,
    backbone_from_spec,
    build_backbone,
)

__all__ = [
    "REGISTRY",
    "SPEC_FORMAT",
    "ImageBackbone",
    "available_backbones",
    "backbone_from_spec",
    "build_backbone",
]
