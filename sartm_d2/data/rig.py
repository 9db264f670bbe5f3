"""The rig file: how a thermal camera's image maps into the RGB camera's image when the two are not
pixel-aligned (other sizes, fields of view, an offset), and the warp that brings thermal into the RGB
frame. Labels and predictions live in the RGB frame.

A rig is a 3x3 homography ``H`` from thermal pixels to RGB pixels in OpenCV's convention: pixel
centres at integer coordinates, x to the right, y down, ``(x_rgb, y_rgb, 1) ~ H @ (x_t, y_t, 1)``.
It holds exactly for a plane (a calibration board at the working distance) or for a distant scene;
closer objects show the cameras' parallax. The file (JSON, or YAML by the extension ``.yaml`` /
``.yml``) reads::

    {"version": 1,
     "homography": [[1.25, 0.0, 12.3], [0.0, 1.25, -4.1], [0.0, 0.0, 1.0]],
     "rgb_size": [480, 640],        # (H, W) of the RGB images it was made for
     "thermal_size": [384, 512],    # (H, W) of the thermal images
     "method": "ecc",               # how it was estimated: points, checkerboard, circles, ecc, manual
     "residual_px": 0.4,            # its residual in RGB pixels (null: unknown)
     "frame_residuals_px": {"pair_001": 0.3, "pair_002": 0.5}}   # per frame, where it has frames

``tools/calibrate_rig.py`` estimates and writes one (``sartm_d2.data.rig_calibration``).

Invalid pixels. :func:`warp_thermal` returns the thermal image warped into the RGB frame (float32,
the rig's RGB size) with **NaN where the thermal camera does not see the RGB pixel**, and the same
information as a bool validity mask. The NaN-marked image is what ``io.read_rgbt`` returns, so one
float array carries the validity through the mapper's resize / crop / flip (``np.isfinite`` gives
the mask back; bilinear resizing widens the NaN border by about a pixel, which errs on the side of
"not seen"). A pixel is valid when its centre maps into the thermal image's area, the closed
rectangle ``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` of its pixel edges; the thermal values there are
bilinear, with the border pixels replicated for the outer half pixel.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np
import yaml

from ..file_io import atomic_write_text

__all__ = [
    "RIG_EXTENSIONS",
    "RIG_METHODS",
    "RIG_VERSION",
    "Rig",
    "as_rig",
    "check_rig_sizes",
    "corner_error",
    "image_corners",
    "in_rgb_frame",
    "load_rig",
    "pixel_normaliser",
    "save_rig",
    "size_guess_homography",
    "thermal_corners_in_rgb",
    "warp_thermal",
]

RIG_VERSION = 1
RIG_METHODS = ("points", "checkerboard", "circles", "ecc", "manual")
RIG_EXTENSIONS = (".json", ".yaml", ".yml")
# Largest condition number of the homography in normalised image coordinates (both images mapped
# to about [-1, 1]): a camera pair is far below it; a singular or nearly singular matrix above.
MAX_CONDITION = 1e4
# The thermal image must cover at least this fraction of the RGB image.
MIN_COVERAGE = 0.01
_REQUIRED = ("homography", "rgb_size", "thermal_size", "method")
_FIX = (
    "Write it with tools/calibrate_rig.py (or sartm_d2.data.rig.save_rig); a rig file holds "
    '"homography" (3x3, thermal pixel -> RGB pixel), "rgb_size" and "thermal_size" ([H, W]) and "method" '
    f"(one of {', '.join(RIG_METHODS)})."
)


def pixel_normaliser(size: tuple[int, int]) -> np.ndarray:
    """The 3x3 map of an image's pixel coordinates (``size`` = (H, W)) to about [-1, 1], centred:
    homographies compare and condition well there, whatever the image size."""
    h, w = size
    s = max(h, w) / 2.0
    return np.array([[1 / s, 0, -(w - 1) / (2 * s)], [0, 1 / s, -(h - 1) / (2 * s)], [0, 0, 1]])


def image_corners(size: tuple[int, int]) -> np.ndarray:
    """The four outer pixel-edge corners of an image of ``size`` (H, W), clockwise from top-left."""
    h, w = size
    return np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]], np.float64)


def _size(value, what: str, where: str) -> tuple[int, int]:
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    ok = ok and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok:
        raise ValueError(
            f"{where}: {what} must be [H, W], two positive integers, got {value!r}. {_FIX}"
        )
    return int(value[0]), int(value[1])


@dataclass(frozen=True, eq=False)
class Rig:
    """A thermal -> RGB pixel mapping for one camera pair (see the module docstring).

    Checked on construction: a 3x3 finite homography (scaled so that ``H[2, 2] == 1``), well
    conditioned, that maps the whole thermal image in front of the camera (no point at infinity) onto
    at least ``MIN_COVERAGE`` of the RGB image; the sizes as (H, W); a known method. ``path`` (the file
    it came from, if any) only names the file in errors.
    """

    homography: np.ndarray
    rgb_size: tuple[int, int]
    thermal_size: tuple[int, int]
    method: str = "manual"
    residual_px: float | None = None
    frame_residuals_px: Mapping[str, float] = field(default_factory=dict)
    path: str | None = None

    def __post_init__(self):
        where = f"Rig file {self.path!r}" if self.path else "Rig"
        set_ = functools.partial(object.__setattr__, self)
        set_("rgb_size", _size(self.rgb_size, "rgb_size", where))
        set_("thermal_size", _size(self.thermal_size, "thermal_size", where))
        try:
            h = np.array(self.homography, dtype=np.float64)
        except (TypeError, ValueError):
            h = np.zeros(0)
        if h.shape != (3, 3) or not np.isfinite(h).all():
            raise ValueError(
                f"{where}: homography must be a 3x3 matrix of finite numbers, got "
                f"{np.asarray(self.homography, dtype=object).tolist()!r}. {_FIX}"
            )
        if abs(h[2, 2]) < 1e-12:
            raise ValueError(
                f"{where}: homography {h.tolist()} has H[2][2] = 0: it sends thermal pixel (0, 0) "
                "to infinity, so it is not a camera pair's mapping. Re-estimate it with "
                "tools/calibrate_rig.py."
            )
        h = h / h[2, 2]
        h.setflags(write=False)
        set_("homography", h)
        if self.method not in RIG_METHODS:
            raise ValueError(f"{where}: method {self.method!r} is not one of {list(RIG_METHODS)}.")
        frames = dict(self.frame_residuals_px)
        residuals = {"residual_px": self.residual_px, **{f"frame {k!r}": v for k, v in frames.items()}}
        for what, value in residuals.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if value is not None and not (number and math.isfinite(value) and value >= 0):
                raise ValueError(f"{where}: {what} must be a number >= 0 (pixels), got {value!r}.")
        set_("residual_px", None if self.residual_px is None else float(self.residual_px))
        set_("frame_residuals_px", {str(k): float(v) for k, v in frames.items()})
        self._check_geometry(where)

    def _check_geometry(self, where: str) -> None:
        h = self.homography
        normalised = pixel_normaliser(self.rgb_size) @ h @ np.linalg.inv(pixel_normaliser(self.thermal_size))
        cond = np.linalg.cond(normalised)
        if not cond < MAX_CONDITION:
            raise ValueError(
                f"{where}: homography {h.tolist()} is singular or ill-conditioned (condition "
                f"number {cond:.3g} in normalised image coordinates, limit {MAX_CONDITION:g}): it squashes "
                "the thermal image onto a line or a point. Re-estimate it (tools/calibrate_rig.py) from "
                "points that span the image, or check that rgb_size and thermal_size are the images' (H, W)."
            )
        corners = image_corners(self.thermal_size)
        w = corners @ h[2, :2] + 1.0
        if (w <= 1e-6).any():
            raise ValueError(
                f"{where}: homography {h.tolist()} sends part of the thermal image to infinity "
                "(its horizon line crosses the image), which no camera pair does. Re-estimate it with "
                "tools/calibrate_rig.py."
            )
        quad = thermal_corners_in_rgb(self).astype(np.float32)
        rgb_h, rgb_w = self.rgb_size
        rect = image_corners(self.rgb_size).astype(np.float32)
        if cv2.contourArea(quad) <= 0 or not cv2.isContourConvex(quad.reshape(-1, 1, 2)):
            raise ValueError(
                f"{where}: homography {h.tolist()} folds the thermal image (its corners map to "
                f"{quad.round(1).tolist()}, not a convex outline). Re-estimate it with "
                "tools/calibrate_rig.py."
            )
        overlap, _ = cv2.intersectConvexConvex(quad, rect)
        coverage = overlap / float(rgb_h * rgb_w)
        if coverage < MIN_COVERAGE:
            raise ValueError(
                f"{where}: the thermal image ({self.thermal_size[1]}x{self.thermal_size[0]}, WxH) "
                f"covers {100 * coverage:.2f}% of the RGB image ({rgb_w}x{rgb_h}) under homography "
                f"{h.tolist()} (corners at {quad.round(1).tolist()}). The homography must map thermal "
                "pixels to RGB pixels (not the inverse), for these image sizes."
            )

    def __eq__(self, other) -> bool:
        if not isinstance(other, Rig):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def to_dict(self) -> dict:
        """The file's fields (what :func:`save_rig` writes)."""
        return {
            "version": RIG_VERSION,
            "homography": [[float(v) for v in row] for row in self.homography],
            "rgb_size": list(self.rgb_size),
            "thermal_size": list(self.thermal_size),
            "method": self.method,
            "residual_px": self.residual_px,
            "frame_residuals_px": dict(self.frame_residuals_px),
        }

    def replace(self, **changes) -> Rig:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)


