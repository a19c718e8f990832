"""Static int8 quantisation with onnxruntime (QDQ format, per-channel weights), calibrated
on validation images, and the fp32 → int8 accuracy check on the test split.

onnxruntime's ``quantize_static`` does the work (a well-kept library: calibration,
QDQ insertion, per-channel scales); this module feeds it calibration batches, runs its
``quant_pre_process`` (shape inference and graph optimisation) first, and measures what
quantisation cost.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vitrina.utils import atomic_path

from .graph import INPUT_NAME

logger = logging.getLogger(__name__)

#: Fewest calibration images accepted: fewer give activation ranges from a handful of
#: values (onnxruntime's MinMax calibration takes the extremes seen).
MIN_CALIBRATION_IMAGES = 8


class CalibrationError(ValueError):
    """Too few (or malformed) calibration images."""


def activation_choice(activations: str = "auto") -> tuple[str, bool]:
    """``(activation type, reduce_range)`` for :func:`quantise_static`.

    ``auto``: on x86 ``uint8`` activations (U8S8), which onnxruntime's x86 kernels run
    natively — measured here (AVX-512 VNNI, ResNet-50, 224 px, batch 8) 2.1x faster than
    S8S8, whose activations x86 kernels must shift; without VNNI those kernels use
    ``VPMADDUBSW``, whose 16-bit sums can saturate, so weights keep 7 bits
    (``reduce_range``, onnxruntime's and OpenVINO's advice for pre-VNNI CPUs). Elsewhere
    (ARM) ``int8`` (S8S8, onnxruntime's QDQ default). ``int8`` / ``uint8`` force a type.

    Raises:
        ValueError: another value.
    """
    import platform

    from vitrina.training.precision import cpu_has_vnni

    if activations not in ("auto", "int8", "uint8"):
        raise ValueError(f"int8 activations must be auto, int8 or uint8, got {activations!r}")
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686")
    if activations == "auto":
        activations = "uint8" if x86 else "int8"
    return activations, activations == "uint8" and x86 and not cpu_has_vnni()


def check_calibration_count(n: int | None) -> None:
    """Refuse int8 calibration on fewer than :data:`MIN_CALIBRATION_IMAGES` images.

    Raises:
        CalibrationError: ``n`` is ``None`` (no validation images) or below the minimum.
    """
    if n is None or n < MIN_CALIBRATION_IMAGES:
        raise CalibrationError(
            f"int8 calibration needs at least {MIN_CALIBRATION_IMAGES} validation images, "
            f"got {n or 0}; add validation images or leave int8 out of export.formats"
        )


def quantise_static(
    fp32_path: str | Path,
    int8_path: str | Path,
    calibration: np.ndarray,
    *,
    batch_size: int = 8,
    per_channel: bool = True,
    activations: str = "auto",
) -> Path:
    """Write the int8 (QDQ, signed activations and weights) model of an fp32 ONNX file.

    Args:
        fp32_path: the exported ``model.onnx``.
        int8_path: where the quantised model goes (written atomically).
        calibration: normalised validation images ``float32 [N, 3, S, S]``, N >= 8.
        batch_size: calibration batch size.
        per_channel: per-output-channel weight scales (default, as the issue asks).
        activations: ``int8`` (S8S8), ``uint8`` (U8S8) or ``auto``
            (:func:`activation_choice`).

    Raises:
        CalibrationError: fewer than :data:`MIN_CALIBRATION_IMAGES` images, or not
            ``[N, 3, S, S]``.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or calibration.shape[1] != 3:
        raise CalibrationError(
            f"calibration images must be float32 [N, 3, S, S], got {list(calibration.shape)}"
        )
    check_calibration_count(len(calibration))

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._starts = iter(range(0, len(calibration), batch_size))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self._starts, None)
            if start is None:
                return None
            return {INPUT_NAME: calibration[start : start + batch_size]}

    activations, reduce_range = activation_choice(activations)
    int8_path = Path(int8_path)
    with tempfile.TemporaryDirectory(prefix="vitrina-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        except Exception as exc:  # onnxruntime's symbolic shape inference misses some ops
            logger.info("symbolic shape inference failed (%s); using ONNX shape inference", exc)
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        with atomic_path(int8_path) as out:
            quantize_static(
                str(prepared),
                str(out),
                Batches(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                reduce_range=reduce_range,
            )
    return int8_path


@dataclass
class Int8Report:
    """fp32 → int8 on the test split.

    Attributes:
        metric: ``accuracy`` (multiclass: top-1; multilabel: per-label accuracy at the
            model's thresholds) or ``precision_at_1`` (metric learning).
        fp32, int8: the metric in points (percent).
        drop: ``fp32 - int8`` in points.
        tolerance: the allowed drop in points.
        accepted: ``drop <= tolerance``.
        top1_agreement: share of test images whose top class (or nearest neighbour)
            is the same in both.
        n: test images.
    """

    metric: str
    fp32: float
    int8: float
    drop: float
    tolerance: float
    accepted: bool
    top1_agreement: float
    n: int

    def to_dict(self) -> dict[str, float | str | bool | int]:
        return asdict(self)


def _nearest(embeddings: np.ndarray) -> np.ndarray:
    sims = embeddings @ embeddings.T
    np.fill_diagonal(sims, -np.inf)
    return sims.argmax(1)


def score(
    kind: str, outputs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray | None = None
) -> tuple[str, float, np.ndarray]:
    """``(metric name, value in points, per-image top-1 decision)`` of activated outputs.

    Multiclass: top-1 accuracy against class indices; multilabel: mean per-label
    accuracy of ``outputs >= thresholds`` against multi-hot targets; metric learning:
    precision@1 (the nearest other test image has the same label; Musgrave et al., 2020).
    """
    if kind == "multiclass":
        pred = outputs.argmax(1)
        return "accuracy", float((pred == targets).mean() * 100), pred
    if kind == "multilabel":
        cut = 0.5 if thresholds is None else np.asarray(thresholds)
        on = outputs >= cut
        return "accuracy", float((on == targets.astype(bool)).mean() * 100), on
    nearest = _nearest(outputs)
    return "precision_at_1", float((targets[nearest] == targets).mean() * 100), nearest


def compare_int8(
    kind: str,
    fp32_outputs: np.ndarray,
    int8_outputs: np.ndarray,
    targets: np.ndarray,
    *,
    tolerance: float = 1.0,
    thresholds: np.ndarray | None = None,
) -> Int8Report:
    """The int8 model's metric against the fp32 model's on the same test images.

    Args:
        kind: the classifier's kind.
        fp32_outputs, int8_outputs: activated outputs (probabilities or embeddings) ``[N, K]``.
        targets: class indices ``[N]``, multi-hot ``[N, C]`` or label ids ``[N]``.
        tolerance: allowed drop in points (default 1).

    Raises:
        ValueError: fewer than 2 test images, or outputs of different shapes.
    """
    if fp32_outputs.shape != int8_outputs.shape or len(targets) < 2:
        raise ValueError(
            f"int8 check needs >= 2 test images and outputs of one shape; got "
            f"{len(targets)} images, {fp32_outputs.shape} vs {int8_outputs.shape}"
        )
    metric, fp32, top_fp32 = score(kind, fp32_outputs, targets, thresholds)
    _, int8, top_int8 = score(kind, int8_outputs, targets, thresholds)
    same = top_fp32 == top_int8
    agreement = float(same.all(axis=1).mean() if same.ndim > 1 else same.mean())
    drop = fp32 - int8
    return Int8Report(metric, round(fp32, 4), round(int8, 4), round(drop, 4), float(tolerance),
                      bool(drop <= tolerance + 1e-9), round(agreement, 4), int(len(targets)))  # fmt: skip
