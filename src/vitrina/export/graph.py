"""What is exported: a classifier's inference graph, free of Lightning and pruning hooks.

The exported graph takes **normalised** pixels and returns the head's raw outputs:

* input ``pixel_values``: ``float32 [B, 3, S, S]``, RGB scaled to [0, 1] then
  ``(x - mean) / std`` with the classifier's ``image_mean`` / ``image_std``;
* output ``logits`` ``float32 [B, C]`` (multiclass: softmax gives probabilities;
  multilabel: sigmoid, then the per-class thresholds of ``config.json``) or
  ``embeddings`` ``float32 [B, E]`` (metric learning, L2-normalised).

Normalisation and activation stay outside the graph so that the Triton config, the ONNX
file and the eager module all see the same tensors, and a served model is compared with
the eager one on the values the head produced (atol 1e-4).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

#: Kinds that have an export path, and the name of their output tensor.
OUTPUT_NAMES = {"multiclass": "logits", "multilabel": "logits", "metric_learning": "embeddings"}
INPUT_NAME = "pixel_values"


class UnsupportedExportError(ValueError):
    """The checkpoint's kind (or folder) has no export path."""


def check_exportable(config: dict[str, Any], source: str = "") -> str:
    """The kind of a classifier ``config.json``, if it can be exported.

    Raises:
        UnsupportedExportError: the kind is not one of :data:`OUTPUT_NAMES` (e.g. a CLIP or
            captioner checkpoint, whose export waits for their int8 path), naming both.
    """
    kind = config.get("kind")
    if kind not in OUTPUT_NAMES:
        raise UnsupportedExportError(
            f"{source or 'this checkpoint'} is of kind {kind!r}, which has no export path; "
            f"exportable kinds: {sorted(OUTPUT_NAMES)}"
        )
    return str(kind)


def read_config(folder: str | Path) -> dict[str, Any]:
    """``config.json`` of a saved model folder.

    Raises:
        FileNotFoundError: no ``config.json`` in ``folder``.
        UnsupportedExportError: see :func:`check_exportable`.
    """
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {folder} is not a saved Vitrina classifier")
    config = json.loads(path.read_text())
    check_exportable(config, str(folder))
    return config


def remove_pruning(module: nn.Module) -> int:
    """Make every ``torch.nn.utils.prune`` reparametrisation permanent, in place
    (``prune.remove``: ``weight_orig * weight_mask`` becomes a plain ``weight``).

    Returns:
        How many (module, parameter) pairs were still pruned.
    """
    removed = 0
    for sub in module.modules():
        for hook in list(sub._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(sub, hook._tensor_name)
                removed += 1
    return removed


def _copy(module: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also takes modules pruned by ``torch.nn.utils.prune``
    (their ``weight`` is a computed, non-leaf tensor deepcopy refuses; it is recomputed
    from ``weight_orig * weight_mask`` anyway)."""
    memo: dict[int, Any] = {}
    for sub in module.modules():
        for value in vars(sub).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(module, memo)


class InferenceGraph(nn.Module):
    """A task's backbone and head as a plain ``nn.Module`` (no LightningModule, loss or
    ArcFace centres), in eval mode: ``float32 [B, 3, S, S]`` → ``[B, C]`` or ``[B, E]``.

    Args:
        task: a :class:`vitrina.models.classifiers.task_base.ImageTask`; deep-copied, so
            removing pruning masks leaves the caller's model untouched.
    """

    def __init__(self, task: nn.Module) -> None:
        super().__init__()
        self.backbone = _copy(task.backbone).float().eval()
        self.head = _copy(task.head).float().eval()
        self.normalise_output = task.kind == "metric_learning"
        self.kind = task.kind
        self.pruning_removed = remove_pruning(self)
        self.eval()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.head(self.backbone(pixel_values))
        if self.normalise_output:
            out = nn.functional.normalize(out.float(), dim=-1)
        return out


def normalise(images: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """``uint8 [N, S, S, 3]`` → the graph's input ``float32 [N, 3, S, S]`` (``/255``, then
    ``(x - mean) / std`` per channel, as :meth:`ImageTask.normalise`)."""
    x = np.ascontiguousarray(images, dtype=np.float32).transpose(0, 3, 1, 2) / 255.0
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)


def activate(kind: str, outputs: np.ndarray) -> np.ndarray:
    """Graph outputs → what :meth:`ImageClassifier.predict` returns: softmax (multiclass),
    sigmoid (multilabel) or the embeddings unchanged (metric learning)."""
    outputs = outputs.astype(np.float32, copy=False)
    if kind == "multiclass":
        shifted = np.exp(outputs - outputs.max(1, keepdims=True))
        return shifted / shifted.sum(1, keepdims=True)
    if kind == "multilabel":
        return 1.0 / (1.0 + np.exp(-outputs))
    return outputs


def config_digest(config: dict[str, Any]) -> str:
    """SHA-256 of a classifier's ``config.json`` content (sorted keys): an export records
    it, so inference can tell an ONNX file exported from another training run."""
    import hashlib

    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
