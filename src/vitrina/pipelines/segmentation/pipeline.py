"""Segmentation pipeline: processed images → masks and ``unchecked`` rows in the review store."""

from kedro.pipeline import Node, Pipeline

from .nodes import segment_images


def create_pipeline(**kwargs) -> Pipeline:
    """One node: segment every processed image not yet segmented by this segmenter."""
    return Pipeline(
        [
            Node(
                func=segment_images,
                inputs=[
                    "products",
                    "image_manifest",
                    "review_store",
                    "params:segmentation",
                    "params:image_processing",
                ],
                outputs=["segmentation_report", "segmentation_metrics"],
                name="segment_images",
            )
        ]
    )
