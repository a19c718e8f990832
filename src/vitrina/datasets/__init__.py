"""Custom Kedro datasets: NPZ embeddings, ruCLIP checkpoints, the generated demo catalogue,
seed 004's classification layouts."""

from .checkpoint import RuClipCheckpointDataset
from .classifier import ClassifierDataset
from .demo_catalogue import DemoCatalogueDataset
from .embeddings import Embeddings, EmbeddingsDataset
from .image_folder import ImageFolderDataset
from .seed_layouts import SeedClassificationDataset, SeedMetricLearningDataset

__all__ = [
    "ClassifierDataset",
    "DemoCatalogueDataset",
    "Embeddings",
    "EmbeddingsDataset",
    "ImageFolderDataset",
    "RuClipCheckpointDataset",
    "SeedClassificationDataset",
    "SeedMetricLearningDataset",
]
