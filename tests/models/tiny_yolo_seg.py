"""A tiny ONNX model with the output format of a YOLOv8/11-seg export, written by tests.

``output1`` (prototypes, [1, 32, S/4, S/4]) is computed from the input: prototype 0 is
``20 * (mean red over a 4x4 cell - 0.5)``, the others 0, so a mask coefficient of +1 on
prototype 0 selects the red pixels and -1 the others. ``output0`` ([1, 4 + nc + 32, N])
holds fixed candidates (plus 0 × the input's mean, so it depends on the input).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NM = 32


def candidates(size: int, nc: int = 2) -> np.ndarray:
    """The fixed candidates [1, 4 + nc + 32, 4]: what the decoder must keep or drop.

    0: person 0.9, left half of the input, coefficient +1 (red pixels) — kept;
    1: person 0.8, nearly the same box, coefficient -1 — removed by NMS;
    2: class 1 (not a person) 0.95, whole input, coefficient -1 — not a person;
    3: person 0.1, whole input, coefficient -1 — under the confidence threshold.
    """
    s = float(size)
    rows = [
        ((s / 4, s / 2, s / 2, s), (0.9, 0.0), 1.0),
        ((s / 4 + 1, s / 2, s / 2, s), (0.8, 0.0), -1.0),
        ((s / 2, s / 2, s, s), (0.0, 0.95), -1.0),
        ((s / 2, s / 2, s, s), (0.1, 0.0), -1.0),
    ]
    out = np.zeros((1, 4 + nc + NM, len(rows)), np.float32)
    for j, (box, scores, coef) in enumerate(rows):
        out[0, :4, j] = box
        out[0, 4 : 4 + nc, j] = scores[:nc]
        out[0, 4 + nc, j] = coef
    return out


def write_tiny_yolo_seg(
    path: Path, size: int = 64, nc: int = 2, boxes: np.ndarray | None = None, nm: int = NM
) -> Path:
    """Write the model to ``path`` (opset 17); ``boxes`` replaces ``output0``'s values
    (any shape, to build a model with the wrong output shapes)."""
    boxes = candidates(size, nc) if boxes is None else boxes.astype(np.float32)
    weight = np.zeros((nm, 3, 1, 1), np.float32)
    weight[0, 0] = 20.0
    bias = np.zeros(nm, np.float32)
    bias[0] = -10.0
    graph = helper.make_graph(
        [
            helper.make_node(
                "AveragePool", ["images"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]
            ),
            helper.make_node("Conv", ["pooled", "w", "b"], ["output1"]),
            helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
            helper.make_node("Add", ["boxes", "nothing"], ["output0"]),
        ],
        "tiny_yolo_seg",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [
            helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(boxes.shape)),
            helper.make_tensor_value_info(
                "output1", TensorProto.FLOAT, [1, nm, size // 4, size // 4]
            ),
        ],
        initializer=[
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(bias, "b"),
            numpy_helper.from_array(boxes, "boxes"),
            numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
