"""The three task kinds: multiclass, multilabel and metric learning.

* :class:`MulticlassTask` — cross-entropy (``label_smoothing``, ``class_weights:
  balanced`` as options), softmax probabilities;
* :class:`MultilabelTask` — BCE-with-logits over a multi-hot target, sigmoid
  probabilities, per-class thresholds chosen on validation after training;
* :class:`MetricLearningTask` — an L2-normalised embedding head trained with
  pytorch-metric-learning's ArcFace loss (Deng et al., CVPR 2019; its class-centre weights
  are a submodule, so they are in the optimiser) or a triplet margin loss with a
  semi-hard miner (Schroff et al., FaceNet, CVPR 2015).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .metrics import multiclass_metrics, multilabel_metrics, retrieval_metrics
from .task_base import ImageTask


def _linear_head(in_dim: int, out_dim: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))


class MulticlassTask(ImageTask):
    """One label per image. Options: ``dropout`` (0.0), ``label_smoothing`` (0.0),
    ``class_weights`` (``null`` | ``balanced`` | a list), ``class_counts`` (train counts,
    for ``balanced``)."""

    kind = "multiclass"
    monitor = "val_macro_f1"

    def __init__(self, backbone, **kwargs: Any) -> None:
        super().__init__(backbone, **kwargs)
        self.head = _linear_head(
            backbone.feature_dim, len(self.classes), self.options.get("dropout", 0.0)
        )
        weights = self.options.get("class_weights")
        if weights == "balanced":
            counts = np.asarray(self.options["class_counts"], dtype=np.float64)
            weights = (counts.sum() / (len(counts) * np.maximum(counts, 1))).tolist()
        elif weights is not None and len(weights) != len(self.classes):
            raise ValueError(
                f"class_weights has {len(weights)} values for {len(self.classes)} classes"
            )
        self.loss_fn = nn.CrossEntropyLoss(
            weight=None if weights is None else torch.tensor(weights, dtype=torch.float32),
            label_smoothing=float(self.options.get("label_smoothing", 0.0)),
        )

    def compute_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(outputs.float(), targets.long())

    def activate(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().softmax(-1)

    def epoch_metrics(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        proba = torch.from_numpy(outputs).softmax(-1).numpy()
        return multiclass_metrics(targets, proba)


class MultilabelTask(ImageTask):
    """Several labels per image (multi-hot targets). Options: ``dropout`` (0.0),
    ``thresholds`` (per class, set after training by :func:`.metrics.choose_thresholds`)."""

    kind = "multilabel"
    monitor = "val_map"

    def __init__(self, backbone, **kwargs: Any) -> None:
        super().__init__(backbone, **kwargs)
        self.head = _linear_head(
            backbone.feature_dim, len(self.classes), self.options.get("dropout", 0.0)
        )
        self.loss_fn = nn.BCEWithLogitsLoss()

    def compute_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(outputs.float(), targets.float())

    def activate(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().sigmoid()

    def epoch_metrics(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        proba = 1.0 / (1.0 + np.exp(-outputs))
        return multilabel_metrics(targets, proba, 0.5)


class MetricLearningTask(ImageTask):
    """An embedding per image; classes at validation and test are unseen in training.

    Options: ``embedding_dim`` (128), ``loss`` (``arcface`` | ``triplet``), ``margin``
    (ArcFace: 28.6 degrees, pytorch-metric-learning's default; triplet: 0.1), ``scale``
    (ArcFace: 64), ``n_train_classes`` (the first classes of ``classes``: the loss's).
    """

    kind = "metric_learning"
    monitor = "val_map_at_r"

    def __init__(self, backbone, **kwargs: Any) -> None:
        super().__init__(backbone, **kwargs)
        from pytorch_metric_learning import losses, miners

        self.embedding_dim = int(self.options.get("embedding_dim", 128))
        self.head = nn.Linear(backbone.feature_dim, self.embedding_dim)
        loss = self.options.get("loss", "arcface")
        n_train = int(self.options.get("n_train_classes", len(self.classes)))
        self.miner = None
        if loss == "arcface":
            self.loss_fn = losses.ArcFaceLoss(
                num_classes=n_train,
                embedding_size=self.embedding_dim,
                margin=float(self.options.get("margin", 28.6)),
                scale=float(self.options.get("scale", 64.0)),
            )
        elif loss == "triplet":
            margin = float(self.options.get("margin", 0.1))
            self.loss_fn = losses.TripletMarginLoss(margin=margin)
            self.miner = miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard")
        else:
            raise ValueError(f"metric_learning loss must be 'arcface' or 'triplet', got {loss!r}")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.head(self.features(pixel_values)).float(), dim=-1)

    def compute_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.long()
        if self.miner is not None:
            return self.loss_fn(outputs, targets, self.miner(outputs, targets))
        return self.loss_fn(outputs, targets)

    def activate(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float()

    def epoch_metrics(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return retrieval_metrics(outputs, targets)


TASKS: dict[str, type[ImageTask]] = {
    cls.kind: cls for cls in (MulticlassTask, MultilabelTask, MetricLearningTask)
}


def task_class(kind: str) -> type[ImageTask]:
    """The LightningModule class of a kind.

    Raises:
        ValueError: an unknown kind, naming the three.
    """
    if kind not in TASKS:
        raise ValueError(f"kind must be one of {sorted(TASKS)}, got {kind!r}")
    return TASKS[kind]
