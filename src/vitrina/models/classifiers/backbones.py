"""Image backbones by name, built from ``transformers`` (and ``timm`` where it imports).

Every backbone is a ``transformers`` vision model (never a hand-written architecture)
wrapped in :class:`ImageBackbone`: normalised pixels in, pooled features out.  A registry
name fixes the architecture through the model's config class, with the values of the
published hub checkpoint named beside it (:data:`REGISTRY`, ``hub_id``); without a
checkpoint the weights are random (offline), with one they come from
``from_pretrained`` (hub id or local directory, located by the project's resolver
:func:`vitrina.models.ruclip.resolve_checkpoint`).

Families and their pooled features:

- ``resnet``, ``mobilenet_v2``, ``efficientnet``, ``convnext``, ``swin``, ``dinov2``: the
  model's ``pooler_output`` (global average pool; ConvNeXt and Swin layer-normed;
  DINOv2 the layer-normed CLS token), flattened to ``[B, C]``.
- ``vit``: the layer-normed CLS token of ``last_hidden_state`` (what
  ``ViTForImageClassification`` classifies; the tanh pooler is not built).
- ``clip_vision``: Vitrina's CLIP image towers (:mod:`vitrina.models.classifiers.clip_tower`):
  ``image_embeds`` = the visual projection of the pooled CLS token.
- ``timm``: ``timm:<name>``, ``timm.create_model(name, num_classes=0)``'s output.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from vitrina.models.classifiers.backbone_registry import (
    FAMILIES,
    REGISTRY,
    TIMM_PREFIX,
    Entry,
    available_backbones,
    feature_dim_of,
    transformers_class,
)
from vitrina.utils import atomic_path

logger = logging.getLogger(__name__)

#: ``build_spec()["format"]``; bumped when the spec layout changes.
SPEC_FORMAT = "vitrina.backbone/1"
#: File :meth:`ImageBackbone.save_pretrained` writes beside ``config.json``.
SPEC_FILE = "backbone_spec.json"


class ImageBackbone(torch.nn.Module):
    """Wraps a vision model: ``forward(pixel_values)`` -> pooled features.

    Built by :func:`build_backbone` / :func:`backbone_from_spec`, in eval mode (as
    ``from_pretrained`` returns models; a trainer switches to train mode).

    Attributes:
        name: registry name it was built from (``timm:<name>`` for timm).
        family: ``resnet`` | ``mobilenet_v2`` | ``efficientnet`` | ``convnext`` | ``vit`` |
            ``swin`` | ``dinov2`` | ``clip_vision`` | ``timm``.
        feature_dim: width D of the features.
        image_mean, image_std: per-channel RGB normalisation (of pixels scaled to [0, 1])
            the weights expect: the checkpoint's processor, else the published one.
        image_size: the config's native square input side in pixels (``None`` for CNNs
            without one); CNNs take any size, ViT/DINOv2/CLIP interpolate position
            embeddings, Swin pads.
        model: the wrapped ``transformers`` (or timm) model.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        name: str,
        family: str,
        image_mean: tuple[float, float, float],
        image_std: tuple[float, float, float],
        feature_dim: int | None = None,
        extra_spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.family = family
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self.feature_dim = int(
            feature_dim if feature_dim is not None else feature_dim_of(family, model)
        )
        fam = FAMILIES.get(family)
        self._pooling = fam.pooling if fam else "tensor"
        self._interpolate = bool(fam and fam.interpolate)
        size = getattr(getattr(model, "config", None), "image_size", None)
        self.image_size = int(size) if isinstance(size, int) else None
        self._extra_spec = dict(extra_spec or {})

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled features.

        Args:
            pixel_values: float ``[B, 3, H, W]``, scaled to [0, 1] then normalised with
                ``image_mean``/``image_std``.

        Returns:
            float32 ``[B, feature_dim]``.

        Raises:
            ValueError: input not of shape ``[B, 3, H, W]``.
        """
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"{self.name}: pixel_values must be [B, 3, H, W], got {list(pixel_values.shape)}"
            )
        if self._pooling == "tensor":  # timm: num_classes=0 returns pooled features
            return self.model(pixel_values).flatten(1).float()
        kwargs = {}
        if self._interpolate and tuple(pixel_values.shape[-2:]) != (self.image_size,) * 2:
            kwargs["interpolate_pos_encoding"] = True
        out = self.model(pixel_values=pixel_values, **kwargs)
        if self._pooling == "cls":
            feats = out.last_hidden_state[:, 0]
        elif self._pooling == "image_embeds":
            feats = out.image_embeds
        else:
            feats = out.pooler_output
        return feats.flatten(1).float()

    def build_spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this architecture offline, without weights.

        Returns:
            JSON-serialisable ``{"format", "name", "family", "model_class", "config" (the
            ``transformers`` config as a dict; timm: its model name and kwargs),
            "image_mean", "image_std", "image_size", "feature_dim"}``; see
            :func:`backbone_from_spec`.
        """
        if self.family == "timm":
            config = dict(self._extra_spec)
        else:
            config = json.loads(self.model.config.to_json_string(use_diff=False))
        return {
            "format": SPEC_FORMAT,
            "name": self.name,
            "family": self.family,
            "model_class": type(self.model).__name__,
            "config": config,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "image_size": self.image_size,
            "feature_dim": self.feature_dim,
        }

    def save_pretrained(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write ``model.save_pretrained`` (``config.json``, ``model.safetensors``) and
        :data:`SPEC_FILE` into ``out_dir`` atomically; ``build_backbone(name,
        checkpoint=out_dir)`` loads it back.

        Raises:
            ValueError: a timm backbone (save its ``state_dict`` with its spec instead).
        """
        if self.family == "timm":
            raise ValueError(
                "save_pretrained is for transformers backbones; timm has no config.json"
            )
        out_dir = Path(out_dir)
        with atomic_path(out_dir, is_dir=True) as tmp:
            self.model.save_pretrained(tmp)
            (tmp / SPEC_FILE).write_text(json.dumps(self.build_spec(), indent=2))
            os.chmod(tmp, 0o755)  # mkdtemp's 0700 -> a normal directory
        return out_dir


def patch_config(config: Any, overrides: dict[str, Any] | None, name: str) -> Any:
    """Set ``overrides`` on a ``transformers`` config in place (and return it).

    Raises:
        ValueError: a key that is not a field of the config (lists the fields).
    """
    for key, value in (overrides or {}).items():
        if not hasattr(config, key):
            raise ValueError(
                f"Backbone {name!r}: override {key!r} is not a field of "
                f"{type(config).__name__}; fields: {sorted(config.to_dict())}"
            )
        setattr(config, key, value)
    return config


def checkpoint_stats(path: Path, entry: Entry) -> tuple[tuple, tuple]:
    """``(image_mean, image_std)`` of a checkpoint directory: its :data:`SPEC_FILE`, else
    its ``preprocessor_config.json`` / ``processor_config.json``, else ``entry``'s."""
    for fname in (SPEC_FILE, "preprocessor_config.json", "processor_config.json"):
        if not (path / fname).is_file():
            continue
        data = json.loads((path / fname).read_text())
        data = data.get("image_processor", data)
        if "image_mean" in data and "image_std" in data:
            return tuple(data["image_mean"]), tuple(data["image_std"])
    return entry.mean, entry.std


def _from_checkpoint(name: str, entry: Entry, checkpoint: str, overrides: dict | None):
    from vitrina.models.ruclip import CheckpointNotFoundError, resolve_checkpoint

    family = FAMILIES[entry.family]
    path = resolve_checkpoint(checkpoint, required_files=None)
    if not (path / "config.json").is_file():
        raise CheckpointNotFoundError(
            f"Backbone {name!r}: checkpoint {str(path)!r} has no config.json; pass a "
            f"save_pretrained directory (config.json + weights) or a hub id such as "
            f"{entry.hub_id or 'microsoft/resnet-50'!r}"
        )
    config_cls = transformers_class(family.config_class)
    found = json.loads((path / "config.json").read_text()).get("model_type")
    if found != config_cls.model_type:
        raise ValueError(
            f"Backbone {name!r} is a {config_cls.model_type!r} model but checkpoint "
            f"{checkpoint!r} holds a {found!r} model (config.json model_type)"
        )
    config = patch_config(config_cls.from_pretrained(path), overrides, name)
    model = transformers_class(family.model_class).from_pretrained(
        path, config=config, **family.model_kwargs
    )
    mean, std = checkpoint_stats(path, entry)
    logger.info("backbone %s: %s weights from %s", name, type(model).__name__, path)
    return model, mean, std


def build_backbone(
    name: str,
    *,
    checkpoint: str | None = None,
    image_size: int = 224,
    overrides: dict[str, Any] | None = None,
) -> ImageBackbone:
    """Build a registry backbone.

    Args:
        name: a name of :func:`available_backbones`, or ``timm:<timm model name>``.
        checkpoint: hub id (``microsoft/resnet-50``) or local ``save_pretrained``
            directory: weights from ``from_pretrained``, and the architecture from its
            ``config.json`` (``name`` then only picks the family).  ``None``: the
            registry's published architecture with random weights (seeded by torch's
            global RNG), fully offline.  Required for ``clip_vision`` (a ruCLIP or HF
            CLIP directory, e.g. the ``clip_finetune`` output).
        image_size: square input side in pixels for ViT-like configs (``vit``, ``swin``
            set ``config.image_size`` when built without a checkpoint; a checkpoint keeps
            its own and ViT interpolates its position embeddings).  CNNs take any size.
        overrides: config fields to patch (e.g. ``{"drop_path_rate": 0.1}``).

    Returns:
        :class:`ImageBackbone` in eval mode.

    Raises:
        ValueError: unknown name (lists the available ones), an override that is not a
            config field, a checkpoint of another model type, ``clip_vision`` without a
            checkpoint.
        vitrina.models.ruclip.CheckpointNotFoundError: checkpoint neither local nor
            downloadable (offline: the message says to pass a local directory).
        ImportError: ``timm:`` names where timm does not import (says why and what to use).
    """
    if name.startswith(TIMM_PREFIX):
        from vitrina.models.classifiers.timm_backbone import build_timm_backbone

        return build_timm_backbone(name[len(TIMM_PREFIX) :], checkpoint, overrides)
    if name not in REGISTRY:
        raise ValueError(
            f"Unknown backbone {name!r}; available: {available_backbones()}, or "
            f"'timm:<name>' where timm imports"
        )
    entry = REGISTRY[name]
    if entry.family == "clip_vision":
        from vitrina.models.classifiers.clip_tower import clip_vision_tower

        if checkpoint is None:
            raise ValueError(
                "Backbone 'clip_vision' needs checkpoint=: a ruCLIP or Hugging Face CLIP "
                "directory (or hub id), e.g. the clip_finetune output"
            )
        model, mean, std = clip_vision_tower(checkpoint, overrides)
    elif checkpoint is not None:
        model, mean, std = _from_checkpoint(name, entry, checkpoint, overrides)
    else:
        family = FAMILIES[entry.family]
        config = transformers_class(family.config_class)(**entry.config)
        if family.sized:
            config.image_size = int(image_size)
        patch_config(config, overrides, name)
        model = transformers_class(family.model_class)(config, **family.model_kwargs)
        mean, std = entry.mean, entry.std
    return ImageBackbone(
        model, name=name, family=entry.family, image_mean=mean, image_std=std
    ).eval()


def backbone_from_spec(spec: dict[str, Any]) -> ImageBackbone:
    """Rebuild the architecture of :meth:`ImageBackbone.build_spec` with random weights.

    Offline (no checkpoint is read); load a ``state_dict`` of the original into it.

    Raises:
        ValueError: not a backbone spec (format), unknown family, or the rebuilt feature
            width differs from the spec's.
    """
    if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
        raise ValueError(
            f"Not a backbone spec: expected format {SPEC_FORMAT!r}, got "
            f"{spec.get('format') if isinstance(spec, dict) else type(spec).__name__!r}"
        )
    family_name = spec["family"]
    if family_name == "timm":
        from vitrina.models.classifiers.timm_backbone import timm_from_spec

        return timm_from_spec(spec)
    if family_name not in FAMILIES:
        raise ValueError(f"Unknown backbone family {family_name!r}; known: {sorted(FAMILIES)}")
    family = FAMILIES[family_name]
    config = transformers_class(family.config_class).from_dict(dict(spec["config"]))
    model = transformers_class(family.model_class)(config, **family.model_kwargs)
    backbone = ImageBackbone(
        model,
        name=spec["name"],
        family=family_name,
        image_mean=tuple(spec["image_mean"]),
        image_std=tuple(spec["image_std"]),
    )
    if backbone.feature_dim != int(spec["feature_dim"]):
        raise ValueError(
            f"spec of {spec['name']!r} says feature_dim {spec['feature_dim']} but the rebuilt "
            f"model has {backbone.feature_dim}"
        )
    return backbone.eval()
