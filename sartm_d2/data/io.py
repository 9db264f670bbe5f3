"""Reading RGB, thermal and label images of every supported layout, with one clear error per bad file.

Conventions (the shared data contract):

- RGB comes back as ``uint8`` H x W x 3 in R, G, B order (OpenCV decodes B, G, R; we convert).
- Thermal comes back as ``float32`` H x W in the 0..255 range, whatever it was stored as:

  * 8-bit, one channel: used as is.
  * 8-bit or 16-bit, three channels that are equal (a grey image saved as colour): one channel.
    Three *unequal* channels (a false-colour palette) carry no reliable temperature order; we use
    their luminance (``cv2.COLOR_BGR2GRAY``) rather than guess the palette, and log it once.
  * Channel 4 of a 4-channel RGBT PNG or TIFF (MFNet), when ``thermal_file_name == file_name``.
    OpenCV returns such an image as B, G, R, A, so the stored R, G, B, T order becomes
    ``[..., 2::-1]`` and ``[..., 3]``.
  * 16-bit values are brought to 0..255 by ``thermal_16bit_norm``: ``"percentile"`` (per image,
    1st..99th percentile stretched to 0..255 and clipped: robust to a few hot pixels),
    ``"minmax"`` (per image, min..max) or ``"fixed"`` (divide by 257, the full 16-bit range, so
    temperatures keep their meaning across images). A constant image maps to mid-grey (127.5).
  * Cameras that are not pixel-aligned (other sizes, fields of view, an offset): with a rig file
    (``sartm_d2.data.rig``) the normalised thermal image is warped into the RGB frame, at the RGB
    size, with NaN where the thermal camera does not see the RGB image.

- Labels come back as ``uint8`` H x W class ids, 255 = ignore. They may be PNG, TIFF or BMP, never
  JPEG: its lossy compression invents ids along every class border.

Any format OpenCV decodes is accepted (``IMAGE_EXTENSIONS``: PNG, JPEG, BMP, TIFF, ...). Images are
read with ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` so that nothing (bit depth, alpha channel,
EXIF rotation) is changed behind our back: without that flag OpenCV would turn a 16-bit thermal
TIFF into 8-bit colour. OpenCV returns ``None`` for unreadable or truncated files, which we turn
into an error naming the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import cv2
import numpy as np

from .rig import Rig, as_rig, check_rig_sizes, warp_thermal

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "LOSSY_LABEL_EXTENSIONS",
    "THERMAL_16BIT_NORMS",
    "check_label_values",
    "lossy_label_error",
    "normalize_thermal",
    "read_image",
    "read_label",
    "read_rgb",
    "read_rgbt",
    "read_thermal",
    "remap_background",
]

THERMAL_16BIT_NORMS = ("percentile", "minmax", "fixed")
# File name extensions (lower case) that the dataset loader treats as images: what OpenCV decodes.
IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"
)
# Lossy formats refused for labels: JPEG blurs class-id borders into ids that were never drawn.
LOSSY_LABEL_EXTENSIONS = (".jpg", ".jpeg", ".jpe")
_warned_false_colour: set[str] = set()


def read_image(path: str) -> np.ndarray:
    """Decode ``path`` unchanged (bit depth and channels as stored); errors name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image file not found: {path!r}. Check the dataset root and its layout.")
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(
            f"Could not decode image {path!r}: OpenCV returned None, so the file is unreadable, truncated "
            "or not an image. Re-extract or re-download it."
        )
    return img


def _describe(img: np.ndarray) -> str:
    channels = 1 if img.ndim == 2 else img.shape[2]
    return f"{img.dtype} with {channels} channel(s), size {img.shape[1]}x{img.shape[0]} (WxH)"


def normalize_thermal(thermal: np.ndarray, norm: str = "percentile", *, path: str = "<array>") -> np.ndarray:
    """Map a 2-D uint8 or uint16 thermal image to float32 in 0..255 (see the module docstring)."""
    if thermal.dtype == np.uint8:
        return thermal.astype(np.float32)
    if thermal.dtype != np.uint16:
        raise ValueError(
            f"Unsupported thermal dtype in {path!r}: {thermal.dtype}. Thermal images must be 8-bit or "
            "16-bit unsigned integers; convert the file (e.g. to a 16-bit PNG)."
        )
    if norm not in THERMAL_16BIT_NORMS:
        raise ValueError(
            f"Unknown INPUT.THERMAL_16BIT_NORM {norm!r}; choose one of {list(THERMAL_16BIT_NORMS)}."
        )
    t = thermal.astype(np.float32)
    if norm == "fixed":
        return t / 257.0
    if norm == "percentile":
        lo, hi = np.percentile(t, [1.0, 99.0])
    else:
        lo, hi = float(t.min()), float(t.max())
    if hi <= lo:  # no contrast: mid-grey, as the in-model stretch maps a flat image to its middle
        return np.full_like(t, 127.5)
    return np.clip((t - lo) * (255.0 / (hi - lo)), 0.0, 255.0).astype(np.float32)


