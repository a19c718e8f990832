"""Custom Kedro datasets: NPZ embeddings, ruCLIP checkpoints, the generated demo catalogue, CSV
source tables."""

from .checkpoint import RuClipCheckpointDataset
from .csv import CSVDataset
from .demo_catalogue import DemoCatalogueDataset
from .embeddings import Embeddings, EmbeddingsDataset
from .image_folder import ImageFolderDataset

__all__ = [
    "CSVDataset",
    "DemoCatalogueDataset",
    "Embeddings",
    "EmbeddingsDataset",
    "ImageFolderDataset",
    "RuClipCheckpointDataset",
]