def thermal_corners_in_rgb(rig: Rig, homography: np.ndarray | None = None) -> np.ndarray:
    """Where the thermal image's four outer corners land in the RGB image ((4, 2), RGB pixels).

    Two homographies of one pair are compared by these corners (the mean distance is the "corner
    error"), which weighs every part of the image, unlike the matrix entries.
    """
    h = rig.homography if homography is None else np.asarray(homography, np.float64)
    return cv2.perspectiveTransform(image_corners(rig.thermal_size)[None], h)[0]


def corner_error(truth: Rig, homography: np.ndarray) -> float:
    """The corner error of ``homography`` against ``truth``: the mean distance (RGB pixels) of where
    the thermal image's corners land under the two (:func:`thermal_corners_in_rgb`)."""
    diff = thermal_corners_in_rgb(truth, homography) - thermal_corners_in_rgb(truth)
    return float(np.linalg.norm(diff, axis=1).mean())


def size_guess_homography(
    thermal_size: tuple[int, int], rgb_size: tuple[int, int], fov_ratio: float | None = None
) -> np.ndarray:
    """The homography of a pair whose optical axes coincide: the starting guess of a calibration.

    Without ``fov_ratio`` the thermal image is stretched onto the whole RGB image. With it (the
    thermal camera's horizontal field of view over the RGB camera's), the thermal image is scaled by
    the same factor in x and y (square pixels) to ``fov_ratio`` times the RGB width, centred.
    """
    (th, tw), (rh, rw) = thermal_size, rgb_size
    if fov_ratio is None:
        sx, sy = rw / tw, rh / th
    else:
        if not fov_ratio > 0:
            raise ValueError(
                f"fov_ratio must be > 0 (thermal over RGB horizontal field of view), got {fov_ratio}."
            )
        sx = sy = fov_ratio * rw / tw
    # Centre onto centre: pixel centres at integer coordinates, so the centres are (W - 1) / 2.
    return np.array(
        [[sx, 0.0, (rw - 1) / 2 - sx * (tw - 1) / 2], [0.0, sy, (rh - 1) / 2 - sy * (th - 1) / 2], [0, 0, 1]]
    )


