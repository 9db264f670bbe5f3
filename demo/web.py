"""The RGB-T demo as a local web page (Gradio): upload a pair, a 4-channel RGBT PNG or a short clip.

Examples::

    # a PyTorch model (config + MODEL.WEIGHTS), as demo/demo.py takes it
    python demo/web.py --config-file configs/synthetic.yaml \
        --opts MODEL.WEIGHTS output/synthetic/model_final.pth
    # an exported model (tools/export_model.py), run by onnxruntime
    python demo/web.py --onnx output/onnx/model.onnx
    # cameras that are not pixel-aligned: uploads of the rig's two sizes (tools/calibrate_rig.py)
    python demo/web.py --onnx output/onnx/model.onnx --rig rig.json
    # then open http://127.0.0.1:7860 (--host 0.0.0.0 --port 8080 to serve other machines)

Gradio is an optional extra (``pip install 'sartm-d2[web]'``; ``scripts/setup_env.sh`` installs it);
it is imported only when the page starts, so ``--help`` works without it.

The page is a thin layer over the command-line demo's pieces (``model_options.py``: the model
options and the package's ``RGBTPredictor`` / ``OnnxRGBTPredictor``; ``inputs.py``: reading through
``sartm_d2.data.io``; ``drawing.py``: ``draw_panel``; ``video.py``: ``open_frames``), so a pair gives
the same panel here as in ``demo/demo.py``. The input settings, degraded ones included, are the
predictor's: its test mapper drops or degrades a camera, as in evaluation. :class:`WebDemo` does the
work without the page (tests call it directly); :func:`build_page` lays it out.

With ``--rig`` (default with ``--config-file``: the rig DATASETS.TEST[0] was registered with) an
upload is a pair of the rig's RGB and thermal sizes, warped into the RGB frame by the predictor;
without one, a pair of two sizes is refused with the fix (``--rig``). The examples are then drawn
through the rig.

One model is built at start-up; requests wait in Gradio's queue and run one at a time. Uploads,
the generated examples and the files offered for download live in one temporary folder, removed
when the server stops; nothing is written elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import importlib.util
import itertools
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Sequence

import cv2
import numpy as np
from drawing import OVERLAY_BASES, draw_panel
from model_options import add_model_options, build_predictor, check_model_options, setup_cfg
from PIL import Image
from video import open_frames

import sartm_d2  # noqa: F401  (compat patches + registration before detectron2)
from sartm_d2.data.inputs import RGBTInput, load_pair

# isort: split
from detectron2.utils.logger import setup_logger

from sartm_d2.data.degradations import parse_setting
from sartm_d2.data.io import read_image
from sartm_d2.data.rig import Rig
from sartm_d2.data.synthetic import render_scene
from sartm_d2.data.synthetic_rig import thermal_camera_view
from sartm_d2.modalities import PRESENCE

logger = logging.getLogger("sartm_d2.demo.web")

DEFAULT_MAX_PIXELS = 3840 * 2160  # one 4K UHD frame per image or clip frame
DEFAULT_MAX_FRAMES = 150
DEFAULT_MAX_FILE_SIZE = "200mb"  # per upload; Gradio refuses bigger files itself
# Sizes (H, W) of the generated examples for a PyTorch model: the synthetic set's and a camera's.
EXAMPLE_SIZES = ((128, 160), (480, 640))
CLIP_FRAMES = 8
RESULTS_MAX_AGE_S = 3600  # downloads older than this are deleted (a request's files stay an hour)
SETTING_LABELS = {
    "rgbt": "both cameras (RGB + thermal)",
    "rgb": "RGB only (thermal missing)",
    "thermal": "thermal only (RGB missing)",
}


class InputError(ValueError):
    """A problem with what the user gave (shown in the page; the server keeps running)."""


# ---------------------------------------------------------------------------------------- command line
def get_parser() -> argparse.ArgumentParser:
    parser = add_model_options(argparse.ArgumentParser(
        description="SARTM RGB-T segmentation in a local web page (needs the web extra: "
        "pip install 'sartm-d2[web]')"
    ))
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 serves others)")
    parser.add_argument("--port", type=int, default=7860, help="port to bind (default 7860)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"largest image (or clip frame) in pixels, W x H (default {DEFAULT_MAX_PIXELS})")
    parser.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES,
                        help=f"most frames of a clip (default {DEFAULT_MAX_FRAMES})")
    parser.add_argument("--overlay-on", default="auto", choices=OVERLAY_BASES,
                        help="the page's default image under the masks: auto (RGB, brightened when dark; "
                        "thermal without RGB), rgb, rgb-bright or thermal")
    parser.add_argument("--max-file-size", default=DEFAULT_MAX_FILE_SIZE,
                        help=f"largest upload, e.g. 50mb (default {DEFAULT_MAX_FILE_SIZE})")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = get_parser()
    args = parser.parse_args(argv)
    check_model_options(parser, args)
    if args.max_pixels < 1 or args.max_frames < 1:
        parser.error("--max-pixels and --max-frames must be positive.")
    if not 0 <= args.port < 65536:
        parser.error(f"--port must be 0..65535, got {args.port}.")
    return args


# ---------------------------------------------------------------------------------------- shared pieces
def setting_label(name: str) -> str:
    """The menu label of an input setting: "thermal-bright-2 (thermal degraded: bright, level 2)"."""
    _, degradation = parse_setting(name)
    if degradation is None:
        return SETTING_LABELS[name]
    camera, kind, level = degradation
    return f"{name} ({camera} degraded: {kind}, level {level})"


def setting_choices(settings: Sequence[str]) -> list[tuple[str, str]]:
    """(label, setting) pairs of the input-setting menu, for the predictor's ``settings`` (the modality
    sets, then every degradation, for a PyTorch model; what an exported graph runs, for --onnx)."""
    return [(setting_label(name), name) for name in settings]


def _write_png(path: str, image: np.ndarray) -> str:
    """Encode ``image`` (OpenCV channel order) as PNG and write it atomically; return ``path``."""
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"Could not encode {path!r} as PNG.")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data.tobytes())
    os.replace(tmp, path)
    return path


def label_image(pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Class ids as stored in a label PNG: uint8 (uint16 beyond 256 classes)."""
    return pred.astype(np.uint8 if num_classes <= 256 else np.uint16)


