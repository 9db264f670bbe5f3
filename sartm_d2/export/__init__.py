"""Deployment: ONNX export with a parity check, and onnxruntime inference, evaluation and timing.

``tools/export_model.py``, ``tools/eval_onnx.py`` and ``demo/demo.py --onnx`` are thin command lines
over this package. onnx and onnxruntime are optional (``pip install 'sartm-d2[deploy]'``): importing
this package needs neither; the functions that use them import them and name the install command.

Cameras that are not pixel-aligned: the graph's thermal input must already be in the RGB frame, warped
by the camera pair's rig with ``sartm_d2.data.warp_thermal`` (what ``io.read_rgbt`` does for a dataset
registered with the rig, and ``OnnxRGBTPredictor(..., rig=)`` for one pair), NaN where the thermal
camera does not see the RGB image: the graph treats those pixels as a missing camera, as the PyTorch
model does. The warp stays outside the graph: it is a per-rig lookup (``cv2.remap``) that a runtime
does once per frame on the CPU, and a graph with it inside would be tied to one camera pair.
"""

from .calibration import CALIBRATION_METHODS, CalibrationImage, load_calibration_images
from .evaluation import OnnxSemSegModel, evaluate_onnx
from .exporter import (
    EXPORT_DTYPES,
    OPSET,
    ExportResult,
    build_export_module,
    export_file_name,
    export_onnx,
    update_sidecar,
)
from .graph import ExportableSARTM, ExportGeometry, export_geometry
from .parity import (
    FP16_MIN_AGREEMENT,
    FP32_MIN_AGREEMENT,
    INT8_MAX_MIOU_DIFF,
    INT8_MIN_AGREEMENT,
    MAX_MIOU_DIFF,
    ParityReport,
    ParitySample,
    check_parity,
    load_parity_samples,
    max_miou_diff_for,
    min_agreement_for,
)
from .predictor import OnnxRGBTPredictor
from .quantize import QUANTIZATION_MODES, Int8Export, QuantizationSettings, export_int8
from .runtime import (
    DEPLOY_INSTALL_HINT,
    InputSizeError,
    OnnxSegmenter,
    create_session,
    read_sidecar,
    sidecar_path,
)

__all__ = [
    "CALIBRATION_METHODS",
    "DEPLOY_INSTALL_HINT",
    "EXPORT_DTYPES",
    "FP16_MIN_AGREEMENT",
    "FP32_MIN_AGREEMENT",
    "INT8_MAX_MIOU_DIFF",
    "INT8_MIN_AGREEMENT",
    "MAX_MIOU_DIFF",
    "OPSET",
    "QUANTIZATION_MODES",
    "CalibrationImage",
    "ExportGeometry",
    "ExportResult",
    "ExportableSARTM",
    "InputSizeError",
    "Int8Export",
    "OnnxRGBTPredictor",
    "OnnxSegmenter",
    "OnnxSemSegModel",
    "ParityReport",
    "ParitySample",
    "QuantizationSettings",
    "build_export_module",
    "check_parity",
    "create_session",
    "evaluate_onnx",
    "export_file_name",
    "export_geometry",
    "export_int8",
    "export_onnx",
    "load_calibration_images",
    "load_parity_samples",
    "max_miou_diff_for",
    "min_agreement_for",
    "read_sidecar",
    "sidecar_path",
    "update_sidecar",
]
