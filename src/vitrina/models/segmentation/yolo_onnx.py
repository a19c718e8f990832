"""``yolo_seg_onnx``: a user's YOLOv8/YOLO11 segmentation model exported to ONNX.

No pretrained person segmenter can be downloaded here, so Vitrina ships none: point
``segmentation.yolo_seg_onnx.model_path`` at an ONNX file exported by Ultralytics
(``yolo export model=yolo11n-seg.pt format=onnx``), as seed 001's ``--model_path``.
onnxruntime runs it; the pre- and post-processing are Vitrina's own (numpy/OpenCV),
following Ultralytics' ``LetterBox``, ``non_max_suppression`` and ``process_mask``:

- input ``[1, 3, S, S]`` float32 RGB in [0, 1], the picture letterboxed to ``S`` (scale
  ``r = min(S / h, S / w)``, bilinear resize, centred, padded with grey 114);
- ``output0`` ``[1, 4 + nc + nm, N]``: per candidate, box centre x, y, width, height
  (input pixels), ``nc`` class scores (sigmoid already applied), ``nm`` mask coefficients;
- ``output1`` ``[1, nm, S/4, S/4]``: mask prototypes (``nm`` = 32 for YOLOv8/11).

Candidates whose best class is ``person_class`` (COCO: 0) with a score of at least
``conf_threshold`` go through NMS (``cv2.dnn.NMSBoxes``, ``iou_threshold``); a kept
instance's mask is ``sigmoid(coefficients @ prototypes)``, upsampled to ``S``, cut to its
box, un-letterboxed to the picture's size and thresholded at 0.5. The image's mask is the
union of the kept persons (at most ``max_det``); its score the best kept score (0 with
nobody).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from .base import Segmentation, check_rgb

PAD_VALUE = 114


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize ``image`` [H, W, 3] to fit ``size`` × ``size``, centred on grey 114.

    Returns:
        ``(canvas [size, size, 3] uint8, scale r, (pad_left, pad_top))``, rounded as
        Ultralytics' ``LetterBox`` rounds.
    """
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = round(w * r), round(h * r)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    left, top = round(dw - 0.1), round(dh - 0.1)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas, r, (left, top)


def check_output_shapes(boxes_shape, protos_shape, person_class: int = 0) -> tuple[int, int]:
    """Check YOLO-seg output shapes; dimensions may be None or a name where dynamic.

    Returns:
        ``(nc, nm)``: number of classes and of mask coefficients (when static; -1 if not).

    Raises:
        ValueError: naming the expected layout and what the model has.
    """
    expected = (
        "expected output0 [1, 4 + classes + masks, candidates] and output1 "
        "[1, masks, H/4, W/4] (an Ultralytics YOLOv8/11-seg ONNX export)"
    )
    if len(boxes_shape) != 3 or len(protos_shape) != 4:
        raise ValueError(
            f"{expected}; the model gives {list(boxes_shape)} and {list(protos_shape)}"
        )
    nm = protos_shape[1]
    channels = boxes_shape[1]
    if isinstance(nm, int) and isinstance(channels, int):
        nc = channels - 4 - nm
        if nc < 1:
            raise ValueError(
                f"{expected}; output0 has {channels} channels, which leaves {nc} classes "
                f"for {nm} mask coefficients"
            )
        if person_class >= nc:
            raise ValueError(f"person_class {person_class} is not among the model's {nc} classes")
        return nc, nm
    return -1, -1