def colour_mask(pred: np.ndarray, colors: Sequence[Sequence[int]]) -> np.ndarray:
    """H x W x 3 uint8 RGB image of the class colours."""
    palette = np.asarray(colors, np.uint8).reshape(-1, 3)
    return palette[pred]


@dataclasses.dataclass
class Result:
    """One segmented image: what the page shows and offers."""

    name: str
    setting: str
    height: int
    width: int
    panel: np.ndarray  # draw_panel's RGB | thermal | prediction, uint8 RGB
    pred: np.ndarray  # H x W class ids
    trust: np.ndarray | None  # (2,) [rgb, thermal] in 0..1, or None (the model estimates none)
    shares: list[tuple[str, tuple[int, int, int], float]]  # (class, colour, pixel share), largest first
    model_ms: float
    total_ms: float
    files: list[str]  # label PNG and coloured mask (or a zip of both per frame, for a clip)
    frames: list[str] = dataclasses.field(default_factory=list)  # a clip's panel PNGs


class WebDemo:
    """The page's work, without the page: read an upload, run the one predictor under the input
    setting, draw the panel and write the downloads. Errors about the input are :class:`InputError`.

    ``predictor``: ``sartm_d2.engine.RGBTPredictor`` or ``sartm_d2.export.OnnxRGBTPredictor`` (its
    ``metadata``, ``thermal_16bit_norm``, ``settings`` and ``rig`` are the page's).
    """

    def __init__(self, predictor, workdir: str, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_frames: int = DEFAULT_MAX_FRAMES):
        self.predictor = predictor
        self.metadata = predictor.metadata
        self.thermal_16bit_norm = predictor.thermal_16bit_norm
        self.settings = tuple(predictor.settings)
        self.rig = predictor.rig
        self.workdir = workdir
        self.results_dir = os.path.join(workdir, "results")
        os.makedirs(self.results_dir, exist_ok=True)
        self.max_pixels = max_pixels
        self.max_frames = max_frames
        self.classes = list(self.metadata.stuff_classes)
        self.colors = [tuple(int(v) for v in c) for c in self.metadata.stuff_colors]

    # ---------------------------------------------------------------- one image
    def segment_files(self, first: str | None, second: str | None, setting: str = "rgbt",
                      overlay_on: str = "auto") -> Result:
        """Segment an upload: ``first`` an RGB image or a 4-channel RGBT PNG, ``second`` a thermal image.

        ``setting``: one of the predictor's ``settings``: "rgbt", "rgb", "thermal" or a degradation
        ("thermal-bright-2"; see ``sartm_d2.data.degradations``). With one camera, the other upload
        may be left out. ``overlay_on``: the image under the masks (``draw_panel``'s).
        """
        start = time.perf_counter()
        modalities, _ = self._parse(setting)
        names = {p: os.path.basename(p) for p in (first, second) if p}
        try:
            item = self._item(first, second, modalities)
            for path in (item.rgb_path, item.thermal_path):
                if path:
                    self._check_pixels(path)
            self._check_aligned(item)
            rgb, thermal = load_pair(item, self.thermal_16bit_norm, self.rig)
        except (OSError, ValueError) as e:
            raise InputError(_with_names(str(e), names)) from None
        result = self._segment(rgb, thermal, setting, item.name, start, overlay_on)
        out = self._new_results_dir()
        result.files = self._write_downloads(out, item.name, result.pred)
        return result

    def _parse(self, setting: str):
        try:
            return parse_setting(setting)
        except ValueError as e:
            raise InputError(str(e)) from None

    def _item(self, first: str | None, second: str | None, modalities: str):
        """The ``RGBTInput`` for the uploads under ``modalities`` (both are read when both are given,
        so that a pair of different sizes is refused even when one camera is then dropped)."""
        if not first and not second:
            raise InputError("Upload an RGB image and a thermal image, or one 4-channel RGBT PNG.")
        if first and second:
            if self._channels(first) == 4:
                raise InputError(
                    f"{os.path.basename(first)!r} is a 4-channel RGBT image, which holds its own thermal "
                    "image: remove the thermal upload, or upload a 3-channel RGB image instead."
                )
            return RGBTInput(os.path.splitext(os.path.basename(first))[0], first, second)
        if second:  # a thermal image alone
            if modalities != "thermal":
                raise InputError(
                    f"Only a thermal image was given ({os.path.basename(second)!r}): add its RGB image, or "
                    "choose the input setting 'thermal only'."
                )
            return RGBTInput(os.path.splitext(os.path.basename(second))[0], None, second)
        name = os.path.splitext(os.path.basename(first))[0]
        if modalities == "rgb":
            return RGBTInput(name, first, None)  # an RGBT PNG keeps its RGB stream (load_pair)
        channels = self._channels(first)
        if channels != 4:
            needs = "thermal only" if modalities == "thermal" else "this setting"
            raise InputError(
                f"{os.path.basename(first)!r} has {channels} channel(s), so it is not a 4-channel RGBT PNG, "
                f"and {needs} needs a thermal stream: upload its thermal image too, or choose 'RGB only'."
            )
        return RGBTInput(name, first, first)

    def _channels(self, path: str) -> int:
        self._check_pixels(path)
        try:
            img = read_image(path)
        except (OSError, ValueError) as e:
            raise InputError(_with_names(str(e), {path: os.path.basename(path)})) from None
        return 1 if img.ndim == 2 else img.shape[2]

    def _check_aligned(self, item: RGBTInput) -> None:
        """Without a rig, an RGB and a thermal upload of two sizes are cameras that are not pixel-aligned:
        refused with the page's fix (``--rig``). With one, ``load_pair`` checks the rig's sizes."""
        paths = (item.rgb_path, item.thermal_path)
        if self.rig is not None or not all(paths) or paths[0] == paths[1]:
            return
        sizes = []
        for path in paths:
            try:
                with Image.open(path) as img:
                    sizes.append(img.size)
            except (OSError, ValueError, SyntaxError):  # not an image PIL knows: the reader names the problem
                return
        if sizes[0] != sizes[1]:
            (rw, rh), (tw, th) = sizes
            rgb_name, thermal_name = (os.path.basename(p) for p in paths)
            raise InputError(
                f"RGB and thermal sizes differ: {rgb_name!r} is {rw}x{rh} and {thermal_name!r} is {tw}x{th} "
                "(WxH): the cameras are not pixel-aligned, and the page has no rig to warp thermal into the "
                "RGB frame. Restart it with --rig FILE (the pair's rig file; tools/calibrate_rig.py writes "
                "one), or upload a pixel-aligned pair of one size."
            )

    def _check_pixels(self, path: str) -> None:
        """Refuse an image over ``max_pixels`` from its header, before decoding it (a small file can
        decode to gigabytes). Files PIL cannot identify are left to the reader's own error."""
        try:
            with Image.open(path) as img:
                width, height = img.size
        except Image.DecompressionBombError:
            width = height = None
        except (OSError, ValueError, SyntaxError):  # not an image PIL knows: read_image names the problem
            return
        if width is None or width * height > self.max_pixels:
            size = "" if width is None else f" is {width}x{height} (WxH) = {width * height} pixels:"
            raise InputError(
                f"{os.path.basename(path)!r}{size} over the page's limit of {self.max_pixels} pixels "
                "(--max-pixels). Resize it, or restart the page with a larger --max-pixels."
            )

    def _shown(self, rgb, thermal, setting: str, name: str):
        """The pair as the model saw it, for the panel: the camera the setting lacks dropped, a degraded
        one as the predictor's test mapper degraded it (``predictor.prepare``), at the input's size, in
        the RGB frame (with a rig: the thermal image warped, ``predictor.to_rgb_frame``)."""
        modalities, degradation = parse_setting(setting)
        has_rgb, has_thermal = PRESENCE[modalities]
        rgb, thermal = (rgb if has_rgb else None), (thermal if has_thermal else None)
        if degradation is None:
            return self.predictor.to_rgb_frame(rgb, thermal, image_id=name)
        inputs = self.predictor.prepare(rgb, thermal, setting, image_id=name)
        image = inputs["image"].numpy().transpose(1, 2, 0)
        height, width = rgb.shape[:2]
        if image.shape[:2] != (height, width):  # the mapper resized it (INPUT.MIN_SIZE_TEST)
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        if degradation[0] == "rgb":
            rgb = np.clip(np.rint(image[:, :, :3]), 0, 255).astype(np.uint8)
            thermal = self.predictor.to_rgb_frame(None, thermal, image_id=name)[1]
        else:
            thermal = np.ascontiguousarray(image[:, :, 3])
        return rgb, thermal

    def _segment(self, rgb, thermal, setting: str, name: str, start: float,
                 overlay_on: str = "auto") -> Result:
        for image in (rgb, thermal):
            if image is not None and image.shape[0] * image.shape[1] > self.max_pixels:
                raise InputError(
                    f"{name!r} is {image.shape[1]}x{image.shape[0]} (WxH), over the page's limit of "
                    f"{self.max_pixels} pixels (--max-pixels)."
                )
        t0 = time.perf_counter()
        try:
            # ``image_id`` seeds a degradation: the same upload gets the same degraded image every time.
            out = self.predictor(rgb, thermal, setting, image_id=name)
            model_ms = 1000 * (time.perf_counter() - t0)
            rgb, thermal = self._shown(rgb, thermal, setting, name)
        except ValueError as e:  # a camera the setting needs, an exported graph of another size or cameras
            raise InputError(str(e)) from None
        pred = out["sem_seg"].argmax(0).numpy()
        trust = None if out["trust"] is None else out["trust"].numpy()
        panel = draw_panel(rgb, thermal, pred, self.metadata, trust=trust, overlay_on=overlay_on)
        counts = np.bincount(pred.ravel(), minlength=len(self.classes))
        shares = [(self.classes[k], self.colors[k], counts[k] / pred.size)
                  for k in np.argsort(-counts, kind="stable") if counts[k] > 0]
        total_ms = 1000 * (time.perf_counter() - start)
        height, width = pred.shape
        logger.info(f"{name} ({setting}, {width}x{height}): model {model_ms:.0f} ms, total {total_ms:.0f} ms")
        return Result(name, setting, height, width, panel, pred, trust, shares, model_ms, total_ms, [])

    def _new_results_dir(self) -> str:
        """A fresh folder for one request's downloads; folders older than RESULTS_MAX_AGE_S go."""
        now = time.time()
        for entry in os.scandir(self.results_dir):
            if entry.is_dir() and now - entry.stat().st_mtime > RESULTS_MAX_AGE_S:
                shutil.rmtree(entry.path, ignore_errors=True)
        out = os.path.join(self.results_dir, uuid.uuid4().hex)
        os.makedirs(out)
        return out

    def _write_downloads(self, out: str, name: str, pred: np.ndarray) -> list[str]:
        """``<name>_labels.png`` (class ids) and ``<name>_mask.png`` (class colours)."""
        labels = _write_png(os.path.join(out, f"{name}_labels.png"), label_image(pred, len(self.classes)))
        mask = _write_png(os.path.join(out, f"{name}_mask.png"), colour_mask(pred, self.colors)[:, :, ::-1])
        return [labels, mask]

    # ---------------------------------------------------------------- a clip
    def segment_clip(self, rgb_video: str | None, thermal_video: str | None, setting: str = "rgbt",
                     progress: Callable[[int, int | None], None] | None = None,
                     overlay_on: str = "auto") -> Result:
        """Segment a clip frame by frame (``demo/video.py``'s ``open_frames``: an RGB and a thermal
        video, or one 4-channel video); ``progress(done, total)`` after each frame.

        The result's panel is the last frame's; ``frames`` holds every panel, ``files`` one zip of
        the label PNGs and coloured masks.
        """
        start = time.perf_counter()
        self._parse(setting)
        if not rgb_video:
            raise InputError("Upload an RGB clip and its thermal clip (or one 4-channel BGRA video).")
        names = {p: os.path.basename(p) for p in (rgb_video, thermal_video) if p}
        out = self._new_results_dir()
        archive = os.path.join(out, "labels_and_masks.zip")
        panels: list[str] = []
        model_ms, trusts, last = 0.0, [], None
        try:
            with open_frames(rgb_video, thermal_video, self.thermal_16bit_norm, self.rig) as frames:
                total = frames.count
                if total is not None and total > self.max_frames:
                    raise InputError(
                        f"The clip has {total} frames, over the page's limit of {self.max_frames} "
                        "(--max-frames): cut it shorter."
                    )
                with zipfile.ZipFile(archive + ".tmp", "w") as zf:
                    for i, frame in enumerate(frames):
                        if i >= self.max_frames:
                            raise InputError(
                                f"The clip has more than {self.max_frames} frames (--max-frames): cut it "
                                "shorter."
                            )
                        t0 = time.perf_counter()
                        last = self._segment(frame.rgb, frame.thermal, setting, frame.name, t0, overlay_on)
                        model_ms += last.model_ms
                        if last.trust is not None:
                            trusts.append(last.trust)
                        path = os.path.join(out, f"{frame.name}.png")
                        panels.append(_write_png(path, last.panel[:, :, ::-1]))
                        for path in self._write_downloads(out, frame.name, last.pred):
                            zf.write(path, os.path.basename(path))
                            os.remove(path)
                        if progress is not None:
                            progress(i + 1, total)
            os.replace(archive + ".tmp", archive)
        except (OSError, ValueError) as e:  # InputError included
            raise InputError(_with_names(str(e), names)) from None
        n = len(panels)
        last.trust = np.mean(trusts, axis=0) if trusts else None
        last.model_ms = model_ms / n
        last.total_ms = 1000 * (time.perf_counter() - start)
        last.name = f"{os.path.splitext(os.path.basename(rgb_video))[0]} ({n} frames)"
        last.files, last.frames = [archive], panels
        return last


