"""Inference and drawing for the RGB-T demo: input discovery, a predictor, and a 3-panel figure.

Everything here is importable (``demo/demo.py`` and the tests reuse it):

* :func:`find_inputs` turns command-line paths into RGB/thermal pairs. Accepted inputs:

  - an RGB image plus its thermal image (``--input rgb.png --thermal t.png``, several in order);
  - a 4-channel R,G,B,T PNG (MFNet ``images/<name>.png``), thermal = channel 4;
  - a folder with paired subfolders matched by file stem: ``rgb/`` + ``thermal/`` (PST900, also
    ``RGB/`` + ``Thermal/``) or ``Visible/`` + ``Infrared/`` (FMB); subfolder names are matched
    case-insensitively, other subfolders (``labels/``, ``Label/``, ``depth/``) are ignored;
  - a folder of 4-channel RGBT PNGs (MFNet ``images/``);
  - a glob pattern (quoted) of 4-channel RGBT PNGs;
  - with ``modality="rgb"`` or ``"thermal"`` (one camera: failed, blinded or absent), images of that
    camera alone, as files, folders or glob patterns; the other stream is not computed.

* :class:`RGBTPredictor` builds the model from a config and its ``MODEL.WEIGHTS`` alone
  (``sartm_d2.engine.build_inference_model``: strict load, LoRA merged, no SAM2 or text-teacher
  file read) and runs one pair the way the test loader would (same reading and thermal
  normalisation, same resize).
* :class:`OnnxRGBTPredictor` is the same predictor for a file exported by ``tools/export_model.py``:
  onnxruntime runs it; class names, colours, the input size and the thermal normalisation come
  from its sidecar (``<file>.json``); no model is built and no config is read.
* :func:`draw_panel` draws RGB | thermal (INFERNO colour map) | prediction overlay side by side; a
  missing camera's panel is grey and says so.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

import sartm_d2  # noqa: F401  (compat patches + dataset/model registration before detectron2)

# isort: split

from detectron2.data import transforms as T
from detectron2.data.catalog import Metadata
from detectron2.utils.visualizer import Visualizer

from sartm_d2.data import get_classes
from sartm_d2.data.degradations import MODALITIES
from sartm_d2.data.io import read_rgb, read_rgbt, read_thermal
from sartm_d2.engine import build_inference_model
from sartm_d2.export import OnnxSegmenter

__all__ = [
    "IMAGE_EXTENSIONS",
    "PAIR_FOLDER_LAYOUTS",
    "OnnxRGBTPredictor",
    "RGBTInput",
    "RGBTPredictor",
    "demo_metadata",
    "draw_panel",
    "find_inputs",
    "find_pairs_in_folder",
    "load_pair",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# (RGB subfolder, thermal subfolder) of a folder of pairs, compared case-insensitively.
PAIR_FOLDER_LAYOUTS = (("rgb", "thermal"), ("visible", "infrared"))


@dataclass(frozen=True)
class RGBTInput:
    """One demo input: ``thermal_path == rgb_path`` means a 4-channel RGBT PNG (thermal = channel 4);
    a path of None means that camera is missing (single-modality input)."""

    name: str
    rgb_path: str | None
    thermal_path: str | None

    def record(self) -> dict:
        """The dataset-record fields that ``sartm_d2.data.io.read_rgbt`` reads."""
        return {"file_name": self.rgb_path, "thermal_file_name": self.thermal_path, "image_id": self.name}


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _images_by_stem(folder: str) -> dict[str, str]:
    """Image files of ``folder`` keyed by stem; two files with one stem are an error (ambiguous pair)."""
    found: dict[str, str] = {}
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if not (os.path.isfile(path) and entry.lower().endswith(IMAGE_EXTENSIONS)):
            continue
        stem = _stem(entry)
        if stem in found:
            raise ValueError(
                f"Folder {folder!r} holds two images named {stem!r} ({os.path.basename(found[stem])!r} and "
                f"{entry!r}); keep one so that the pair is unambiguous."
            )
        found[stem] = path
    return found


def find_pairs_in_folder(folder: str) -> list[RGBTInput]:
    """Pairs of a folder: paired subfolders (see the module docstring) or 4-channel RGBT images.

    Every RGB image must have a thermal image of the same stem and vice versa; unmatched names are
    listed in the error rather than skipped, so a half-copied folder cannot pass unnoticed.
    """
    subdirs = {e.lower(): e for e in os.listdir(folder) if os.path.isdir(os.path.join(folder, e))}
    for rgb_dir, thermal_dir in PAIR_FOLDER_LAYOUTS:
        if rgb_dir in subdirs and thermal_dir in subdirs:
            rgb_folder = os.path.join(folder, subdirs[rgb_dir])
            thermal_folder = os.path.join(folder, subdirs[thermal_dir])
            rgb = _images_by_stem(rgb_folder)
            thermal = _images_by_stem(thermal_folder)
            only_rgb = sorted(set(rgb) - set(thermal))
            only_thermal = sorted(set(thermal) - set(rgb))
            if only_rgb or only_thermal:
                raise ValueError(
                    f"Unmatched names in {folder!r}: without a thermal image in {thermal_folder!r}: "
                    f"{only_rgb}; without an RGB image in {rgb_folder!r}: {only_thermal}. Every image needs "
                    "a partner with the same name (extension may differ)."
                )
            if not rgb:
                raise ValueError(f"No images in {rgb_folder!r} and {thermal_folder!r} ({IMAGE_EXTENSIONS}).")
            return [RGBTInput(s, rgb[s], thermal[s]) for s in sorted(rgb)]
    images = _images_by_stem(folder)
    if not images:
        layouts = " or ".join(f"{a}/ + {b}/" for a, b in PAIR_FOLDER_LAYOUTS)
        raise ValueError(
            f"Folder {folder!r} has neither paired subfolders ({layouts}) nor images: expected a folder "
            "of pairs or of 4-channel RGBT PNGs (MFNet images/)."
        )
    return [RGBTInput(s, p, p) for s, p in sorted(images.items())]


def _expand(path: str) -> list[str]:
    """A path as given, or the sorted matches of a glob pattern; a path that is neither is an error."""
    if os.path.exists(path):
        return [path]
    if glob.has_magic(path):
        matches = sorted(glob.glob(os.path.expanduser(path)))
        if not matches:
            raise FileNotFoundError(f"No file matches the pattern {path!r}.")
        return matches
    raise FileNotFoundError(f"Input not found: {path!r}.")


def find_inputs(
    inputs: Sequence[str], thermal: Sequence[str] | None = None, modality: str = "rgbt"
) -> list[RGBTInput]:
    """Resolve ``--input`` (and ``--thermal``) paths into RGB-T pairs, in order.

    With ``thermal``, ``inputs[i]`` and ``thermal[i]`` are the i-th pair (files only). Without it,
    each input is a 4-channel RGBT image, a folder (:func:`find_pairs_in_folder`) or a glob pattern.
    With ``modality`` "rgb" or "thermal", each input (file, folder or pattern) is an image of that
    camera alone. Output names are the stems; two inputs with one name would overwrite each other.
    """
    if not inputs:
        raise ValueError("No input given: pass --input with image files or folders.")
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}.")
    items: list[RGBTInput] = []
    if modality != "rgbt":
        if thermal:
            raise ValueError(f"--modality {modality} takes the images of one camera: drop --thermal.")
        for given in inputs:
            for path in _expand(given):
                found = _images_by_stem(path) if os.path.isdir(path) else {_stem(path): path}
                if not found:
                    raise ValueError(f"No images in {path!r} ({IMAGE_EXTENSIONS}).")
                for name, p in sorted(found.items()):
                    items.append(RGBTInput(name, p, None) if modality == "rgb" else RGBTInput(name, None, p))
    elif thermal:
        if len(thermal) != len(inputs):
            raise ValueError(
                f"--input has {len(inputs)} path(s) but --thermal has {len(thermal)}; give one thermal "
                "image per RGB image, in the same order (or no --thermal for folders and RGBT PNGs)."
            )
        for rgb_path, thermal_path in zip(inputs, thermal):
            for path in (rgb_path, thermal_path):
                if not os.path.isfile(path):
                    kind = "a folder" if os.path.isdir(path) else "not found"
                    raise FileNotFoundError(
                        f"With --thermal, every input must be an image file; {path!r} is {kind}."
                    )
            items.append(RGBTInput(_stem(rgb_path), rgb_path, thermal_path))
    else:
        for given in inputs:
            for path in _expand(given):
                if os.path.isdir(path):
                    items.extend(find_pairs_in_folder(path))
                else:
                    items.append(RGBTInput(_stem(path), path, path))
    names: dict[str, list[str]] = {}
    for item in items:
        names.setdefault(item.name, []).append(item.rgb_path)
    clashes = {n: p for n, p in names.items() if len(p) > 1}
    if clashes:
        raise ValueError(f"Several inputs share an output name (their file stem): {clashes}. Rename them.")
    return items


def load_pair(item: RGBTInput, thermal_16bit_norm: str = "percentile"):
    """Read a pair exactly like the data loader: (rgb uint8 HxWx3, thermal float32 HxW in 0..255);
    the missing image of a single-modality input is None."""
    if item.rgb_path is None or item.thermal_path is None:
        path = item.thermal_path if item.rgb_path is None else item.rgb_path
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is not None and img.ndim == 3 and img.shape[2] == 4:  # an RGBT image: keep one stream
            rgb, thermal = read_rgbt({"file_name": path, "thermal_file_name": path}, thermal_16bit_norm)
            return (None, thermal) if item.rgb_path is None else (rgb, None)
        if item.rgb_path is None:
            return None, read_thermal(path, thermal_16bit_norm)
        return read_rgb(path), None
    if item.thermal_path == item.rgb_path:
        img = cv2.imread(item.rgb_path, cv2.IMREAD_UNCHANGED)
        if img is not None and (img.ndim != 3 or img.shape[2] != 4):
            channels = 1 if img.ndim == 2 else img.shape[2]
            raise ValueError(
                f"{item.rgb_path!r} has {channels} channel(s), so it is not a 4-channel RGBT PNG: pass its "
                "thermal image with --thermal, or a folder with rgb/ + thermal/ (or Visible/ + Infrared/), "
                "or run with one camera (--modality rgb or thermal)."
            )
    return read_rgbt(item.record(), thermal_16bit_norm)


def demo_metadata(cfg) -> Metadata:
    """Class names and colours of ``cfg.DATASETS.TEST[0]`` under the config's background protocol.

    A fresh ``Metadata`` (not the catalog's entry): with BACKGROUND_AS_IGNORE the classes differ
    from the registered ones and the catalog must not be mutated.
    """
    if not cfg.DATASETS.TEST:
        raise ValueError(
            "DATASETS.TEST is empty: the demo takes its class names and colours from its first entry."
        )
    name = cfg.DATASETS.TEST[0]
    classes, colors = get_classes(name, cfg.DATASETS.BACKGROUND_AS_IGNORE)
    return Metadata(name=f"{name}_demo", stuff_classes=list(classes), stuff_colors=[tuple(c) for c in colors])


class RGBTPredictor:
    """Builds the model of a config, loads ``MODEL.WEIGHTS`` and predicts one RGB-T pair.

    The input is prepared like the test mapper: ResizeShortestEdge(INPUT.MIN_SIZE_TEST,
    INPUT.MAX_SIZE_TEST) unless MIN_SIZE_TEST is 0, a float32 (4, H, W) R, G, B, T image, and the
    original "height"/"width" so that the model returns logits at the input's size.
    """

    def __init__(self, cfg):
        weights = cfg.MODEL.WEIGHTS
        if not weights:
            raise ValueError(
                "MODEL.WEIGHTS is empty: the demo needs trained weights, e.g. "
                "--opts MODEL.WEIGHTS output/model_final.pth"
            )
        if "://" not in weights and not os.path.isfile(weights):
            raise FileNotFoundError(
                f"MODEL.WEIGHTS file not found: {weights!r}. Train first (train_net.py) or point "
                "MODEL.WEIGHTS at a checkpoint (--opts MODEL.WEIGHTS path/to/model_final.pth)."
            )
        self.cfg = cfg.clone()
        # Strict load; LoRA merged (and, with INFERENCE_DTYPE bfloat16, weights stored in bf16).
        self.model = build_inference_model(self.cfg)
        self.metadata = demo_metadata(self.cfg)
        self.thermal_16bit_norm = self.cfg.INPUT.THERMAL_16BIT_NORM
        # Trained with modality dropout (any-modality SARTM)? Without it one camera alone fails badly.
        self.trained_for_one_camera = self.cfg.INPUT.MODALITY_DROPOUT.BOTH < 1.0
        self._warned = False
        min_size, max_size = self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MAX_SIZE_TEST
        self.resize = T.ResizeShortestEdge([min_size, min_size], max_size, "choice") if min_size > 0 else None

    def __call__(self, rgb: np.ndarray | None, thermal: np.ndarray | None) -> torch.Tensor:
        """
        Args:
            rgb: uint8 H x W x 3 in RGB order, or None (no RGB camera).
            thermal: H x W in the 0..255 range (as ``load_pair`` returns it), or None (no thermal).

        Returns:
            Tensor (K, H, W) of float32 logits on the CPU, at the input's size.
        """
        if rgb is None and thermal is None:
            raise ValueError("Give an RGB image, a thermal image or both.")
        modalities = "thermal" if rgb is None else "rgb" if thermal is None else "rgbt"
        if modalities != "rgbt":
            if not self.trained_for_one_camera and not self._warned:
                logger.warning(
                    "Predicting from %s alone with a model trained without modality dropout "
                    "(INPUT.MODALITY_DROPOUT.BOTH = 1): expect a collapse; train with "
                    "configs/*-anymodal.yaml for one camera.", modalities
                )
                self._warned = True
            # The model does not compute the missing stream: zeros only fill the image tensor.
            shape = thermal.shape if rgb is None else rgb.shape[:2]
            rgb = np.zeros((*shape, 3), np.uint8) if rgb is None else rgb
            thermal = np.zeros(shape, np.float32) if thermal is None else thermal
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8 H x W x 3, got {rgb.dtype} of shape {rgb.shape}.")
        if thermal.ndim != 2 or thermal.shape != rgb.shape[:2]:
            raise ValueError(
                f"thermal must be H x W of the RGB image's size {rgb.shape[:2]}, got shape {thermal.shape}."
            )
        height, width = rgb.shape[:2]
        thermal = thermal.astype(np.float32)
        rgb = rgb.astype(np.float32)
        if self.resize is not None:
            # Float RGB, as RGBTDatasetMapper resizes it: detectron2 resizes uint8 with PIL but float
            # with torch's bilinear, so a uint8 RGB image would be filtered unlike the test loader's.
            tfm = self.resize.get_transform(rgb)
            rgb, thermal = tfm.apply_image(rgb), tfm.apply_image(thermal)
        image = np.concatenate([rgb, thermal[:, :, None]], axis=2)
        inputs = {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), "height": height,
                  "width": width, "modalities": modalities}
        with torch.no_grad():
            logits = self.model([inputs])[0]["sem_seg"]
        return logits.float().cpu()


class OnnxRGBTPredictor:
    """``RGBTPredictor``'s contract for an exported model (``tools/export_model.py``), run by onnxruntime.

    Everything comes from the .onnx file and its sidecar: classes and colours (``metadata``), the
    input size, and ``thermal_16bit_norm`` (read images with ``load_pair(item, that)``, as the torch
    path reads them with the config's). The graph has one input size: another size raises
    ``sartm_d2.export.InputSizeError`` naming both sizes (re-export at the camera's size instead of
    resizing here, which would change the result against the PyTorch path).
    """

    def __init__(self, onnx_path: str, providers: Sequence[str] | None = None):
        self.segmenter = OnnxSegmenter(onnx_path, providers)
        self.thermal_16bit_norm = self.segmenter.thermal_16bit_norm
        self.metadata = Metadata(
            name=f"{os.path.basename(onnx_path)}_demo",
            stuff_classes=self.segmenter.class_names,
            stuff_colors=self.segmenter.colors,
        )

    def __call__(self, rgb: np.ndarray, thermal: np.ndarray) -> np.ndarray:
        """rgb uint8 H x W x 3 (RGB order), thermal H x W in 0..255 -> (K, H, W) float32 logits."""
        if rgb is None or thermal is None:
            raise ValueError(
                "The exported graph takes both streams (1, 4, H, W); run one camera with the PyTorch model "
                "(demo.py --config-file ... --modality rgb|thermal)."
            )
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8 H x W x 3, got {rgb.dtype} of shape {rgb.shape}.")
        return self.segmenter(rgb, thermal)


def _missing_panel(height: int, width: int, text: str) -> np.ndarray:
    panel = np.full((height, width, 3), 96, np.uint8)
    scale = max(0.3, min(height, width) / 320)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    org = (max(0, (width - tw) // 2), (height + th) // 2)
    cv2.putText(panel, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (230, 230, 230), 1, cv2.LINE_AA)
    return panel


def draw_panel(rgb: np.ndarray | None, thermal: np.ndarray | None, pred, metadata: Metadata) -> np.ndarray:
    """RGB | thermal (INFERNO colour map) | prediction drawn by Detectron2's ``draw_sem_seg``.

    Args:
        rgb: uint8 H x W x 3 in RGB order; thermal: H x W in 0..255; either may be None (that
        camera's panel is grey and says "no RGB" / "no thermal"; the overlay then uses the other
        image); pred: H x W class ids (Tensor or array); metadata: ``stuff_classes``/``stuff_colors``.

    Returns:
        uint8 H x 3W x 3 in RGB order.
    """
    pred = pred.cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    height, width = pred.shape[:2]
    shapes = [x.shape[:2] for x in (rgb, thermal) if x is not None]
    if not shapes or any(shape != (height, width) for shape in shapes):
        raise ValueError(
            f"draw_panel needs rgb, thermal and pred of one size; got {shapes} and {pred.shape}."
        )
    if thermal is None:
        thermal_rgb = _missing_panel(height, width, "no thermal")
    else:
        thermal_u8 = np.clip(np.rint(thermal), 0, 255).astype(np.uint8)
        thermal_rgb = cv2.applyColorMap(thermal_u8, cv2.COLORMAP_INFERNO)[:, :, ::-1]
    base = rgb if rgb is not None else thermal_rgb
    overlay = Visualizer(base, metadata, scale=1.0).draw_sem_seg(pred).get_image()
    if overlay.shape[:2] != (height, width):  # matplotlib rounding guard; normally exact
        overlay = cv2.resize(overlay, (width, height), interpolation=cv2.INTER_LINEAR)
    first = rgb if rgb is not None else _missing_panel(height, width, "no RGB")
    return np.ascontiguousarray(np.concatenate([first, thermal_rgb, overlay], axis=1))
