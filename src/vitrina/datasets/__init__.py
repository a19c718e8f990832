"""Custom Kedro datasets: NPZ and sharded embeddings, ruCLIP checkpoints, the generated demo catalogue,
CSV source tables, seed 004's classification layouts, the review database and a JSON POST
endpoint."""

from .checkpoint import ClipCheckpointDataset
from .classifier import ClassifierDataset
from .csv import CSVDataset
from .demo_catalogue import DemoCatalogueDataset
from .embeddings import Embeddings, EmbeddingsDataset
from .image_folder import ImageFolderDataset
from .review_store import JSONPostDataset, ReviewStoreDataset
from .seed_layouts import SeedClassificationDataset, SeedMetricLearningDataset
from .sharded_embeddings import ShardedEmbeddingsDataset

__all__ = [
    "ClassifierDataset",
    "CSVDataset",
    "DemoCatalogueDataset",
    "Embeddings",
    "EmbeddingsDataset",
    "ImageFolderDataset",
    "JSONPostDataset",
    "ReviewStoreDataset",
    "ClipCheckpointDataset",
    "SeedClassificationDataset",
    "SeedMetricLearningDataset",
    "ShardedEmbeddingsDataset",
]