def _with_names(message: str, names: dict[str, str]) -> str:
    """``message`` with the server's upload paths replaced by the uploaded files' names."""
    for path, name in names.items():
        message = message.replace(repr(path), repr(name)).replace(path, name)
    return message


# ---------------------------------------------------------------------------------------- examples
def write_examples(folder: str, sizes: Sequence[tuple[int, int]], seed: int = 2024,
                   rig: Rig | None = None) -> list[tuple[str, list]]:
    """Synthetic day and night scenes (``sartm_d2.data.synthetic``'s renderer) for one-click examples.

    Returns (label, [first upload, second upload]) pairs: RGB + thermal PNGs, and the night scene of
    the last size as one 4-channel RGBT PNG (second upload empty). With ``rig``: the scenes at its RGB
    size, each thermal image as the rig's thermal camera sees it (``thermal_camera_view``), no RGBT PNG.
    """
    os.makedirs(folder, exist_ok=True)
    examples = []
    for s, (height, width) in enumerate([rig.rgb_size] if rig is not None else sizes):
        for day in (True, False):
            rgb, thermal, _ = render_scene(np.random.default_rng([seed, s, day]), height, width, day)
            when = "day" if day else "night"
            stem = os.path.join(folder, f"{when}_{width}x{height}")
            if rig is not None:
                thermal = thermal_camera_view(thermal, rig.homography, rig.thermal_size)
                th, tw = rig.thermal_size
                rgb_path = _write_png(f"{stem}_rgb.png", rgb[:, :, ::-1])
                thermal_path = _write_png(f"{stem}_thermal_{tw}x{th}.png", thermal)
                label = f"{when}, {width}x{height} + thermal {tw}x{th} (rig)"
                examples.append((label, [rgb_path, thermal_path]))
            elif not day and s == len(sizes) - 1:
                path = _write_png(f"{stem}_rgbt.png", np.dstack([rgb[:, :, ::-1], thermal]))
                examples.append((f"{when}, {width}x{height}, one RGBT PNG", [path, None]))
            else:
                rgb_path = _write_png(f"{stem}_rgb.png", rgb[:, :, ::-1])
                thermal_path = _write_png(f"{stem}_thermal.png", thermal)
                examples.append((f"{when}, {width}x{height}", [rgb_path, thermal_path]))
    return examples


