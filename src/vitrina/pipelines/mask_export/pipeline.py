"""Mask export pipeline: review store (+ the last segmentation's metrics) → mask folder."""

from kedro.pipeline import Node, Pipeline

from .nodes import export_masks


def create_pipeline(**kwargs) -> Pipeline:
    """One node: write the masks of approved (or all) images and an index of them."""
    return Pipeline(
        [
            Node(
                func=export_masks,
                inputs=["review_store", "segmentation_metrics", "params:mask_export"],
                outputs="mask_export_index",
                name="export_masks",
            )
        ]
    )
