"""``timm:<name>`` backbones through the optional ``timm`` extra.

timm imports torchvision, and torchvision's wheel is broken beside the pinned CPU
``torch==2.13.0``, so on such an install timm cannot be used: every entry point here
raises an ``ImportError`` saying so and naming the transformers backbones to use instead.
Where timm does import (an environment with a matching torchvision), ``timm.create_model(
name, num_classes=0)`` returns pooled features, as Vitrina's other backbones do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["build_timm_backbone", "import_timm", "timm_from_spec"]


def import_timm(model_name: str) -> Any:
    """``import timm``, or an ``ImportError`` that explains why not and what to use.

    Catches every exception of the import: a broken torchvision fails with
    ``RuntimeError`` / ``OSError`` (missing operators, undefined symbols) as well as
    ``ImportError``.
    """
    try:
        import timm
    except Exception as err:
        from vitrina.models.classifiers.backbones import available_backbones

        raise ImportError(
            f"Backbone 'timm:{model_name}' needs the optional timm package "
            f"(`pip install 'vitrina[timm]'`), and timm needs torchvision, whose wheel is "
            f"broken beside the pinned torch==2.13.0 CPU build ({type(err).__name__}: "
            f"{str(err)[:200]}). Use a transformers backbone instead: "
            f"{available_backbones()} (docs/classification.md maps each seed-004 name, e.g. "
            f"ResNeXt/WideResNet -> resnet50, DenseNet -> convnext_tiny, MobileNetV3 -> "
            f"mobilenet_v2)."
        ) from err
    return timm


def _wrap(model: Any, name: str, kwargs: dict[str, Any]) -> Any:
    from vitrina.models.classifiers.backbones import ImageBackbone

    cfg = getattr(model, "pretrained_cfg", None) or {}
    return ImageBackbone(
        model,
        name=f"timm:{name}",
        family="timm",
        image_mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        image_std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        feature_dim=int(model.num_features),
        extra_spec={"model_name": name, "kwargs": kwargs},
    ).eval()


def build_timm_backbone(
    model_name: str, checkpoint: str | None, overrides: dict[str, Any] | None
) -> Any:
    """``timm.create_model(model_name, num_classes=0, **overrides)`` as an ImageBackbone.

    ``checkpoint``: a local weights file (``pretrained_cfg_overlay={"file": ...}``) or
    ``hf-hub:<id>``; ``None`` -> random weights.

    Raises:
        ImportError: timm does not import (see :func:`import_timm`).
    """
    timm = import_timm(model_name)
    kwargs = dict(overrides or {})
    if checkpoint is None:
        model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
    elif Path(checkpoint).is_file():
        model = timm.create_model(
            model_name,
            pretrained=True,
            num_classes=0,
            pretrained_cfg_overlay={"file": str(checkpoint)},
            **kwargs,
        )
    else:
        model = timm.create_model(checkpoint, pretrained=True, num_classes=0, **kwargs)
    return _wrap(model, model_name, kwargs)


def timm_from_spec(spec: dict[str, Any]) -> Any:
    """Random-init timm backbone of ``ImageBackbone.build_spec()`` (family ``timm``)."""
    config = spec["config"]
    timm = import_timm(config["model_name"])
    kwargs = dict(config.get("kwargs") or {})
    model = timm.create_model(config["model_name"], pretrained=False, num_classes=0, **kwargs)
    return _wrap(model, config["model_name"], kwargs)