def write_example_clip(folder: str, height: int, width: int, day: bool = False, frames: int = CLIP_FRAMES,
                       seed: int = 2024, rig: Rig | None = None) -> tuple[str, str]:
    """A short panning clip over one synthetic scene: (RGB .avi, thermal .avi), MJPG at 10 fps; with
    ``rig``, at its RGB size, the thermal frames as its thermal camera sees them."""
    if rig is not None:
        height, width = rig.rgb_size
    step = max(1, width // 40)
    rgb, thermal, _ = render_scene(np.random.default_rng([seed, 99]), height, width + step * frames, day)
    paths = (os.path.join(folder, "clip_rgb.avi"), os.path.join(folder, "clip_thermal.avi"))
    thermal_hw = (height, width) if rig is None else rig.thermal_size
    writers = [cv2.VideoWriter(p, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h), color)
               for p, (h, w), color in zip(paths, ((height, width), thermal_hw), (True, False))]
    try:
        for i in range(frames):
            x = i * step
            seen = thermal[:, x:x + width]
            if rig is not None:
                seen = thermal_camera_view(seen, rig.homography, rig.thermal_size)
            writers[0].write(np.ascontiguousarray(rgb[:, x:x + width, ::-1]))
            writers[1].write(np.ascontiguousarray(seen))
    finally:
        for w in writers:
            w.release()
    return paths


