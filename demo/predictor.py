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
  normalisation, same resize). ``predictor(rgb, thermal)`` gives the logits; ``predict`` also the
  model's per-camera trust, when its fusion estimates one.
* :class:`OnnxRGBTPredictor` is the same predictor for a file exported by ``tools/export_model.py``:
  onnxruntime runs it; class names, colours, the input size and the thermal normalisation come
  from its sidecar (``<file>.json``); no model is built and no config is read.
* :func:`draw_panel` draws RGB | thermal (INFERNO colour map) | prediction overlay side by side,
  captioned, above one strip with the legend of the classes present and the per-camera trust bar.
  Inputs under 480 px on the short side are drawn upscaled; a dark RGB image is brightened under
  the masks (or the masks go over the thermal image); a missing camera's panel is grey and says so.
  Class names are only in the legend: the in-place labels of Detectron2's ``draw_sem_seg``, sized
  for COCO photographs, run into each other on small images.
"""

from __future__ import annotations

import functools
import glob
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from matplotlib import font_manager
from PIL import Image, ImageDraw, ImageFont

import sartm_d2  # noqa: F401  (compat patches + dataset/model registration before detectron2)

# isort: split

from detectron2.data import transforms as T
from detectron2.data.catalog import Metadata

from sartm_d2.data import get_classes
from sartm_d2.data.io import read_rgb, read_rgbt, read_thermal
from sartm_d2.engine import build_inference_model
from sartm_d2.export import OnnxSegmenter
from sartm_d2.modalities import MODALITIES

__all__ = [
    "DRAW_SHORT_SIDE",
    "IMAGE_EXTENSIONS",
    "OVERLAY_BASES",
    "PAIR_FOLDER_LAYOUTS",
    "LegendEntry",
    "OnnxRGBTPredictor",
    "Panel",
    "RGBTInput",
    "RGBTPredictor",
    "TrustBar",
    "brighten",
    "demo_metadata",
    "draw_panel",
    "drawing_size",
    "find_inputs",
    "find_pairs_in_folder",
    "load_pair",
    "read_rgbt_image",
    "render_panel",
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


def read_rgbt_image(path: str, fix: str, where: str = ""):
    """The decoded image of a file that must be a 4-channel R,G,B,T image (MFNet layout).

    The one check of the demo's image and stream inputs: an image with another channel count is
    an error naming the file (``where`` adds context, e.g. which folder) and ``fix``, the remedy in
    the caller's options. None when OpenCV cannot decode the file: the reader then says why.
    """
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is not None and (img.ndim != 3 or img.shape[2] != 4):
        channels = 1 if img.ndim == 2 else img.shape[2]
        raise ValueError(
            f"{path!r}{where} has {channels} channel(s), so it is not a 4-channel R,G,B,T image (MFNet "
            f"layout): {fix}."
        )
    return img


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
        read_rgbt_image(
            item.rgb_path,
            "pass its thermal image with --thermal, or a folder with rgb/ + thermal/ (or Visible/ + "
            "Infrared/), or run with one camera (--modality rgb or thermal)",
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
        self.cfg = cfg.clone()
        # MODEL.WEIGHTS checked first (empty, or no such file); strict load; LoRA merged (and, with
        # INFERENCE_DTYPE bfloat16, weights stored in bf16).
        self.model = build_inference_model(self.cfg)
        self.metadata = demo_metadata(self.cfg)
        self.thermal_16bit_norm = self.cfg.INPUT.THERMAL_16BIT_NORM
        # Trained with modality dropout (any-modality SARTM)? Without it one camera alone fails badly.
        self.trained_for_one_camera = self.cfg.INPUT.MODALITY_DROPOUT.BOTH < 1.0
        self._warned = False
        min_size, max_size = self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MAX_SIZE_TEST
        self.resize = T.ResizeShortestEdge([min_size, min_size], max_size, "choice") if min_size > 0 else None

    def __call__(self, rgb: np.ndarray | None, thermal: np.ndarray | None) -> torch.Tensor:
        """The logits of :meth:`predict`, without the trust."""
        return self.predict(rgb, thermal)[0]

    def predict(
        self, rgb: np.ndarray | None, thermal: np.ndarray | None
    ) -> tuple[torch.Tensor, np.ndarray | None]:
        """
        Args:
            rgb: uint8 H x W x 3 in RGB order, or None (no RGB camera).
            thermal: H x W in the 0..255 range (as ``load_pair`` returns it), or None (no thermal).

        Returns:
            (logits, trust): Tensor (K, H, W) of float32 logits on the CPU, at the input's size, and
            the model's (2,) float32 trust in [RGB, thermal] (0..1) when its fusion estimates one
            (MODEL.SARTM.FUSION "reliability"), else None.
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
            output = self.model([inputs])[0]
        trust = output.get("trust")
        return output["sem_seg"].float().cpu(), None if trust is None else trust.float().cpu().numpy()


