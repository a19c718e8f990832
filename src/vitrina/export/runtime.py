"""Running exported artefacts: onnxruntime sessions, ``.pt2`` programs, TorchScript, and
:class:`OnnxClassifier`, the ONNX twin of
:class:`~vitrina.models.classifiers.artefact.ImageClassifier` that
``classification_inference`` uses with ``backend: onnxruntime``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .graph import INPUT_NAME, activate, normalise

Runner = Callable[[np.ndarray], np.ndarray]


class InputShapeError(ValueError):
    """An ONNX file whose input does not take the configured image size."""


def ort_session(path: str | Path, num_threads: int | None = 1) -> Any:
    """An onnxruntime CPU session with all graph optimisations.

    Args:
        num_threads: intra-op threads (``None``: onnxruntime's default, every core);
            inter-op is 1 (the graphs are sequential).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    if num_threads:
        options.intra_op_num_threads = int(num_threads)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_runner(fmt: str, path: str | Path, num_threads: int | None = 1) -> Runner:
    """A function ``float32 [B, 3, S, S]`` → ``float32 [B, K]`` running an artefact.

    Args:
        fmt: ``onnx`` (also the int8 file), ``pt2`` or ``torchscript``.

    Raises:
        ValueError: an unknown format.
    """
    if fmt == "onnx":
        session = ort_session(path, num_threads)
        return lambda x: session.run(None, {INPUT_NAME: np.ascontiguousarray(x, np.float32)})[0]
    import torch

    if fmt == "pt2":
        module = torch.export.load(str(path)).module()
    elif fmt == "torchscript":
        module = torch.jit.load(str(path), map_location="cpu").eval()
    else:
        raise ValueError(f"format must be onnx, pt2 or torchscript, got {fmt!r}")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).float().numpy()

    return run


def check_input_shape(session: Any, image_size: int, source: str) -> None:
    """Refuse an ONNX model whose ``pixel_values`` is not ``[batch, 3, S, S]`` with ``S``
    the configured ``image_size`` (symbolic axes other than the batch count as wrong).

    Raises:
        InputShapeError: naming the file's shape and the configured size.
    """
    inputs = {i.name: i for i in session.get_inputs()}
    if INPUT_NAME not in inputs:
        raise InputShapeError(
            f"{source} has no input {INPUT_NAME!r} (inputs: {sorted(inputs)}); "
            "export it with `vitrina export`"
        )
    shape = list(inputs[INPUT_NAME].shape)
    if len(shape) != 4 or shape[1:] != [3, image_size, image_size]:
        raise InputShapeError(
            f"{source} takes {INPUT_NAME} of shape {shape}, but the configured image size is "
            f"{image_size} (expected [batch, 3, {image_size}, {image_size}]); re-export the "
            "model or set the image size it was trained at"
        )


class OnnxClassifier:
    """An exported classifier run by onnxruntime, with the interface
    :func:`vitrina.models.classifiers.inference.predict_paths` needs (``kind``,
    ``classes``, ``image_size``, ``config``, ``gallery``, ``predict``).

    Args:
        onnx_path: ``model.onnx`` (or the int8 file) written by :mod:`vitrina.export`.
        config: the classifier's ``config.json`` (classes, thresholds, mean/std).
        gallery: metric learning: the saved gallery; ``None`` otherwise.
        image_size: the configured input side; defaults to ``config["image_size"]``.
        num_threads: onnxruntime intra-op threads.

    Raises:
        InputShapeError: the file's input shape does not match ``image_size``.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | Path,
        config: dict[str, Any],
        gallery: dict[str, np.ndarray] | None = None,
        *,
        image_size: int | None = None,
        num_threads: int | None = 1,
    ) -> None:
        self.path = Path(onnx_path)
        self.config = dict(config)
        self.gallery = gallery
        size = int(image_size if image_size is not None else config["image_size"])
        self.session = ort_session(self.path, num_threads)
        check_input_shape(self.session, size, str(self.path))
        self.kind = str(config["kind"])
        self.classes = list(config["classes"])
        self.image_size = size

    def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Probabilities ``[N, C]`` or embeddings ``[N, E]`` of ``uint8 [N, S, S, 3]``
        images, as :meth:`ImageClassifier.predict` returns them."""
        mean, std = self.config["image_mean"], self.config["image_std"]
        chunks = []
        for start in range(0, len(images), batch_size):
            x = normalise(images[start : start + batch_size], mean, std)
            chunks.append(self.session.run(None, {INPUT_NAME: x})[0])
        width = self.session.get_outputs()[0].shape[-1]
        outputs = np.concatenate(chunks) if chunks else np.zeros((0, int(width)), np.float32)
        return activate(self.kind, outputs)
