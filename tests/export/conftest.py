"""Tiny classifiers (random weights, 32 px) of every kind, built in-process."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from vitrina.models.classifiers.artefact import ImageClassifier
from vitrina.models.classifiers.backbones import build_backbone
from vitrina.models.classifiers.kinds import task_class

SIZE = 32


def tiny_classifier(kind: str, classes=("a", "b", "c"), seed: int = 0) -> ImageClassifier:
    torch.manual_seed(seed)
    backbone = build_backbone("tiny_resnet", image_size=SIZE)
    options = {"embedding_dim": 16} if kind == "metric_learning" else {}
    task = task_class(kind)(backbone, classes=list(classes), training={}, options=options,
                            image_size=SIZE).eval()  # fmt: skip
    config = {
        "task": f"t_{kind}", "kind": kind, "classes": list(classes), "image_size": SIZE,
        "image_mean": list(backbone.image_mean), "image_std": list(backbone.image_std),
        "backbone": "tiny_resnet", "thresholds": [0.5] * len(classes) if kind == "multilabel" else None,
        "hparams": dict(task.hparams), "source_checkpoint": "runs/best.ckpt", "git_commit": "abc123",
    }  # fmt: skip
    gallery = None
    if kind == "metric_learning":
        imgs = images(12, seed=5)
        gallery = {"ids": np.array([f"p{i}" for i in range(12)]),
                   "labels": np.array(list(classes) * 4), "embeddings": task.predict_images(imgs)}  # fmt: skip
    return ImageClassifier(task, config, gallery)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def model_config_pb2():
    """tritonclient's ``model_config_pb2``, loaded from its file: ``tritonclient.grpc``'s
    ``__init__`` needs the grpc extra, the generated module only protobuf."""
    import tritonclient

    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
