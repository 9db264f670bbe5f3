"""Drawing for the RGB-T demo: RGB | thermal | prediction side by side, with a legend and the trust bar.

:func:`draw_panel` draws RGB | thermal (INFERNO colour map) | prediction overlay side by side,
captioned, above one strip with the legend of the classes present and the per-camera trust bar.
Inputs under 480 px on the short side are drawn upscaled; a dark RGB image is brightened under
the masks (or the masks go over the thermal image); a missing camera's panel is grey and says so.
Thermal pixels without data (NaN: outside a rig's thermal view, ``sartm_d2.data.rig``) are drawn in
the same neutral grey, never as a temperature (INFERNO's black would read as cold), and the caption
says so; the prediction covers the whole RGB frame.
Class names are only in the legend: the in-place labels of Detectron2's ``draw_sem_seg``, sized
for COCO photographs, run into each other on small images. ``demo/demo.py``, ``demo/video.py``
and ``demo/web.py`` draw every picture, frame and page result with it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from matplotlib import font_manager
from PIL import Image, ImageDraw, ImageFont

import sartm_d2  # noqa: F401  (compat patches before detectron2)

# isort: split

from detectron2.data.catalog import Metadata

__all__ = [
    "DRAW_SHORT_SIDE",
    "OVERLAY_BASES",
    "LegendEntry",
    "Panel",
    "TrustBar",
    "brighten",
    "draw_panel",
    "drawing_size",
    "render_panel",
]

DRAW_SHORT_SIDE = 480  # smaller inputs are drawn upscaled to this short side (masks nearest-neighbour)
OVERLAY_BASES = ("auto", "rgb", "rgb-bright", "thermal")
DARK_RGB_MEDIAN = 0.2  # "auto" brightens an RGB image whose median luminance (0..1) is below this
_BRIGHT_TARGET = 0.4  # median luminance after brightening
_MASK_ALPHA = 0.65
_BLACK_ALPHA = 0.3  # a black class (background, unlabelled) only dims the image: black paint hides it
_EDGE = (255, 255, 240)  # Detectron2's off-white mask outline
_BAR_BACKGROUND = (24, 24, 24)
_TEXT = (235, 235, 235)
_MISSING_GREY = 96  # a missing camera, and thermal pixels without data: INFERNO has no neutral grey
_NO_DATA_CAPTION = "thermal (grey: no data)"


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
        rgb: uint8 H x W x 3 in RGB order; thermal: H x W in 0..255, NaN where it holds no data
            (drawn grey); either may be None (that camera's panel is grey and says "no RGB" / "no
            thermal").
        pred: H x W class ids (Tensor or array); metadata: ``stuff_classes`` / ``stuff_colors``.
        trust: None, or the model's [RGB, thermal] trust in 0..1 (a predictor's ``"trust"``); a
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
    no_data = None
    if thermal is None:
        thermal_rgb = thermal_grey = None
    else:
        # Bilinear upscaling above spreads a NaN to its neighbours: the grey errs on the side of "not seen".
        valid = np.isfinite(thermal)
        thermal_u8 = np.clip(np.rint(np.where(valid, thermal, 0.0)), 0, 255).astype(np.uint8)
        thermal_rgb = cv2.applyColorMap(thermal_u8, cv2.COLORMAP_INFERNO)[:, :, ::-1].copy()
        thermal_grey = np.repeat(thermal_u8[:, :, None], 3, axis=2)
        no_data = ~valid if not valid.all() else None
        if no_data is not None:
            thermal_rgb[no_data] = thermal_grey[no_data] = _MISSING_GREY
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
    captions = ["RGB", "thermal" if no_data is None else _NO_DATA_CAPTION, _CAPTIONS[base_name]]
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