# ----------------------------------------------------------------------------- the file
def _parse(data, path: str) -> Rig:
    where = f"Rig file {path!r}"
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} holds {type(data).__name__}, not a mapping of fields. {_FIX}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ValueError(f"{where} has no {', '.join(missing)}. {_FIX}")
    version = data.get("version", RIG_VERSION)
    if version != RIG_VERSION:
        raise ValueError(
            f"{where} has version {version!r}; this sartm_d2 reads version {RIG_VERSION}. Update "
            "sartm_d2, or re-estimate the rig with this version's tools/calibrate_rig.py."
        )
    unknown = sorted(set(data) - {*_REQUIRED, "version", "residual_px", "frame_residuals_px"})
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {unknown} (a typo?). {_FIX}")
    frames = data.get("frame_residuals_px") or {}
    if not isinstance(frames, Mapping):
        raise ValueError(
            f"{where}: frame_residuals_px must map frame names to pixels, got {frames!r}."
        )
    return Rig(
        homography=data["homography"],
        rgb_size=data["rgb_size"],
        thermal_size=data["thermal_size"],
        method=data["method"],
        residual_px=data.get("residual_px"),
        frame_residuals_px=frames,
        path=path,
    )


def _extension(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in RIG_EXTENSIONS:
        raise ValueError(
            f"Rig file {path!r}: the name must end in {', '.join(RIG_EXTENSIONS)} (JSON or YAML)."
        )
    return ext


# path -> ((inode, size, mtime_ns), Rig): a loader that reads one rig per record reads each file once.
_LOADED: dict[str, tuple[tuple[int, int, int], Rig]] = {}


def load_rig(path: str | os.PathLike) -> Rig:
    """Read and check a rig file (JSON, or YAML by extension); every error names the file and the fix.

    A file that did not change since it was last read (same inode, size and modification time; a
    :func:`save_rig` always makes a new inode) is not parsed again: the data loader asks once per image.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Rig file {path!r} not found. Estimate one with tools/calibrate_rig.py (RGB and thermal of "
            "different sizes or fields of view need one), or correct the path (rig= / the record's rig_file)."
        )
    stat = os.stat(path)
    key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    cached = _LOADED.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    ext = _extension(path)
    try:
        with open(path) as f:
            text = f.read()
        data = json.loads(text) if ext == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:  # JSONDecodeError: a ValueError
        raise ValueError(f"Rig file {path!r} cannot be read as {ext[1:].upper()}: {e}. {_FIX}") from e
    rig = _parse(data, path)
    _LOADED[path] = (key, rig)
    return rig


def as_rig(rig: Rig | str | os.PathLike | None) -> Rig | None:
    """``rig`` itself, the rig file it names (:func:`load_rig`), or None: what a ``rig=`` argument takes."""
    return rig if rig is None or isinstance(rig, Rig) else load_rig(rig)


def save_rig(rig: Rig, path: str | os.PathLike) -> str:
    """Write ``rig`` to ``path`` (JSON, or YAML by extension) atomically; returns the path."""
    path = os.fspath(path)
    ext = _extension(path)
    data = rig.to_dict()
    if ext == ".json":
        text = json.dumps(data, indent=1) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    atomic_write_text(text, path)
    return path


# ----------------------------------------------------------------------------- the warp
def check_rig_sizes(rig: Rig, rgb_shape, thermal_shape, rgb_path: str, thermal_path: str) -> None:
    """Raise if a pair is not of the sizes ``rig`` was made for, naming the file, its size and the rig's."""
    _check_size(rig, "RGB", rgb_shape, rgb_path)
    _check_size(rig, "thermal", thermal_shape, thermal_path)


def _check_size(rig: Rig, kind: str, shape, path: str) -> None:
    expected = rig.rgb_size if kind == "RGB" else rig.thermal_size
    if tuple(shape[:2]) != tuple(expected):
        where = f"rig file {rig.path!r}" if rig.path else "the rig"
        raise ValueError(
            f"{kind} image {path!r} is {shape[1]}x{shape[0]} (WxH), but {where} was made for {kind} images "
            f"of {expected[1]}x{expected[0]}. Use the rig of the camera pair that took it, or estimate one "
            "for these sizes with tools/calibrate_rig.py."
        )


@functools.lru_cache(maxsize=8)
def _maps(homography: bytes, rgb_size: tuple[int, int], thermal_size: tuple[int, int]):
    """Per RGB pixel: the thermal coordinates it sees (float32 maps for cv2.remap) and whether it sees any."""
    h = np.frombuffer(homography, np.float64).reshape(3, 3)
    inv = np.linalg.inv(h)
    rh, rw = rgb_size
    th, tw = thermal_size
    ys, xs = np.mgrid[0:rh, 0:rw].astype(np.float64)
    den = inv[2, 0] * xs + inv[2, 1] * ys + inv[2, 2]
    mx = (inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]) / den
    my = (inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]) / den
    eps = 1e-6  # exact half-pixel edges (e.g. a translation by 0.5) stay inside despite rounding
    valid = (den > 0) & (mx >= -0.5 - eps) & (mx <= tw - 0.5 + eps)
    valid &= (my >= -0.5 - eps) & (my <= th - 0.5 + eps)
    mx[~valid] = my[~valid] = 0.0  # never read (NaN there), but remap needs finite coordinates
    maps = (mx.astype(np.float32), my.astype(np.float32))
    for a in (*maps, valid):
        a.setflags(write=False)
    return maps, valid


