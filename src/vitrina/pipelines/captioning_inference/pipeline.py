"""Captioning inference pipeline: image files → captions CSV, with the trained captioner."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from .nodes import caption_images, list_images


def create_pipeline(**kwargs) -> Pipeline:
    """``captioning_inference.inputs`` (files and folders) → ``captioning_inference_captions``.

    Run: ``kedro run --pipeline=captioning_inference --params="captioning_inference.inputs=DIR"``.
    """
    return Pipeline(
        [
            Node(
                list_images,
                "params:captioning_inference",
                "captioning_inference_images",
                name="list_images",
            ),
            Node(
                caption_images,
                ["captioner", "captioning_inference_images", "params:captioning_inference"],
                "captioning_inference_captions",
                name="caption_images",
            ),
        ]
    )
