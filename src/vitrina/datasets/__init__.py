"""Custom Kedro datasets: NPZ embeddings, ruCLIP checkpoints, the generated demo catalogue,
the review database and a JSON POST endpoint."""

from .checkpoint import RuClipCheckpointDataset
from .demo_catalogue import DemoCatalogueDataset
from .embeddings import Embeddings, EmbeddingsDataset
from .image_folder import ImageFolderDataset
from .review_store import JSONPostDataset, ReviewStoreDataset

__all__ = [
    "DemoCatalogueDataset",
    "Embeddings",
    "EmbeddingsDataset",
    "ImageFolderDataset",
    "JSONPostDataset",
    "ReviewStoreDataset",
    "RuClipCheckpointDataset",
]