def warp_thermal(thermal: np.ndarray, rig: Rig, *, path: str = "<array>") -> tuple[np.ndarray, np.ndarray]:
    """The thermal image in the RGB frame, and where the thermal camera sees the RGB image.

    Args:
        thermal: H x W thermal image of the rig's thermal size (any real dtype; read as float32).
        rig: the camera pair's rig.
        path: the image's file, named in the size error.

    Returns:
        (float32 H x W at the rig's RGB size with NaN where not seen, bool H x W validity mask), see
        the module docstring. The per-pixel coordinates are computed once per rig and kept.
    """
    if thermal.ndim != 2:
        raise ValueError(f"warp_thermal: thermal image {path!r} is {thermal.shape}, not H x W (one channel).")
    _check_size(rig, "thermal", thermal.shape, path)
    (mx, my), valid = _maps(rig.homography.tobytes(), rig.rgb_size, rig.thermal_size)
    warped = cv2.remap(
        thermal.astype(np.float32, copy=False), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    warped[~valid] = np.nan
    return warped, valid.copy()


def in_rgb_frame(rgb: np.ndarray | None, thermal: np.ndarray | None, rig: Rig | None, *,
                 where: str = "<array>") -> tuple[np.ndarray | None, np.ndarray | None]:
    """A pair as the model takes it, in the RGB frame: with ``rig``, the thermal image (of its thermal
    size) warped by :func:`warp_thermal` (NaN where the thermal camera does not see) after both sizes
    are checked (errors name ``where``); without a rig, or without a thermal image, both unchanged."""
    if rig is None or thermal is None:
        return rgb, thermal
    thermal = np.asarray(thermal)
    if rgb is not None:
        check_rig_sizes(rig, rgb.shape, thermal.shape, f"{where} (rgb)", f"{where} (thermal)")
    return rgb, warp_thermal(thermal, rig, path=f"{where} (thermal)")[0]
