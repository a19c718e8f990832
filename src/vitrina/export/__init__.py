"""Export and serving of trained image classifiers (docs/classification.md, "Export").

One module per step: :mod:`.graph` (what is exported), :mod:`.formats` (ONNX, ``.pt2``,
TorchScript), :mod:`.verify` (each against eager PyTorch), :mod:`.quantise` (onnxruntime
static int8 and its accuracy check), :mod:`.card` (``model_card.md``), :mod:`.triton` (a
Triton model repository), :mod:`.tracking` (MLflow), :mod:`.runtime` (running the
artefacts; :class:`OnnxClassifier` for inference) and :mod:`.classifier`, which does
them all for one classifier.
"""

from .classifier import FORMATS, INT8_FILE, REPORT_FILE, export_classifier, export_settings
from .graph import InferenceGraph, UnsupportedExportError, check_exportable, read_config
from .quantise import MIN_CALIBRATION_IMAGES, CalibrationError
from .runtime import InputShapeError, OnnxClassifier
from .verify import ExportMismatchError

__all__ = [
    "FORMATS",
    "INT8_FILE",
    "MIN_CALIBRATION_IMAGES",
    "REPORT_FILE",
    "CalibrationError",
    "ExportMismatchError",
    "InferenceGraph",
    "InputShapeError",
    "OnnxClassifier",
    "UnsupportedExportError",
    "check_exportable",
    "export_classifier",
    "export_settings",
    "read_config",
]