# ---------------------------------------------------------------------------------------- the page
CSS = """
.sartm-bars { display: grid; grid-template-columns: max-content 1fr max-content; gap: 4px 8px;
  align-items: center; font-size: 14px; }
.sartm-bar { height: 14px; background: #e5e7eb; border-radius: 3px; overflow: hidden; min-width: 80px; }
.sartm-bar > div { height: 100%; }
.sartm-error { color: #b91c1c; border: 1px solid #b91c1c; border-radius: 4px; padding: 6px 10px; }
.sartm-swatch { display: inline-block; width: 14px; height: 14px; border: 1px solid #555;
  vertical-align: middle; margin-right: 6px; }
"""


def trust_html(trust: np.ndarray | None, of: str = "") -> str:
    """The per-stream trust bar (and its numbers as text); ``of`` says what it is of, if not one image."""
    if trust is None:
        return ('<div id="sartm-trust-none"><b>Trust per camera</b>: not estimated by this model (its fusion '
                'has no trust gate; MODEL.SARTM.FUSION "reliability" has one).</div>')
    rows = []
    for name, value, colour in (("RGB", trust[0], "#2563eb"), ("thermal", trust[1], "#ea580c")):
        pct = 100 * float(np.clip(value, 0, 1))
        rows.append(f'<span>{name}</span><div class="sartm-bar"><div style="width:{pct:.1f}%;'
                    f'background:{colour}"></div></div><span class="sartm-trust-value">{value:.2f}</span>')
    text = f"Trust per camera: RGB {trust[0]:.2f}, thermal {trust[1]:.2f}"
    return (f'<div id="sartm-trust-bar"><b>Trust per camera</b>{of} (how far the fusion relies on each '
            "stream)"
            f'<div class="sartm-bars">{"".join(rows)}</div><div class="sartm-trust-text">{text}</div></div>')


