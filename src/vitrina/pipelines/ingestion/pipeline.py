"""Ingestion pipeline: ``raw_products`` → ``products`` + ``ingestion_quality_report``."""

from kedro.pipeline import Node, Pipeline

from .nodes import clean_products, map_to_canonical_schema, validate_raw_products


def create_pipeline(**kwargs) -> Pipeline:
    """Validate, map to the canonical schema, drop and count bad rows."""
    return Pipeline(
        [
            Node(
                func=validate_raw_products,
                inputs=["raw_products", "params:ingestion"],
                outputs="validated_raw_products",
                name="validate_raw_products",
            ),
            Node(
                func=map_to_canonical_schema,
                inputs=["validated_raw_products", "params:ingestion"],
                outputs="canonical_products",
                name="map_to_canonical_schema",
            ),
            Node(
                func=clean_products,
                inputs=["canonical_products", "params:ingestion"],
                outputs=["products", "ingestion_quality_report"],
                name="clean_products",
            ),
        ]
    )
