"""ruCLIP's image preprocessing as a ``transformers`` CLIP image processor."""

from __future__ import annotations

from vitrina.models.ruclip.configuration import RuClipConfig

__all__ = ["make_image_processor"]


def make_image_processor(config: RuClipConfig):
    """A ``transformers`` CLIP image processor for ``config``.

    Converts to RGB, resizes the shortest edge to ``image_resolution`` (bilinear, like the
    torchvision default in ``ruclip.RuCLIPProcessor``), centre-crops to
    ``image_resolution`` x ``image_resolution``, scales to [0, 1] and normalises with
    ``config.mean``/``config.std``.  ruclip crops the centre square first and then resizes;
    the two orders differ only by resampling round-off.

    Returns:
        A ``CLIPImageProcessorPil`` (transformers >= 5; PIL backend, no torchvision needed) or a
        ``CLIPImageProcessor``; call it as ``proc(images=[PIL images], return_tensors="pt")``
        to get ``pixel_values`` float32 ``[B, 3, R, R]``.
    """
    kwargs = dict(
        do_convert_rgb=True,
        do_resize=True,
        size={"shortest_edge": config.image_resolution},
        resample=2,  # PIL.Image.BILINEAR
        do_center_crop=True,
        crop_size={"height": config.image_resolution, "width": config.image_resolution},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(config.mean),
        image_std=list(config.std),
    )
    try:  # transformers >= 5: the PIL backend (ruclip resizes PIL images too)
        from transformers import CLIPImageProcessorPil as processor_cls
    except ImportError:  # pragma: no cover - transformers 4
        from transformers import CLIPImageProcessor as processor_cls
    return processor_cls(**kwargs)