def classes_html(shares) -> str:
    """The legend: colour, name and pixel share of each class present, largest first."""
    rows = []
    for name, colour, share in shares:
        rgb = f"rgb{tuple(colour)}"
        swatch = f'<span class="sartm-swatch" style="background:{rgb}"></span>'
        rows.append(f'<span class="sartm-class">{swatch}{html.escape(name)}</span>'
                    f'<div class="sartm-bar"><div style="width:{100 * share:.1f}%;background:{rgb}">'
                    f'</div></div><span>{100 * share:.1f}%</span>')
    return ('<div id="sartm-legend"><b>Classes present</b> (pixel share)'
            f'<div class="sartm-bars">{"".join(rows)}</div></div>')


def status_text(result: Result, request: int) -> str:
    setting = html.escape(setting_label(result.setting))
    size = f"{result.width}x{result.height} (WxH)"
    return (f'<div class="sartm-status sartm-done"><b>Done</b> (request {request}): '
            f"{html.escape(result.name)}, {size}, input: {setting}.</div>")


def latency_text(result: Result) -> str:
    if result.frames:
        fps = 1000 / max(result.model_ms, 1e-6)
        return (f"**Latency**: model {result.model_ms:.0f} ms per frame ({fps:.1f} fps); "
                f"{len(result.frames)} frames in {result.total_ms / 1000:.1f} s end to end.")
    return (f"**Latency**: model {result.model_ms:.0f} ms; {result.total_ms:.0f} ms end to end "
            "(reading, model, drawing).")


