"""Custom Kedro datasets: NPZ embeddings, ruCLIP checkpoints, the generated demo catalogue."""

from .checkpoint import RuClipCheckpointDataset
from .classifier import ClassifierDataset
from .demo_catalogue import DemoCatalogueDataset
from .embeddings import Embeddings, EmbeddingsDataset
from .image_folder import ImageFolderDataset

__all__ = [
    "ClassifierDataset",
    "DemoCatalogueDataset",
    "Embeddings",
    "EmbeddingsDataset",
    "ImageFolderDataset",
    "RuClipCheckpointDataset",
]
