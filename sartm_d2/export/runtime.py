"""Running an exported model with onnxruntime: the one session factory, the sidecar, a predictor, timing.

The demo (``demo/demo.py --onnx``), ``tools/eval_onnx.py``, the parity check at export and the latency
measurement all create their sessions through :func:`create_session`, so they run the same settings.
onnxruntime is imported inside the functions: ``sartm_d2`` itself works without it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEPLOY_INSTALL_HINT",
    "InputSizeError",
    "OnnxSegmenter",
    "cpu_threads",
    "create_session",
    "read_sidecar",
    "require",
    "sidecar_path",
]

logger = logging.getLogger(__name__)

DEPLOY_INSTALL_HINT = "pip install 'sartm-d2[deploy]'"
SIDECAR_FORMAT = 1


class InputSizeError(ValueError):
    """An image whose size is not the one the graph was exported for (the graph has fixed sizes)."""


def require(module: str):
    """Import an optional deployment dependency, or fail with the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"ONNX export and inference need the package {module!r}, which is not installed: run "
            f"{DEPLOY_INSTALL_HINT} (or scripts/setup_env.sh, which installs it into .venv)."
        ) from e


def cpu_threads() -> int:
    """CPUs this process may run on (its affinity mask; not the host's count in a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def create_session(
    path: str, providers: Sequence[str] | None = None, threads: int | None = None, **options
):
    """An onnxruntime session with all graph optimisations, ``threads`` intra-op threads (default: all CPUs).

    ``providers`` default to the CPU; others must be in ``onnxruntime.get_available_providers()``.
    ``options`` set further ``SessionOptions`` attributes (e.g. ``enable_profiling=True``).
    """
    ort = require("onnxruntime")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX file not found: {path!r}. Export one with tools/export_model.py.")
    available = ort.get_available_providers()
    providers = list(providers or ["CPUExecutionProvider"])
    missing = [p for p in providers if p not in available]
    if missing:
        raise ValueError(
            f"onnxruntime execution provider(s) {missing} are not available here; available: {available} "
            "(the CUDA/TensorRT providers need the onnxruntime-gpu package)."
        )
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session_options.intra_op_num_threads = int(threads or cpu_threads())
    session_options.log_severity_level = 3  # errors only: constant-folding notes would bury the demo's log
    for key, value in options.items():
        setattr(session_options, key, value)
    return ort.InferenceSession(path, sess_options=session_options, providers=providers)


def sidecar_path(onnx_path: str) -> str:
    """``model.onnx`` -> ``model.json``: class names, colours, input size, provenance, parity."""
    return os.path.splitext(onnx_path)[0] + ".json"


def read_sidecar(onnx_path: str) -> dict:
    """The JSON sidecar of an exported file; errors name the file and how to get one."""
    if not os.path.isfile(onnx_path):
        raise FileNotFoundError(f"ONNX file not found: {onnx_path!r}. Export one with tools/export_model.py.")
    path = sidecar_path(onnx_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"The sidecar {path!r} of {onnx_path!r} is missing: it holds the class names, the input size and "
            "the thermal normalisation. tools/export_model.py writes it next to the .onnx file; copy both."
        )
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") != SIDECAR_FORMAT:
        raise ValueError(
            f"{path!r} has sidecar format {meta.get('format')!r}, this version reads {SIDECAR_FORMAT}: "
            "re-export the model with this version's tools/export_model.py."
        )
    return meta


class OnnxSegmenter:
    """An exported SARTM: raw R, G, B, T in 0..255 at the exported size -> logits and labels.

    Reads everything from the file and its sidecar; no model code and no config are involved.
    ``segmenter(rgb, thermal)`` gives the logits of one pair of the exported size; read images with
    ``sartm_d2.data.io.read_rgbt(record, segmenter.thermal_16bit_norm)`` as the loader does.
    ``sartm_d2.export.OnnxRGBTPredictor`` gives it ``RGBTPredictor``'s call (input settings through
    the test mapper, the same outputs).
    ``modality`` is "rgbt", or the camera of a one-camera graph ("rgb", "thermal"), which reads
    only that camera's channels.
    """

    def __init__(self, onnx_path: str, providers: Sequence[str] | None = None, threads: int | None = None):
        self.path = onnx_path
        self.meta = read_sidecar(onnx_path)
        self.session = create_session(onnx_path, providers, threads)
        self.height = int(self.meta["input"]["height"])
        self.width = int(self.meta["input"]["width"])
        self.class_names = list(self.meta["class_names"])
        self.colors = [tuple(int(v) for v in c) for c in self.meta["colors"]]
        self.thermal_16bit_norm = self.meta["thermal_16bit_norm"]
        # "rgbt", or the camera of a one-camera graph ("rgb": R, G, B in; "thermal": T in).
        self.modality = self.meta.get("modality", "rgbt")
        self.channels = len(self.meta["input"].get("channels", "RGBT"))
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        expected = [1, self.channels, self.height, self.width]
        if list(inputs) != ["image"] or list(inputs["image"]) != expected:
            raise ValueError(
                f"{onnx_path!r} has inputs {inputs}, but its sidecar says image {expected}: the two files do "
                "not belong together; re-export the model."
            )
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.has_trust = "trust" in self.output_names
        parity = self.meta.get("parity")
        if parity is not None and not parity.get("passed", False):
            logger.warning("%s failed its parity check at export: %s", onnx_path, parity.get("failures"))

    def check_size(self, height: int, width: int, source: str = "the image") -> None:
        if (height, width) != (self.height, self.width):
            raise InputSizeError(
                f"{source} is {height}x{width} (HxW), but {self.path!r} was exported for {self.height}x"
                f"{self.width}: the graph has fixed sizes. Re-export with tools/export_model.py --height "
                f"{height} --width {width} (or feed images of the exported size)."
            )

    def outputs(self, image: np.ndarray, source: str = "the image") -> dict[str, np.ndarray]:
        """(4, H, W) float 0..255 -> every output of the graph without its batch axis: "logits"
        (K, H, W) float32, "labels" (H, W) int64 and, when the model estimates it, "trust" (2,).

        A one-camera graph takes the (4, H, W) image too (it reads its camera's channels: what the
        loader gives for every graph), or that camera's channels alone ((3, H, W) or (1, H, W)).
        """
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 3 and image.shape[0] == 4 and self.channels != 4:
            image = image[:3] if self.modality == "rgb" else image[3:]
        if image.ndim != 3 or image.shape[0] != self.channels:
            want = "R, G, B, T" if self.channels == 4 else f"R, G, B, T or {self.modality}"
            raise ValueError(f"{source}: expected a ({self.channels}, H, W) image ({want} for "
                             f"{self.path!r}), got shape {image.shape}.")
        self.check_size(image.shape[1], image.shape[2], source)
        values = self.session.run(self.output_names, {"image": image[None]})
        return {name: value[0] for name, value in zip(self.output_names, values)}

    def predict(self, image: np.ndarray, source: str = "the image") -> tuple[np.ndarray, np.ndarray]:
        """(4, H, W) float 0..255 -> (logits (K, H, W) float32, labels (H, W) int64)."""
        out = self.outputs(image, source)
        return out["logits"], out["labels"]

    def __call__(self, rgb: np.ndarray | None, thermal: np.ndarray | None) -> np.ndarray:
        """rgb uint8 H x W x 3 (RGB order), thermal H x W in 0..255 -> (K, H, W) float32 logits.

        A one-camera graph reads only its camera; the other may be None (or is ignored).
        """
        return self.run(rgb, thermal)[0]

    def run(self, rgb: np.ndarray | None, thermal: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """As ``__call__``, plus the (2,) float32 trust in RGB and thermal (None: the model has none)."""
        if self.modality != "rgbt":
            image = rgb if self.modality == "rgb" else thermal
            if image is None:
                raise ValueError(
                    f"{self.path!r} is a one-camera graph for {self.modality} images, but no {self.modality} "
                    "image was given; export a graph for the camera you have (export_model.py --modality)."
                )
            if self.modality == "rgb" and (image.ndim != 3 or image.shape[2] != 3):
                raise ValueError(f"rgb must be H x W x 3, got shape {image.shape}.")
            if self.modality == "thermal" and image.ndim != 2:
                raise ValueError(f"thermal must be H x W, got shape {image.shape}.")
            self.check_size(*image.shape[:2])
            chw = image.astype(np.float32).transpose(2, 0, 1) if image.ndim == 3 else image[None]
            out = self.outputs(np.ascontiguousarray(chw, dtype=np.float32))
            return out["logits"], out.get("trust")
        if rgb is None or thermal is None:
            raise ValueError(
                f"{self.path!r} takes both cameras (1, 4, H, W); for one camera export a one-camera graph "
                "(tools/export_model.py --modality rgb|thermal) or run the PyTorch model."
            )
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"rgb must be H x W x 3, got shape {rgb.shape}.")
        if thermal.shape != rgb.shape[:2]:
            raise ValueError(
                f"thermal must be H x W of the RGB image's size {rgb.shape[:2]}, got shape {thermal.shape}."
            )
        self.check_size(*rgb.shape[:2])
        image = np.concatenate([rgb.astype(np.float32), thermal.astype(np.float32)[:, :, None]], axis=2)
        out = self.outputs(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return out["logits"], out.get("trust")