class OnnxRGBTPredictor:
    """``RGBTPredictor``'s contract for an exported model (``tools/export_model.py``), run by onnxruntime.

    Everything comes from the .onnx file and its sidecar: classes and colours (``metadata``), the
    input size, and ``thermal_16bit_norm`` (read images with ``load_pair(item, that)``, as the torch
    path reads them with the config's). The graph has one input size: another size raises
    ``sartm_d2.export.InputSizeError`` naming both sizes (re-export at the camera's size instead of
    resizing here, which would change the result against the PyTorch path). A one-camera graph
    (``export_model.py --modality``, ``modality`` "rgb" or "thermal") reads that camera alone: the other
    image may be None, and is ignored when given. ``threads``: onnxruntime's intra-op threads.
    """

    def __init__(self, onnx_path: str, providers: Sequence[str] | None = None, threads: int | None = None):
        self.segmenter = OnnxSegmenter(onnx_path, providers, threads)
        self.modality = self.segmenter.modality
        self.thermal_16bit_norm = self.segmenter.thermal_16bit_norm
        self.metadata = Metadata(
            name=f"{os.path.basename(onnx_path)}_demo",
            stuff_classes=self.segmenter.class_names,
            stuff_colors=self.segmenter.colors,
        )

    def __call__(self, rgb: np.ndarray, thermal: np.ndarray) -> np.ndarray:
        """rgb uint8 H x W x 3 (RGB order), thermal H x W in 0..255 -> (K, H, W) float32 logits."""
        return self.predict(rgb, thermal)[0]

    def predict(self, rgb: np.ndarray, thermal: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """As ``__call__``, plus the exported model's (2,) [RGB, thermal] trust (None: it has none)."""
        if self.modality == "thermal":
            return self.segmenter.run(None, thermal)
        if self.modality == "rgbt" and (rgb is None or thermal is None):
            raise ValueError(
                "The exported graph takes both streams (1, 4, H, W); for one camera export a one-camera "
                "graph (tools/export_model.py --modality rgb|thermal) or run the PyTorch model (demo.py "
                "--config-file ... --modality rgb|thermal)."
            )
        if rgb is not None and (rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8):
            raise ValueError(f"rgb must be uint8 H x W x 3, got {rgb.dtype} of shape {rgb.shape}.")
        return self.segmenter.run(rgb, thermal)


# ---------------------------------------------------------------- drawing
DRAW_SHORT_SIDE = 480  # smaller inputs are drawn upscaled to this short side (masks nearest-neighbour)
OVERLAY_BASES = ("auto", "rgb", "rgb-bright", "thermal")
DARK_RGB_MEDIAN = 0.2  # "auto" brightens an RGB image whose median luminance (0..1) is below this
_BRIGHT_TARGET = 0.4  # median luminance after brightening
_MASK_ALPHA = 0.65
_BLACK_ALPHA = 0.3  # a black class (background, unlabelled) only dims the image: black paint hides it
_EDGE = (255, 255, 240)  # Detectron2's off-white mask outline
_BAR_BACKGROUND = (24, 24, 24)
_TEXT = (235, 235, 235)
_MISSING_GREY = 96


@dataclass(frozen=True)
class LegendEntry:
    """One class of the legend strip: its id, name, colour, where its swatch is drawn (``box`` = x0,
    y0, x1, y1 in the panel image, end exclusive) and where its name is (``label_box``, the same)."""

    class_id: int
    name: str
    color: tuple[int, int, int]
    box: tuple[int, int, int, int]
    label_box: tuple[int, int, int, int]


@dataclass(frozen=True)
class TrustBar:
    """One camera's trust in the strip: ``value`` (None: the camera is missing), the bar's outline
    ``box`` and its filled part ``fill`` (x0, y0, x1, y1, end exclusive; empty for 0 or missing)."""

    name: str
    value: float | None
    box: tuple[int, int, int, int]
    fill: tuple[int, int, int, int]


@dataclass(frozen=True)
class Panel:
    """What :func:`render_panel` drew: the image and where each part of it is."""

    image: np.ndarray  # uint8 (header + h + strip) x 3w x 3, RGB order
    scale: float  # drawing size / input size
    overlay_on: str  # the base actually used: "rgb", "rgb-bright" or "thermal"
    legend: list[LegendEntry]  # the classes present in the prediction, by class id
    trust: list[TrustBar]  # [RGB, thermal] when a trust was given, else empty
    strip: tuple[int, int, int, int]  # the legend + trust strip under the panels


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans (shipped with matplotlib, a dependency of Detectron2) at ``size`` px."""
    try:
        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except OSError:  # no such file: Pillow's own scalable font
        return ImageFont.load_default(size)


def _fit(text: str, font, width: float) -> str:
    """``text``, cut with an ellipsis to fit ``width`` pixels: long names never run into others."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…" if text else ""


def drawing_size(height: int, width: int, short_side: int = DRAW_SHORT_SIDE) -> tuple[int, int]:
    """The size each image is drawn at: the input's, or upscaled to ``short_side`` when smaller."""
    scale = max(1.0, short_side / min(height, width))
    return round(height * scale), round(width * scale)


def brighten(rgb: np.ndarray) -> np.ndarray:
    """A dark RGB image lifted by a gamma on its luminance (hues kept): median luminance -> 0.4."""
    x = rgb.astype(np.float32) / 255.0
    luma = x @ np.array([0.299, 0.587, 0.114], np.float32)
    median = float(np.median(luma))
    if median >= _BRIGHT_TARGET:
        return rgb
    gamma = float(np.clip(np.log(_BRIGHT_TARGET) / np.log(max(median, 1e-3)), 0.3, 1.0))
    gain = np.power(np.maximum(luma, 1e-4), gamma) / np.maximum(luma, 1e-4)
    return np.clip(np.rint(x * gain[:, :, None] * 255.0), 0, 255).astype(np.uint8)


def _is_dark(rgb: np.ndarray) -> bool:
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return float(np.median(luma)) < DARK_RGB_MEDIAN * 255.0


def _missing_panel(height: int, width: int, text: str) -> np.ndarray:
    img = Image.new("RGB", (width, height), (_MISSING_GREY,) * 3)
    font = _font(max(12, min(height, width) // 12))
    draw = ImageDraw.Draw(img)
    draw.text((width / 2, height / 2), text, fill=(230, 230, 230), font=font, anchor="mm")
    return np.asarray(img)


def _class_name_and_color(metadata: Metadata, class_id: int) -> tuple[str, tuple[int, int, int]]:
    classes, colors = metadata.stuff_classes, getattr(metadata, "stuff_colors", None) or []
    name = classes[class_id] if class_id < len(classes) else f"class {class_id}"
    color = tuple(int(v) for v in colors[class_id]) if class_id < len(colors) else (128, 128, 128)
    return name, color


def _overlay(base: np.ndarray, pred: np.ndarray, class_ids, metadata: Metadata) -> np.ndarray:
    """Each class's mask blended over ``base`` in its colour, outlined in off-white like Detectron2's
    ``Visualizer.draw_sem_seg``, but without its in-place names (they collide on small images: the
    legend names the classes) and without its matplotlib polygons: on a 480x600 (upscaled) scene they
    took 8 to 25 times as long as this blend (2.6-3.3 s against 0.1-0.4 s on 2 busy CPU cores), too
    slow for video frames."""
    colors = np.zeros((max(class_ids) + 1, 3), np.float32)
    alphas = np.zeros(len(colors), np.float32)
    for class_id in class_ids:
        _, color = _class_name_and_color(metadata, class_id)
        colors[class_id] = color
        alphas[class_id] = _BLACK_ALPHA if color == (0, 0, 0) else _MASK_ALPHA
    alpha = alphas[pred][:, :, None]
    out = base * (1.0 - alpha) + colors[pred] * alpha
    edge = np.zeros(pred.shape, bool)
    edge[:, 1:] |= pred[:, 1:] != pred[:, :-1]
    edge[1:, :] |= pred[1:, :] != pred[:-1, :]
    width = max(1, round(min(pred.shape) / 400))
    if width > 1:
        edge = cv2.dilate(edge.astype(np.uint8), np.ones((width, width), np.uint8)) > 0
    out[edge] = _EDGE
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _resolve_overlay_on(overlay_on: str, rgb, thermal) -> str:
    if overlay_on not in OVERLAY_BASES:
        raise ValueError(f"overlay_on must be one of {OVERLAY_BASES}, got {overlay_on!r}.")
    if overlay_on == "auto":
        if rgb is None:
            return "thermal"
        return "rgb-bright" if _is_dark(rgb) else "rgb"
    if (overlay_on == "thermal" and thermal is None) or (overlay_on != "thermal" and rgb is None):
        return "rgb" if thermal is None else "thermal"  # the camera that is there
    return overlay_on


_CAPTIONS = {"rgb": "prediction on RGB", "rgb-bright": "prediction on RGB, brightened",
             "thermal": "prediction on thermal"}


def render_panel(
    rgb: np.ndarray | None,
    thermal: np.ndarray | None,
    pred,
    metadata: Metadata,
    *,
    trust=None,
    overlay_on: str = "auto",
    short_side: int = DRAW_SHORT_SIDE,
) -> Panel:
    """RGB | thermal (INFERNO) | prediction, captioned, over one strip: the legend and the trust bar.

    Args:
        rgb: uint8 H x W x 3 in RGB order; thermal: H x W in 0..255; either may be None (that
            camera's panel is grey and says "no RGB" / "no thermal").
        pred: H x W class ids (Tensor or array); metadata: ``stuff_classes`` / ``stuff_colors``.
        trust: None, or the model's [RGB, thermal] trust in 0..1 (``RGBTPredictor.predict``); a
            missing camera is shown as "missing" whatever its value.
        overlay_on: the image under the masks: "rgb", "rgb-bright" (see :func:`brighten`),
            "thermal" (grey), or "auto" (RGB, brightened when dark; thermal without RGB). A base
            whose camera is missing falls back to the other camera.
        short_side: smaller inputs are drawn upscaled to this short side (images bilinear, masks
            nearest-neighbour); 0 draws at the input's size.

    The size depends only on the input's size and ``metadata``, never on the content: the strip
    keeps room for every class and for the trust bar, so every frame of a video has one size.
    """
    pred = pred.cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    height, width = pred.shape[:2]
    shapes = [x.shape[:2] for x in (rgb, thermal) if x is not None]
    if not shapes or any(shape != (height, width) for shape in shapes):
        raise ValueError(
            f"draw_panel needs rgb, thermal and pred of one size; got {shapes} and {pred.shape}."
        )
    base_name = _resolve_overlay_on(overlay_on, rgb, thermal)
    h, w = drawing_size(height, width, short_side) if short_side else (height, width)
    if (h, w) != (height, width):
        pred = cv2.resize(pred.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST)
        rgb = None if rgb is None else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
        thermal = None if thermal is None else cv2.resize(
            np.asarray(thermal, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    if thermal is None:
        thermal_rgb = thermal_grey = None
    else:
        thermal_u8 = np.clip(np.rint(thermal), 0, 255).astype(np.uint8)
        thermal_rgb = cv2.applyColorMap(thermal_u8, cv2.COLORMAP_INFERNO)[:, :, ::-1]
        thermal_grey = np.repeat(thermal_u8[:, :, None], 3, axis=2)
    base = {"rgb": rgb, "rgb-bright": rgb, "thermal": thermal_grey}[base_name]
    if base_name == "rgb-bright":
        base = brighten(rgb)
    class_ids = [int(c) for c in np.unique(pred) if c >= 0]
    panels = [
        rgb if rgb is not None else _missing_panel(h, w, "no RGB"),
        thermal_rgb if thermal_rgb is not None else _missing_panel(h, w, "no thermal"),
        _overlay(np.ascontiguousarray(base), pred, class_ids, metadata),
    ]

    size = max(14, round(h / 24))
    font = _font(size)
    pad, row = round(0.5 * size), round(1.6 * size)
    total_w = 3 * w
    swatch = round(0.9 * size)
    gap = round(1.2 * size)
    bar_len = round(5 * size)
    trust_items = [("RGB", rgb is not None), ("thermal", thermal is not None)]
    value_w = max(font.getlength(t) for t in ("0.00", "missing"))
    trust_w = round(font.getlength("trust") + sum(
        gap + font.getlength(n) + pad + bar_len + pad + value_w for n, _ in trust_items))
    legend_w = total_w - 2 * pad - trust_w - gap

    def flow(entries):
        """(row, x) of each legend entry, left to right, wrapping within ``legend_w``."""
        places, r, x = [], 0, 0.0
        for name in entries:
            item_w = swatch + pad + min(font.getlength(name), legend_w - swatch - pad)
            if x > 0 and x + item_w > legend_w:
                r, x = r + 1, 0.0
            places.append((r, x, legend_w - swatch - pad))
            x += item_w + gap
        return places

    all_names = [_class_name_and_color(metadata, i)[0] for i in range(len(metadata.stuff_classes))]
    rows = max(1, 1 + max((r for r, _, _ in flow(all_names)), default=0))  # room for every class
    header = row
    strip_h = rows * row + 2 * pad
    img = Image.new("RGB", (total_w, header + h + strip_h), _BAR_BACKGROUND)
    img.paste(Image.fromarray(np.ascontiguousarray(np.concatenate(panels, axis=1))), (0, header))
    draw = ImageDraw.Draw(img)
    captions = ["RGB", "thermal", _CAPTIONS[base_name]]
    for i, caption in enumerate(captions):
        text = _fit(caption, font, w - 2 * pad)
        draw.text((i * w + pad, header / 2), text, fill=_TEXT, font=font, anchor="lm")

    top = header + h + pad
    legend = []
    names = [_class_name_and_color(metadata, c) for c in class_ids]
    for class_id, (name, color), (r, x, max_text) in zip(class_ids, names, flow([n for n, _ in names])):
        x0, cy = round(pad + x), top + r * row + row / 2
        box = (x0, round(cy - swatch / 2), x0 + swatch, round(cy - swatch / 2) + swatch)
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=color, outline=(200, 200, 200))
        label = _fit(name, font, max_text)
        draw.text((box[2] + pad, cy), label, fill=_TEXT, font=font, anchor="lm")
        x0, y0, x1, y1 = draw.textbbox((box[2] + pad, cy), label, font=font, anchor="lm")
        legend.append(LegendEntry(class_id, name, color, box, (x0, y0, x1, y1)))

    bars = []
    if trust is not None:
        values = np.asarray(trust.detach().cpu() if isinstance(trust, torch.Tensor) else trust, np.float32)
        if values.shape != (2,):
            raise ValueError(f"trust must be [RGB, thermal], got shape {values.shape}.")
        cy = top + row / 2
        x = total_w - pad - trust_w
        draw.text((x, cy), "trust", fill=_TEXT, font=font, anchor="lm")
        x += font.getlength("trust")
        bar_h = round(0.7 * size)
        for (name, present), value in zip(trust_items, values):
            x += gap
            draw.text((x, cy), name, fill=_TEXT, font=font, anchor="lm")
            x += font.getlength(name) + pad
            v = float(np.clip(value, 0.0, 1.0)) if present else None
            box = (round(x), round(cy - bar_h / 2), round(x) + bar_len, round(cy - bar_h / 2) + bar_h)
            filled = round(bar_len * v) if v else 0
            fill = (box[0], box[1], box[0] + filled, box[3])
            draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(60, 60, 60))
            if filled:
                colour = (80, 200, 120) if v >= 0.5 else (240, 170, 40) if v >= 0.2 else (230, 70, 60)
                draw.rectangle((fill[0], fill[1], fill[2] - 1, fill[3] - 1), fill=colour)
            x += bar_len + pad
            draw.text((x, cy), "missing" if v is None else f"{v:.2f}", fill=_TEXT, font=font, anchor="lm")
            x += value_w
            bars.append(TrustBar(name, v, box, fill))
    strip = (0, header + h, total_w, header + h + strip_h)
    return Panel(np.asarray(img).copy(), h / height, base_name, legend, bars, strip)


def draw_panel(rgb: np.ndarray | None, thermal: np.ndarray | None, pred, metadata: Metadata, *,
               trust=None, overlay_on: str = "auto", short_side: int = DRAW_SHORT_SIDE) -> np.ndarray:
    """RGB | thermal | prediction, with a legend of the classes present and, given ``trust``, the
    per-camera trust bar; see :func:`render_panel` for the arguments.

    Returns:
        uint8 image in RGB order: a caption row, the three panels at :func:`drawing_size` (each
        ``h x w``), and the legend/trust strip; width ``3 * w``. ``render_panel`` also says where
        each legend entry and trust bar is.
    """
    return render_panel(rgb, thermal, pred, metadata, trust=trust, overlay_on=overlay_on,
                        short_side=short_side).image