def _thermal_plane(img: np.ndarray, path: str) -> np.ndarray:
    """The single thermal channel of a separately stored thermal image (1 or 3 channels)."""
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 3:
        b, g, r = img[:, :, 0], img[:, :, 1], img[:, :, 2]
        if np.array_equal(b, g) and np.array_equal(b, r):
            return b
        if path not in _warned_false_colour:
            _warned_false_colour.add(path)
            logger.warning("Thermal image %s has 3 unequal channels; using its luminance.", path)
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    raise ValueError(
        f"Unsupported thermal image {path!r}: {_describe(img)}. Expected 1 or 3 channels (or channel 4 "
        "of an RGBT PNG/TIFF, in which case the record's thermal_file_name must equal its file_name)."
    )


def _to_uint8_rgb(bgr: np.ndarray, path: str) -> np.ndarray:
    if bgr.dtype == np.uint16:
        # Exact full-range mapping 65535 -> 255 (16-bit colour images are rare but legal PNGs).
        bgr = np.round(bgr.astype(np.float32) / 257.0).astype(np.uint8)
    elif bgr.dtype != np.uint8:
        raise ValueError(f"Unsupported RGB image {path!r}: {_describe(bgr)}. Expected 8-bit colour.")
    return np.ascontiguousarray(bgr[:, :, 2::-1])


def read_rgb(path: str) -> np.ndarray:
    """One RGB image alone (a camera without its thermal partner): uint8 H x W x 3 in RGB order."""
    img = read_image(path)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"RGB image {path!r} is {_describe(img)}; expected a 3-channel colour image.")
    return _to_uint8_rgb(img, path)


def read_thermal(path: str, thermal_16bit_norm: str = "percentile") -> np.ndarray:
    """One thermal image alone (no RGB partner): float32 H x W in 0..255, as in ``read_rgbt``."""
    return normalize_thermal(_thermal_plane(read_image(path), path), thermal_16bit_norm, path=path)