def build_page(app: WebDemo, description: str, examples: Sequence[tuple[str, list]] = (),
               clip_example: tuple[str, str] | None = None, overlay_on: str = "auto"):
    """The Gradio page around ``app``: inputs on the left, results on the right."""
    import gradio as gr

    requests = itertools.count(1)  # numbers each answer, so a repeated request shows a new status

    def outputs_of(result: Result | None, error: str | None = None):
        n = next(requests)
        if result is None:
            status = (f'<div class="sartm-status sartm-error"><b>Error</b> (request {n}): '
                      f"{html.escape(error)}</div>")
            return (status, None, "", "", "", None, gr.update(value=None, visible=False))
        frames = gr.update(value=result.frames or None, visible=bool(result.frames))
        of = ", mean over the frames" if result.frames else ""
        return (status_text(result, n), result.panel, trust_html(result.trust, of),
                classes_html(result.shares), latency_text(result), result.files, frames)

    progress_tracker = gr.Progress()  # Gradio finds it as run_clip's default and reports through it

    def run_images(first, second, setting, overlay):
        try:
            return outputs_of(app.segment_files(first, second, setting, overlay))
        except InputError as e:
            return outputs_of(None, str(e))
        except Exception as e:  # the page stays up; the log has the traceback
            logger.exception("Segmenting %s / %s failed", first, second)
            return outputs_of(None, f"internal error ({type(e).__name__}: {e}); see the server log.")

    def rerun_images(first, second, setting, overlay):
        """A new input setting re-runs the images, if any (a clip is re-run with its button)."""
        if not first and not second:
            return tuple(gr.skip() for _ in range(7))
        return run_images(first, second, setting, overlay)

    def run_clip(rgb_video, thermal_video, setting, overlay, progress=progress_tracker):
        def report(done, total):
            progress((done, total) if total else done, desc="Segmenting frames", unit="frames")

        try:
            return outputs_of(app.segment_clip(rgb_video, thermal_video, setting, report, overlay))
        except InputError as e:
            return outputs_of(None, str(e))
        except Exception as e:
            logger.exception("Segmenting the clip %s / %s failed", rgb_video, thermal_video)
            return outputs_of(None, f"internal error ({type(e).__name__}: {e}); see the server log.")

    choices = setting_choices(app.settings)
    blocks = gr.Blocks(title="SARTM RGB-T segmentation", analytics_enabled=False, delete_cache=(600, 3600))
    with blocks as page:
        gr.Markdown(f"## SARTM: RGB-thermal semantic segmentation\n{description}")
        with gr.Row():
            with gr.Column(scale=2):
                setting = gr.Dropdown(choices, value=app.settings[0], label="Input setting",
                                      elem_id="setting", info="Both cameras, one camera alone, or one "
                                      "degraded: see how the model copes.")
                overlay = gr.Radio(list(OVERLAY_BASES), value=overlay_on, label="Masks drawn over",
                                   elem_id="overlay",
                                   info="auto: RGB, brightened when dark (thermal without RGB)")
                with gr.Tab("Images", elem_id="tab-images"):
                    first = gr.File(label="RGB image, or one 4-channel RGBT PNG", elem_id="first")
                    second = gr.File(label="Thermal image", elem_id="second")
                    run = gr.Button("Segment", variant="primary", elem_id="run")
                    if examples:
                        ex = gr.Examples([files for _, files in examples], [first, second],
                                         example_labels=[label for label, _ in examples],
                                         label="Synthetic examples (click one)", elem_id="examples")
                with gr.Tab("Clip", elem_id="tab-clip"):
                    rgb_clip = gr.File(label="RGB clip, or one 4-channel (BGRA) video", elem_id="rgb-clip")
                    thermal_clip = gr.File(label="Thermal clip", elem_id="thermal-clip")
                    run_clip_button = gr.Button("Segment clip", variant="primary", elem_id="run-clip")
                    if clip_example:
                        clip_ex = gr.Examples([list(clip_example)], [rgb_clip, thermal_clip],
                                              example_labels=["night, panning"], label="Synthetic clip")
            with gr.Column(scale=5):
                status = gr.HTML('<div class="sartm-status">Upload a pair or click an example.</div>',
                                 elem_id="status")
                panel = gr.Image(label="RGB | thermal | prediction", show_label=False, format="png",
                                 interactive=False, elem_id="panel", buttons=["download", "fullscreen"])
                with gr.Row():
                    trust = gr.HTML(elem_id="trust")
                    legend = gr.HTML(elem_id="legend")
                latency = gr.Markdown(elem_id="latency")
                downloads = gr.File(label="Downloads: label PNG (class ids) and coloured mask",
                                    file_count="multiple", interactive=False, elem_id="downloads")
                gallery = gr.Gallery(label="Clip frames", format="png", columns=2, elem_id="frames",
                                     visible=False)
        outputs = [status, panel, trust, legend, latency, downloads, gallery]
        images, clip = [first, second, setting, overlay], [rgb_clip, thermal_clip, setting, overlay]
        run.click(run_images, images, outputs)
        setting.change(rerun_images, images, outputs)
        overlay.change(rerun_images, images, outputs)
        run_clip_button.click(run_clip, clip, outputs)
        if examples:
            ex.load_input_event.then(run_images, images, outputs)
        if clip_example:
            clip_ex.load_input_event.then(run_clip, clip, outputs)
    # One model, one request at a time: the others wait in the queue (and see their place in it).
    page.queue(default_concurrency_limit=1)
    return page


