"""Writing the inference graph as ONNX, a ``torch.export`` program and traced TorchScript.

Every writer takes an :class:`~vitrina.export.graph.InferenceGraph`, an example input
``float32 [B, 3, S, S]`` (``B`` >= 2: with 1, ``torch.export`` would specialise the batch
axis) and writes one file atomically (:func:`vitrina.utils.atomic_path`). The batch axis
is dynamic in the ONNX file and the ``.pt2`` program; TorchScript traces take any batch
size for these convolutional / transformer graphs because tracing records shapes as
arithmetic on the input's size.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from vitrina.utils import atomic_path

from .graph import INPUT_NAME, OUTPUT_NAMES, InferenceGraph

logger = logging.getLogger(__name__)

#: The artefact file of each format, inside an export folder.
FILES = {"onnx": "model.onnx", "pt2": "model.pt2", "torchscript": "model.torchscript.pt"}
#: Upper bound of the dynamic batch axis (``torch.export.Dim``).
MAX_BATCH = 4096


def _batch_dim() -> dict[str, dict[int, torch.export.Dim]]:
    return {INPUT_NAME: {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}}


def _check_example(example: torch.Tensor) -> None:
    if example.dim() != 4 or example.shape[0] < 2:
        raise ValueError(
            f"the export example must be float [B >= 2, 3, S, S], got {list(example.shape)}"
        )


def export_onnx(graph: InferenceGraph, example: torch.Tensor, path: str | Path) -> Path:
    """One self-contained ONNX file (``external_data=False``) from the dynamo exporter
    (``torch.onnx.export(..., dynamo=True)``, needs ``onnx`` and ``onnxscript``), with
    input ``pixel_values`` and output ``logits``/``embeddings`` whose axis 0 is ``batch``.

    Raises:
        ValueError: ``example`` is not ``[B >= 2, 3, S, S]``.
    """
    _check_example(example)
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pytree deprecations inside export
        torch.onnx.export(
            graph,
            (example,),
            str(tmp),
            dynamo=True,
            external_data=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAMES[graph.kind]],
            dynamic_shapes=_batch_dim(),
            optimize=True,
            verbose=False,
        )
    return path


def export_program(graph: InferenceGraph, example: torch.Tensor, path: str | Path) -> Path:
    """A ``torch.export`` program (``.pt2``, ``torch.export.save``) with a dynamic batch
    axis; load it with ``torch.export.load(path).module()``.

    Raises:
        ValueError: ``example`` is not ``[B >= 2, 3, S, S]``.
    """
    _check_example(example)
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.export.export(graph, (example,), dynamic_shapes=_batch_dim())
    with atomic_path(path) as tmp:
        torch.export.save(program, str(tmp))
    return path


def export_torchscript(graph: InferenceGraph, example: torch.Tensor, path: str | Path) -> Path:
    """Traced TorchScript (``torch.jit.trace``), for the seed projects' consumers.

    TorchScript is deprecated in torch 2.x in favour of ``torch.export``; that is logged at
    WARNING, with any deprecation warning the tracer raises. Pruning masks were removed
    when the graph was built (:func:`vitrina.export.graph.remove_pruning`), so the trace
    holds plain weights.

    Raises:
        ValueError: ``example`` is not ``[B >= 2, 3, S, S]``.
    """
    _check_example(example)
    path = Path(path)
    logger.warning(
        "TorchScript is deprecated in torch %s (torch.export / .pt2 replaces it); "
        "writing a traced model for consumers that still load it",
        torch.__version__.split("+")[0],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        with torch.no_grad():
            traced = torch.jit.trace(graph, example, check_trace=False)
    for item in caught:
        if issubclass(item.category, DeprecationWarning):
            logger.warning("torch.jit.trace: %s", item.message)
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp))
    return path


WRITERS = {"onnx": export_onnx, "pt2": export_program, "torchscript": export_torchscript}
