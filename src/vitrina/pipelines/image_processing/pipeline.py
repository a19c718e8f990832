"""Image processing pipeline: ``products`` → processed images + ``image_manifest``."""

from kedro.pipeline import Node, Pipeline

from .nodes import process_images


def create_pipeline(**kwargs) -> Pipeline:
    """One node: decode, convert, resize and write every product image."""
    return Pipeline(
        [
            Node(
                func=process_images,
                inputs=["products", "params:ingestion.image_root", "params:image_processing"],
                outputs=["image_manifest", "image_quality_report", "processed_images"],
                name="process_images",
            )
        ]
    )