def describe(args, app: WebDemo) -> str:
    model = f"`{args.onnx}` (onnxruntime)" if args.onnx else f"`{args.config_file}`"
    classes = ", ".join(app.classes)
    rig = app.rig
    if rig is not None:
        (rh, rw), (th, tw) = rig.rgb_size, rig.thermal_size
        return (f"Model: {model}. Classes: {classes}. Rig: `{rig.path or 'given'}`: upload an RGB image of "
                f"{rw}x{rh} and its thermal image of {tw}x{th} (WxH), or a short RGB + thermal clip of these "
                "sizes, and pick the input setting; thermal is warped into the RGB frame (grey where the "
                "thermal camera does not see).")
    return (f"Model: {model}. Classes: {classes}. Upload an RGB image and its thermal image (or one "
            "4-channel RGBT PNG), or a short RGB + thermal clip, and pick the input setting.")


def main(argv=None) -> None:
    """Start the page and serve until interrupted; the temporary folder is removed on exit."""
    args = parse_args(argv)
    if importlib.util.find_spec("gradio") is None:  # checked before the model is built
        sys.exit("demo/web.py needs Gradio, the web extra: pip install 'sartm-d2[web]' "
                 "(or bash scripts/setup_env.sh).")
    workdir = tempfile.mkdtemp(prefix="sartm_web_")
    # Gradio keeps uploads (and would cache examples) under these; both inside the temporary folder.
    # Set before Gradio is imported: some of its modules read them at import.
    os.environ["GRADIO_TEMP_DIR"] = os.path.join(workdir, "uploads")
    os.environ["GRADIO_EXAMPLES_CACHE"] = os.path.join(workdir, "examples_cache")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # as Ctrl-C: Gradio closes the server, then the folder goes
    try:
        setup_logger(name="fvcore")
        setup_logger(name="sartm_d2")
        cfg = None if args.onnx else setup_cfg(args)
        predictor = build_predictor(args, cfg)
        rig = predictor.rig
        app = WebDemo(predictor, workdir, max_pixels=args.max_pixels, max_frames=args.max_frames)
        # An exported graph has one input size: the examples are drawn at it.
        sizes = [(predictor.segmenter.height, predictor.segmenter.width)] if args.onnx else EXAMPLE_SIZES
        examples = write_examples(os.path.join(workdir, "examples"), sizes, rig=rig)
        clip = write_example_clip(os.path.join(workdir, "examples"), *sizes[0], rig=rig)
        page = build_page(app, describe(args, app), examples, clip, args.overlay_on)
        from gradio.themes import Default

        page.launch(server_name=args.host, server_port=args.port, max_file_size=args.max_file_size,
                    allowed_paths=[workdir], ssr_mode=False, run_history=False, show_error=True,
                    footer_links=["gradio"], css=CSS, theme=Default())
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
