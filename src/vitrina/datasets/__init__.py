"""Custom Kedro datasets: NPZ and sharded embeddings, ruCLIP checkpoints, the generated
demo catalogue, CSV source tables, seed 004's classification layouts, the review database,
a JSON POST endpoint and the Optuna storage URL from credentials."""

from .checkpoint import ClipCheckpointDataset
from .classifier import ClassifierDataset
from .csv import CSVDataset
from .demo_catalogue import DemoCatalogueDataset
from .embeddings import Embeddings, EmbeddingsDataset
from .image_folder import ImageFolderDataset
from .optuna_storage import OptunaStorageDataset
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
    "OptunaStorageDataset",
    "ReviewStoreDataset",
    "ClipCheckpointDataset",
    "SeedClassificationDataset",
    "SeedMetricLearningDataset",
    "ShardedEmbeddingsDataset",
]
