"""ret_meta pipeline: review store + products (+ predictions later) → ret_meta.json, POST."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_ret_meta, select_groups


def create_pipeline(**kwargs) -> Pipeline:
    """Build ``ret_meta`` and hand the selected groups to the optional POST endpoint.

    ``build_ret_meta`` takes an optional fifth input, a predictions table (``product_id,
    task, label, score``): wire the classification inference output there.
    """
    return Pipeline(
        [
            Node(
                func=build_ret_meta,
                inputs=["products", "review_store", "segmentation_metrics", "params:ret_meta"],
                outputs="ret_meta",
                name="build_ret_meta",
            ),
            Node(
                func=select_groups,
                inputs=["ret_meta", "params:ret_meta.post_groups"],
                outputs="ret_meta_post",
                name="post_ret_meta",
            ),
        ]
    )