def decode(
    boxes: np.ndarray,
    protos: np.ndarray,
    image_hw: tuple[int, int],
    size: int,
    scale: float,
    pad: tuple[int, int],
    person_class: int = 0,
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    max_det: int = 100,
) -> Segmentation:
    """Decode one image's raw YOLO-seg outputs into the union mask of its persons.

    Args:
        boxes: ``output0`` [1, 4 + nc + nm, N] float.
        protos: ``output1`` [1, nm, mh, mw] float.
        image_hw: The picture's (height, width) in pixels.
        size: The letterboxed input side S.
        scale, pad: What :func:`letterbox` returned.

    Raises:
        ValueError: shapes that are not YOLO-seg outputs.
    """
    boxes, protos = np.asarray(boxes, np.float32), np.asarray(protos, np.float32)
    nc, nm = check_output_shapes(boxes.shape, protos.shape, person_class)
    h, w = image_hw
    pred = boxes[0].T  # [N, 4 + nc + nm]
    scores = pred[:, 4 : 4 + nc]
    best = scores.argmax(1)
    conf = scores[np.arange(len(pred)), best]
    keep = np.nonzero((best == person_class) & (conf >= conf_threshold))[0]
    union = np.zeros((h, w), bool)
    if keep.size == 0:
        return Segmentation(union, 0.0)
    xywh = pred[keep, :4]
    tl = np.stack(
        [xywh[:, 0] - xywh[:, 2] / 2, xywh[:, 1] - xywh[:, 3] / 2, xywh[:, 2], xywh[:, 3]], 1
    )
    picked = cv2.dnn.NMSBoxes(tl.tolist(), conf[keep].tolist(), conf_threshold, iou_threshold)
    picked = keep[np.asarray(picked, int).reshape(-1)[:max_det]]
    mh, mw = protos.shape[2:]
    logits = pred[picked, 4 + nc :] @ protos[0].reshape(nm, -1)
    probs = 1.0 / (1.0 + np.exp(-logits.reshape(-1, mh, mw)))
    left, top = pad
    new_w, new_h = round(w * scale), round(h * scale)
    yy, xx = np.mgrid[0:size, 0:size]
    for prob, (cx, cy, bw, bh) in zip(probs, pred[picked, :4], strict=True):
        full = cv2.resize(prob, (size, size), interpolation=cv2.INTER_LINEAR)
        inside = (xx >= cx - bw / 2) & (xx < cx + bw / 2) & (yy >= cy - bh / 2) & (yy < cy + bh / 2)
        full = np.where(inside, full, 0.0).astype(np.float32)
        crop = full[top : top + new_h, left : left + new_w]
        union |= cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
    return Segmentation(union, float(conf[picked].max()))


class YoloSegOnnxSegmenter:
    """Person masks from a YOLOv8/11-seg ONNX file (see the module docstring).

    Args:
        model_path: The ONNX file.
        imgsz: Input side S when the model's input is dynamic (else the model's own).
        person_class, conf_threshold, iou_threshold, max_det: see :func:`decode`.
        threads: onnxruntime intra-op threads (0: its default).

    Raises:
        FileNotFoundError: no file at ``model_path``.
        ValueError: the model's outputs are not YOLO-seg outputs, or it has no image input.
    """

    name = "yolo_seg_onnx"

    def __init__(
        self,
        model_path: str,
        imgsz: int = 640,
        person_class: int = 0,
        conf_threshold: float = 0.25,
        iou_threshold: float = 0.45,
        max_det: int = 100,
        threads: int = 0,
    ) -> None:
        import onnxruntime as ort

        path = Path(model_path) if model_path else None
        if path is None or not path.is_file():
            raise FileNotFoundError(
                f"segmentation.yolo_seg_onnx.model_path: no ONNX file at {model_path!r} "
                "(export one with `yolo export model=yolo11n-seg.pt format=onnx`)"
            )
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(
                f"{path}: expected one image input [1, 3, S, S], got "
                f"{[(i.name, i.shape) for i in inputs]}"
            )
        if len(outputs) < 2:
            raise ValueError(
                f"{path}: expected two outputs, output0 [1, 4 + classes + masks, candidates] "
                f"and output1 [1, masks, H/4, W/4]; got {[(o.name, o.shape) for o in outputs]}"
            )
        try:
            check_output_shapes(outputs[0].shape, outputs[1].shape, person_class)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        side = inputs[0].shape[2]
        self.imgsz = int(side) if isinstance(side, int) else int(imgsz)
        self.input_name = inputs[0].name
        self.person_class = int(person_class)
        self.conf_threshold = float(conf_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_det = int(max_det)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        self.version = (
            f"onnx-{digest};imgsz={self.imgsz};cls={self.person_class};"
            f"conf={self.conf_threshold};iou={self.iou_threshold}"
        )

    def segment(self, image: np.ndarray) -> Segmentation:
        """Union mask of the persons in one RGB uint8 [H, W, 3] picture.

        Raises:
            ValueError: not an RGB uint8 image, or outputs of the wrong shapes at run time.
        """
        image = check_rgb(image)
        canvas, scale, pad = letterbox(image, self.imgsz)
        blob = (canvas.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        boxes, protos = self.session.run(None, {self.input_name: blob})[:2]
        return decode(
            boxes,
            protos,
            image.shape[:2],
            self.imgsz,
            scale,
            pad,
            self.person_class,
            self.conf_threshold,
            self.iou_threshold,
            self.max_det,
        )