def read_rgbt(
    record: Mapping, thermal_16bit_norm: str = "percentile", rig: Rig | str | os.PathLike | None = None,
    *, warp: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a record's RGB and thermal images, the thermal one in the RGB image's frame.

    Args:
        record: a dataset dict with "file_name" and "thermal_file_name" (equal for 4-channel RGBT
            images), and optionally "rig_file" (what ``register_rgbt_sem_seg(..., rig=)`` puts there).
        thermal_16bit_norm: "percentile", "minmax" or "fixed" (cfg.INPUT.THERMAL_16BIT_NORM).
        rig: the camera pair's rig (a :class:`~sartm_d2.data.rig.Rig` or a rig file), for pairs that
            are not pixel-aligned; default: the record's "rig_file", else none.
        warp: False keeps the thermal image in its own frame (the sizes are still checked against the
            rig): what the predictors take with a rig (``sartm_d2.engine.RGBTPredictor(cfg, rig=)``),
            which warp it themselves.

    Returns:
        (rgb uint8 H x W x 3 in RGB order, thermal float32 H x W in 0..255). Without a rig the two
        are of one size (else an error). With a rig they must be of the rig's sizes; the thermal
        image is normalised (16-bit) in its own frame, then warped once into the RGB frame, and holds
        NaN where the thermal camera does not see the RGB image (``np.isfinite`` gives the validity
        mask; see ``sartm_d2.data.rig``).
    """
    if thermal_16bit_norm not in THERMAL_16BIT_NORMS:
        raise ValueError(
            f"Unknown INPUT.THERMAL_16BIT_NORM {thermal_16bit_norm!r}; choose one of "
            f"{list(THERMAL_16BIT_NORMS)}."
        )
    rgb_path = record["file_name"]
    thermal_path = record.get("thermal_file_name")
    if not thermal_path:
        raise ValueError(
            f"Record for {rgb_path!r} has no 'thermal_file_name'; RGB-T records need one (set it to "
            "file_name for 4-channel RGBT images)."
        )
    if rig is None and record.get("rig_file"):
        rig = record["rig_file"]
    rig = as_rig(rig)
    img = read_image(rgb_path)
    if thermal_path == rgb_path:
        if img.ndim != 3 or img.shape[2] != 4:
            raise ValueError(
                f"RGBT image {rgb_path!r} is {_describe(img)}, but its thermal_file_name equals its "
                "file_name, which means a 4-channel R,G,B,T PNG or TIFF (MFNet layout). Register the "
                "thermal folder (thermal_root) if thermal images are stored separately."
            )
        rgb = _to_uint8_rgb(img[:, :, :3], rgb_path)
        thermal = _thermal_in_rgb_frame(rgb, img[:, :, 3], thermal_16bit_norm, rig, rgb_path, rgb_path, warp)
        return rgb, thermal

    if img.ndim == 2:
        raise ValueError(f"RGB image {rgb_path!r} is {_describe(img)}; expected a 3-channel colour image.")
    if img.shape[2] != 3:
        raise ValueError(
            f"RGB image {rgb_path!r} is {_describe(img)}; expected 3 channels. If it is an RGBT image, set "
            "the record's thermal_file_name to its file_name (thermal_root=None at registration)."
        )
    rgb = _to_uint8_rgb(img, rgb_path)
    timg = read_image(thermal_path)
    plane = _thermal_plane(timg, thermal_path)
    return rgb, _thermal_in_rgb_frame(rgb, plane, thermal_16bit_norm, rig, rgb_path, thermal_path, warp)


def _thermal_in_rgb_frame(rgb, plane, thermal_16bit_norm, rig, rgb_path, thermal_path, warp) -> np.ndarray:
    """The thermal plane normalised, then (with a rig, unless not ``warp``) warped into the RGB frame;
    the sizes checked."""
    if rig is not None:
        check_rig_sizes(rig, rgb.shape, plane.shape, rgb_path, thermal_path)
    elif plane.shape != rgb.shape[:2]:
        raise ValueError(
            f"RGB and thermal sizes differ: {rgb_path!r} is {rgb.shape[1]}x{rgb.shape[0]} and "
            f"{thermal_path!r} is {plane.shape[1]}x{plane.shape[0]} (WxH). The pair must be registered "
            "(pixel-aligned) and of equal size, or come with a rig file that maps thermal into the RGB "
            "image (tools/calibrate_rig.py; register_rgbt_sem_seg(..., rig=...))."
        )
    thermal = normalize_thermal(plane, thermal_16bit_norm, path=thermal_path)
    if rig is not None and warp:
        thermal, _ = warp_thermal(thermal, rig, path=thermal_path)
    return thermal


def read_label(path: str, expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a label image of class ids (PNG, TIFF or BMP) as uint8 H x W (255 = ignore).

    Palette ("P" mode) images are read through their indices (OpenCV would expand the palette to
    colours); a colour label whose three channels are equal is taken as grey. ``expected_shape``
    (H, W), when given, is checked so that a label of another size is reported with its file name.
    JPEG labels are refused before decoding (see ``lossy_label_error``).
    """
    lossy = lossy_label_error(path)
    if lossy:
        raise ValueError(lossy)
    img = read_image(path)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        ch = img[:, :, :3]
        if np.array_equal(ch[:, :, 0], ch[:, :, 1]) and np.array_equal(ch[:, :, 0], ch[:, :, 2]):
            img = ch[:, :, 0]
        else:
            from PIL import Image

            with Image.open(path) as pil:
                if pil.mode != "P":
                    raise ValueError(
                        f"Label {path!r} is a colour image ({_describe(img)}); labels must hold class ids "
                        "(one channel, or a palette PNG). Convert the colours to ids first."
                    )
                img = np.asarray(pil)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim != 2:
        raise ValueError(f"Unsupported label image {path!r}: {_describe(img)}; expected one channel.")
    if img.dtype != np.uint8:
        if img.dtype == np.uint16 and int(img.max(initial=0)) <= 255:
            img = img.astype(np.uint8)  # ids saved as 16-bit: lossless
        else:
            raise ValueError(
                f"Unsupported label dtype in {path!r}: {img.dtype} with values up to {int(img.max())}; "
                "labels must be 8-bit class ids (255 = ignore)."
            )
    if expected_shape is not None and tuple(img.shape) != tuple(expected_shape):
        raise ValueError(
            f"Label {path!r} is {img.shape[1]}x{img.shape[0]} (WxH) but its image is "
            f"{expected_shape[1]}x{expected_shape[0]}; labels must be pixel-aligned with the images."
        )
    return np.ascontiguousarray(img)


def lossy_label_error(path: str) -> str | None:
    """The reason a label file of this name cannot be used, or None: JPEG labels are refused."""
    if os.path.splitext(path)[1].lower() not in LOSSY_LABEL_EXTENSIONS:
        return None
    return (
        f"Label {path!r} is a JPEG: its lossy compression alters pixel values near class borders, "
        "creating ids that were never labelled, so it cannot hold ground truth. Save the labels "
        "losslessly as PNG (or TIFF/BMP) from the original ids."
    )


def check_label_values(label: np.ndarray, num_classes: int, path: str, ignore_label: int = 255) -> None:
    """Raise if ``label`` holds a value outside 0..num_classes-1 other than ``ignore_label``."""
    values = np.unique(label)
    bad = values[(values >= num_classes) & (values != ignore_label)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:20]) + (" ..." if bad.size > 20 else "")
        raise ValueError(
            f"Label {path!r} contains value(s) {shown} outside the classes: allowed are 0..{num_classes - 1} "
            f"and {ignore_label} (ignore). Check MODEL.SEM_SEG_HEAD.NUM_CLASSES / "
            "DATASETS.BACKGROUND_AS_IGNORE against the dataset, or fix the label file."
        )


def remap_background(label: np.ndarray, ignore_label: int = 255) -> np.ndarray:
    """Background as ignore: 0 -> ignore_label, k -> k - 1 for 1 <= k < ignore_label, ignore stays."""
    out = label.astype(np.int64) - 1
    out[label == 0] = ignore_label
    out[label == ignore_label] = ignore_label
    return out.astype(label.dtype)
