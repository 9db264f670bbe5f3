"""Estimating a rig (``sartm_d2.data.rig``) and measuring how well a pair is aligned.

Three ways to a rig, all refusing (:class:`CalibrationError`, nothing written) when the estimate
cannot be trusted, each with a residual in RGB pixels:

- :func:`calibrate_from_points`: clicked pixel pairs (thermal x, y -> RGB x, y), at least 4;
  ``cv2.findHomography``, with RANSAC from ``RANSAC_MIN_PAIRS`` pairs on (a mis-click is dropped and
  named). Residual: each pair's reprojection error.
- :func:`calibrate_from_pattern`: a heated checkerboard or circle grid seen in both images, one or
  several frames (``cv2.findChessboardCorners`` / ``cv2.findCirclesGrid``, sub-pixel corners).
  Residual: each frame's mean reprojection error.
- :func:`calibrate_from_scenes`: a few ordinary unlabelled pairs of one rig. It maximises the
  correlation of the two cameras' edge maps (local-contrast-normalised gradient magnitudes, which
  both modalities share where objects have borders, whatever their colour or temperature) over a
  homography, jointly over all frames: the enhanced-correlation (ECC) criterion, solved by
  Gauss-Newton coarse to fine on an image pyramid (translation, then affine, then the full
  homography), from a size-and-field-of-view guess or from point pairs. One joint estimate uses every
  frame's edges at once; each frame is then checked alone (:func:`alignment_offset`) and frames whose
  edges stay offset disagree with the others.

:func:`alignment_offset` is also what ``datasets/check.py`` measures per pair: the translation left
between the thermal edges (under the rig, or as they are) and the RGB edges, found by a global search
at a coarse level (``cv2.matchTemplate``), refined by ``cv2.findTransformECC`` (``MOTION_TRANSLATION``)
coarse to fine; None where it cannot be told rather than a guess.

A homography relates the two images exactly only for a plane or a distant scene: place the board at
the working distance, and use scenes whose content is mostly far (streets, not a hand in front of the
lens).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .rig import Rig, image_corners, pixel_normaliser, size_guess_homography, warp_thermal

__all__ = [
    "Alignment",
    "Calibration",
    "CalibrationError",
    "PATTERN_KINDS",
    "alignment_offset",
    "calibrate_from_pattern",
    "calibrate_from_points",
    "calibrate_from_scenes",
    "detect_pattern",
    "edge_fraction",
    "edge_map",
    "read_point_pairs",
]

RANSAC_MIN_PAIRS = 8  # below this, every pair is used (RANSAC needs spare pairs to vote a mis-click out)
PATTERN_KINDS = ("checkerboard", "circles")
# A pixel is an edge pixel where its gradient magnitude exceeds EDGE_FACTOR x the image's median
# magnitude (the noise level) and EDGE_FLOOR grey levels per pixel: Gaussian noise alone exceeds 4x
# its median magnitude at about 1e-5 of the pixels (the Rayleigh tail), so a flat scene has none.
EDGE_FACTOR = 4.0
EDGE_FLOOR = 1.0
MIN_EDGE_FRACTION = 0.002
# alignment_offset's default correlation floor: unrelated edge maps of CHANCE_PIXELS pixels reach
# about CHANCE_CORRELATION at their best shift, and chance falls as 1 / sqrt(pixels).
CHANCE_CORRELATION = 0.16
CHANCE_PIXELS = 20000
# alignment_offset: the best shift's correlation over the best one more than 3 pixels away (coarse level).
MIN_PEAK_RATIO = 1.1
# The automatic mode refuses when the frames' edge maps correlate less than this at its estimate.
MIN_SCENE_CORRELATION = 0.02
# The coarsest pyramid level keeps about this many pixels on the thermal image's short side.
_COARSEST_SIDE = 48
_CSV_COLUMNS = ("x_thermal", "y_thermal", "x_rgb", "y_rgb")


class CalibrationError(ValueError):
    """An estimate refused as unreliable; the message says why and what to change."""


@dataclass(frozen=True)
class Calibration:
    """A rig estimate and its evidence.

    Attributes:
        rig: the estimate (``rig.frame_residuals_px`` per frame, ``rig.residual_px`` their mean).
        residuals_px: per point pair (points) or per frame (pattern, scenes), in RGB pixels.
        notes: what a user should know besides (pairs dropped as outliers, frames skipped, ...).
    """

    rig: Rig
    residuals_px: dict[str, float]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Alignment:
    """The translation left between a pair's thermal edges and RGB edges (RGB pixels).

    ``dx, dy``: thermal content sits at ``(x + dx, y + dy)`` where the RGB content is at ``(x, y)``;
    ``correlation``: the edge maps' correlation coefficient after the shift (0: unrelated, 1: equal).
    """

    dx: float
    dy: float
    correlation: float

    @property
    def offset(self) -> float:
        return math.hypot(self.dx, self.dy)


# ----------------------------------------------------------------------------- edges
def _grey(image: np.ndarray) -> np.ndarray:
    g = image.astype(np.float32, copy=False)
    return cv2.cvtColor(g, cv2.COLOR_RGB2GRAY) if g.ndim == 3 else g


def _gradient_magnitude(image: np.ndarray, sigma: float) -> np.ndarray:
    g = cv2.GaussianBlur(_grey(image), (0, 0), sigma)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8.0  # Sobel's weights sum to 8: grey levels per pixel
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    return cv2.magnitude(gx, gy)


def edge_fraction(image: np.ndarray, valid: np.ndarray | None = None) -> float:
    """The fraction of (valid) pixels on an edge (see ``EDGE_FACTOR``): near 0 for a flat scene."""
    m = _gradient_magnitude(_filled(image, valid), 1.0)
    if valid is not None:
        m = m[_inner(valid, 3)]
    if m.size == 0:
        return 0.0
    return float((m > max(EDGE_FACTOR * float(np.median(m)), EDGE_FLOOR)).mean())


def edge_map(image: np.ndarray, sigma: float = 1.0, valid: np.ndarray | None = None) -> np.ndarray:
    """Gradient magnitude over its local mean (float32): the edges that RGB and thermal share.

    Dividing by the local mean (Gaussian, 8 pixels) gives a faint edge of a dark night image the
    weight of a strong one, so neither camera's contrast decides alone where the edges are.
    ``valid`` (bool): the pixels to use; the others are filled with the mean first (no false border).
    """
    m = _gradient_magnitude(_filled(image, valid), sigma)
    local = cv2.GaussianBlur(m, (0, 0), 8.0)
    return m / (local + 1e-3 * float(m.mean()) + 1e-6)


def _filled(image: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """The image with invalid (or NaN) pixels set to the valid pixels' mean."""
    image = _grey(image)
    bad = ~np.isfinite(image) if valid is None else ~valid | ~np.isfinite(image)
    if not bad.any():
        return image
    out = image.copy()
    out[bad] = float(image[~bad].mean()) if (~bad).any() else 0.0
    return out


def _inner(valid: np.ndarray, radius: int) -> np.ndarray:
    """``valid`` shrunk by ``radius`` pixels: away from the border that filling creates."""
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.erode(valid.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1) > 0


def _scale_matrix(s: float) -> np.ndarray:
    """Pixel coordinates of an image resized by ``s`` (pixel centres at integers)."""
    return np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1]])


def _resize(image: np.ndarray, s: float) -> tuple[np.ndarray, float]:
    """``image`` resized by about ``s`` (area averaging when shrinking); the exact factor used (x)."""
    if abs(s - 1.0) < 1e-9:
        return image, 1.0
    h, w = image.shape[:2]
    size = (max(int(round(w * s)), 1), max(int(round(h * s)), 1))
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return out, size[0] / w


# ----------------------------------------------------------------------------- alignment (check)
def alignment_offset(
    rgb: np.ndarray,
    thermal: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    max_shift: float = 32.0,
    max_side: int = 640,
    min_correlation: float | None = None,
) -> Alignment | None:
    """How far a pair's thermal edges sit from its RGB edges, both in the RGB frame (see
    :class:`Alignment`); None when it cannot be told.

    The two edge maps (:func:`edge_map`) are matched over every shift up to ``max_shift`` at a
    coarse level (``cv2.matchTemplate``: a global search, no local optimum), then the translation is
    refined coarse to fine by ``cv2.findTransformECC`` (``MOTION_TRANSLATION``).

    Args:
        rgb: H x W x 3 (or H x W) RGB image.
        thermal: H x W thermal image in the RGB frame (``io.read_rgbt``'s, NaN where not seen).
        valid: where the thermal image is valid (default: where it is finite).
        max_shift: the largest offset looked for (RGB pixels), at most 15% of the short side.
        max_side: the pair is measured at most at this long side (speed); offsets are in RGB pixels.
        min_correlation: a shift whose edge correlation stays below it is chance, not a match: None.
            Default: the level unrelated edges reach by chance, which falls with the image's pixel
            count (``CHANCE_CORRELATION`` at ``CHANCE_PIXELS``, as 1 / sqrt(pixels), at least 0.05).

    None also for a flat image (no edges), one under 32 pixels a side, a thermal image valid on under
    a tenth of the RGB image, or no convergence.
    """
    if thermal.shape[:2] != rgb.shape[:2]:
        raise ValueError(f"alignment_offset: rgb {rgb.shape[:2]} and thermal {thermal.shape[:2]} differ.")
    valid = np.isfinite(thermal) if valid is None else valid & np.isfinite(thermal)
    h, w = rgb.shape[:2]
    if min(h, w) < 32 or valid.mean() < 0.1:
        return None
    if edge_fraction(rgb) < MIN_EDGE_FRACTION or edge_fraction(thermal, valid) < MIN_EDGE_FRACTION:
        return None
    base = min(1.0, max_side / max(h, w))
    if min_correlation is None:
        min_correlation = max(0.05, CHANCE_CORRELATION * math.sqrt(CHANCE_PIXELS / (h * w * base * base)))
    max_shift = min(max_shift, 0.15 * min(h, w))
    filled = _filled(thermal, valid)
    # The coarsest level: the largest shift is about 8 pixels there, and 48 pixels are left a side.
    levels = max(0, min(int(math.ceil(math.log2(max(max_shift * base, 1.0) / 8.0))),
                        int(math.log2(min(h, w) * base / 48.0))))
    r, fx = _resize(rgb, base * 0.5**levels)
    t, _ = _resize(filled, base * 0.5**levels)
    margin = int(math.ceil(max_shift * fx)) + 1
    scores = cv2.matchTemplate(edge_map(r), edge_map(t)[margin:-margin, margin:-margin], cv2.TM_CCOEFF_NORMED)
    _, peak, _, (x, y) = cv2.minMaxLoc(scores)
    # The best shift must stand out: another as good a few pixels away means the edges run along one
    # direction only (a horizon) or repeat, and the offset along it cannot be told.
    others = scores.copy()
    cv2.circle(others, (x, y), 3, -1.0, -1)
    if peak < MIN_PEAK_RATIO * max(float(others.max()), 1e-6):
        return None
    # The thermal crop starting at `margin` matched the RGB map at (x, y): its content sits margin - x right.
    shift = np.array([margin - x, margin - y], np.float64) / fx
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-4)
    cc = 0.0
    for level in range(levels, -1, -1):
        r, fx = _resize(rgb, base * 0.5**level)
        t, _ = _resize(filled, base * 0.5**level)
        v, _ = _resize(valid.astype(np.uint8), base * 0.5**level)
        mask = _inner(v > 0, 3).astype(np.uint8)
        start = np.array([[1, 0, shift[0] * fx], [0, 1, shift[1] * fx]], np.float32)
        try:
            cc, warp = cv2.findTransformECC(edge_map(r), edge_map(t), start.copy(), cv2.MOTION_TRANSLATION,
                                            criteria, mask, 1)
        except cv2.error:  # OpenCV's "did not converge": the edges do not agree near this shift
            return None
        if np.abs(warp[:, 2] - start[:, 2]).max() > 3:  # a refinement, not a jump: a flat optimum
            return None
        shift = warp[:, 2].astype(np.float64) / fx
    if not cc >= min_correlation or np.hypot(*shift) > max_shift:
        return None
    return Alignment(float(shift[0]), float(shift[1]), float(cc))


# ----------------------------------------------------------------------------- from points
def read_point_pairs(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Clicked pixel pairs from a CSV file: (thermal xy (N, 2), RGB xy (N, 2), frame of each pair).

    A header names the columns ``x_thermal, y_thermal, x_rgb, y_rgb`` (any order) and optionally
    ``frame`` (pairs clicked in several image pairs of one rig); coordinates are pixels, pixel centres
    at integers (what an image viewer shows at the pixel, minus nothing).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Point-pair file {path!r} not found.")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
        header = [] if not rows else list(rows[0].keys())
    missing = [c for c in _CSV_COLUMNS if c not in header]
    if missing:
        raise ValueError(
            f"Point-pair file {path!r}: no column(s) {missing} (header {header}). The first line must name "
            f"the columns {', '.join(_CSV_COLUMNS)}[, frame]; one clicked pair per line."
        )
    thermal, rgb, frames = [], [], []
    for line, row in enumerate(rows, start=2):
        try:
            values = [float(row[c]) for c in _CSV_COLUMNS]
        except (TypeError, ValueError):
            raise ValueError(
                f"Point-pair file {path!r}, line {line}: {dict(row)} has a coordinate that is not a number."
            ) from None
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"Point-pair file {path!r}, line {line}: {dict(row)} is not finite.")
        thermal.append(values[:2])
        rgb.append(values[2:])
        frames.append(str(row.get("frame") or "points"))
    return np.array(thermal, np.float64).reshape(-1, 2), np.array(rgb, np.float64).reshape(-1, 2), frames


def _spread(points: np.ndarray) -> float:
    """The smaller principal extent of a point set over the larger (0: on a line or a point)."""
    centred = points - points.mean(0)
    s = np.linalg.svd(centred, compute_uv=False)
    return float(s[-1] / s[0]) if s[0] > 0 else 0.0


def _listing(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f} px" for k, v in values.items())


def _make_rig(h, rgb_size, thermal_size, method, residuals: dict[str, float]) -> Rig:
    try:
        mean = float(np.mean(list(residuals.values())))
        return Rig(h, rgb_size, thermal_size, method, residual_px=mean, frame_residuals_px=residuals)
    except ValueError as e:
        raise CalibrationError(f"The {method} estimate is degenerate: {e}") from e


def calibrate_from_points(
    thermal_xy,
    rgb_xy,
    *,
    thermal_size: tuple[int, int],
    rgb_size: tuple[int, int],
    frames: Sequence[str] | None = None,
    ransac_px: float = 5.0,
    max_residual_px: float = 3.0,
) -> Calibration:
    """A rig from clicked pixel pairs: ``thermal_xy[i]`` in the thermal image is ``rgb_xy[i]`` in RGB.

    From ``RANSAC_MIN_PAIRS`` pairs on, RANSAC (``ransac_px``, RGB pixels) leaves out pairs that
    disagree with the others (mis-clicks, named "pair N", 1-based, in the notes); the homography is
    then fitted to the rest. ``frames``: the image pair each point pair was clicked in (the rig's
    residual per frame). ``residuals_px``: each pair's reprojection error. Refuses: fewer than 4
    pairs, pairs (nearly) on a line, fewer than half agreeing, a degenerate homography, or a mean
    error of the kept pairs above ``max_residual_px``.
    """
    src = np.asarray(thermal_xy, np.float64).reshape(-1, 2)
    dst = np.asarray(rgb_xy, np.float64).reshape(-1, 2)
    n = len(src)
    if len(dst) != n:
        raise CalibrationError(f"{n} thermal points but {len(dst)} RGB points: they come in pairs.")
    frames = ["points"] * n if frames is None else [str(f) for f in frames]
    if n < 4:
        raise CalibrationError(
            f"{n} point pair(s): a homography needs at least 4, better {RANSAC_MIN_PAIRS} or more spread "
            "over the whole image (then mis-clicks are found and the residual means something)."
        )
    if min(_spread(src), _spread(dst)) < 0.05:
        raise CalibrationError(
            "The point pairs lie (nearly) on a line, which does not fix a homography: click points spread "
            "over the whole image, not along one edge."
        )
    notes = []
    kept = np.ones(n, bool)
    if n >= RANSAC_MIN_PAIRS:
        _, mask = cv2.findHomography(src, dst, cv2.RANSAC, ransac_px, maxIters=5000, confidence=0.999)
        kept = np.zeros(n, bool) if mask is None else mask.ravel().astype(bool)
        if kept.sum() < max(4, n // 2 + 1):
            raise CalibrationError(
                f"Only {int(kept.sum())} of {n} point pairs agree on one homography (RANSAC, {ransac_px} "
                "px): the pairs are mixed up, or were clicked in images of different rigs."
            )
        if not kept.all():
            notes.append(
                f"{int((~kept).sum())} pair(s) disagree with the others and were left out (mis-clicks?): "
                + ", ".join(f"pair {i + 1}" for i in np.flatnonzero(~kept))
            )
    elif n == 4:
        notes.append(
            "4 pairs fit a homography exactly: the residual is 0 by construction and checks nothing; "
            f"click {RANSAC_MIN_PAIRS} or more."
        )
    h, _ = cv2.findHomography(src[kept], dst[kept], 0)
    if h is None:
        raise CalibrationError("cv2.findHomography found no homography for these pairs (degenerate layout).")
    err = np.linalg.norm(cv2.perspectiveTransform(src[None], h)[0] - dst, axis=1)
    per_frame = {}
    for f in dict.fromkeys(frames):
        mine = np.array([g == f for g in frames]) & kept
        if mine.any():
            per_frame[f] = float(err[mine].mean())
    rig = _make_rig(h, rgb_size, thermal_size, "points", per_frame)
    mean = float(err[kept].mean())
    if mean > max_residual_px:
        raise CalibrationError(
            f"Mean reprojection error {mean:.2f} px over {int(kept.sum())} pairs exceeds {max_residual_px} "
            "px (--max-residual): re-click the pairs with the largest errors; or the scene is too close "
            "for one homography (parallax)."
        )
    residuals = {f"pair {i + 1}": float(e) for i, e in enumerate(err)}
    return Calibration(rig.replace(residual_px=mean), residuals, tuple(notes))


# ----------------------------------------------------------------------------- from a board
def _to_uint8(image: np.ndarray) -> np.ndarray:
    g = _grey(image)
    lo, hi = np.percentile(g, [0.5, 99.5])
    return np.clip((g - lo) * (255.0 / max(hi - lo, 1e-6)), 0, 255).astype(np.uint8)


def detect_pattern(
    image: np.ndarray, pattern: tuple[int, int], kind: str = "checkerboard"
) -> np.ndarray | None:
    """The pattern's points in ``image`` ((N, 2) float64, sub-pixel), or None when it is not found.

    ``pattern``: (columns, rows) of inner corners (checkerboard) or of circles (symmetric grid).
    Either polarity is accepted (a heated board shows its dark squares bright in thermal).
    """
    if kind not in PATTERN_KINDS:
        raise ValueError(f"Pattern kind must be one of {PATTERN_KINDS}, got {kind!r}.")
    grey = _to_uint8(image)
    pattern = (int(pattern[0]), int(pattern[1]))
    for candidate in (grey, 255 - grey):
        if kind == "checkerboard":
            flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
            found, pts = cv2.findChessboardCorners(candidate, pattern, flags=flags)
            if found:
                pts = pts.reshape(-1, 2).astype(np.float32)
                grid = pts.reshape(pattern[1], pattern[0], 2)
                step = float(np.linalg.norm(np.diff(grid, axis=1), axis=2).min())  # square size, pixels
                win = int(np.clip(step / 4, 2, 11))
                criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-3)
                pts = cv2.cornerSubPix(candidate, pts.reshape(-1, 1, 2), (win, win), (-1, -1), criteria)
                return pts.reshape(-1, 2).astype(np.float64)
        else:
            found, pts = cv2.findCirclesGrid(candidate, pattern, flags=cv2.CALIB_CB_SYMMETRIC_GRID)
            if found:  # blob centroids: already sub-pixel
                return pts.reshape(-1, 2).astype(np.float64)
    return None


def _orderings(pattern: tuple[int, int]) -> list[np.ndarray]:
    """Index orders under which a detected grid may come out (the detector's start corner)."""
    cols, rows = pattern
    grid = np.arange(cols * rows).reshape(rows, cols)
    out = [grid, grid[::-1, ::-1]]
    if cols == rows:
        out += [np.rot90(grid, 1), np.rot90(grid, 3)]
    return [g.ravel() for g in out]


def calibrate_from_pattern(
    frames: Sequence[tuple[str, np.ndarray, np.ndarray]],
    pattern: tuple[int, int],
    *,
    kind: str = "checkerboard",
    max_residual_px: float = 2.0,
) -> Calibration:
    """A rig from a calibration board seen by both cameras: ``frames`` of (name, thermal, RGB).

    The board's points give the pairs; a frame where either camera misses the board is skipped (and
    noted). A grid detected from another start corner in one camera is matched to the other by the
    order that keeps the two cameras upright (closest to the size guess: a rig turns the thermal
    camera by far less than 90 degrees). Refuses when no frame shows the board in both images, the
    homography is degenerate, or a frame's mean reprojection error exceeds ``max_residual_px`` (the
    board moved between the two exposures, or a detection is wrong).
    """
    sizes = {(t.shape[:2], r.shape[:2]) for _, t, r in frames}
    if len(sizes) != 1:
        raise CalibrationError(f"The frames have different image sizes {sorted(sizes)}: one rig, one size.")
    ((thermal_size, rgb_size),) = sizes
    guess = size_guess_homography(thermal_size, rgb_size)
    corners = image_corners(thermal_size)[None]
    src, dst, owner, notes = [], [], [], []
    for name, thermal, rgb in frames:
        pt = detect_pattern(thermal, pattern, kind)
        pr = detect_pattern(rgb, pattern, kind)
        if pt is None or pr is None:
            missed = " and ".join(k for k, p in (("thermal", pt), ("RGB", pr)) if p is None)
            notes.append(f"{name}: no {pattern[0]}x{pattern[1]} {kind} found in the {missed} image; skipped.")
            continue
        best = None
        for order in _orderings(pattern):
            h, _ = cv2.findHomography(pt[order], pr, 0)
            if h is None:
                continue
            turn = np.abs(cv2.perspectiveTransform(corners, h) - cv2.perspectiveTransform(corners, guess))
            turn = float(turn.mean())
            if best is None or turn < best[0]:
                best = (turn, order)
        if best is None:
            notes.append(f"{name}: the {kind} points fit no homography; skipped.")
            continue
        src.append(pt[best[1]])
        dst.append(pr)
        owner.append(name)
    if not src:
        raise CalibrationError(
            f"No frame shows the {pattern[0]}x{pattern[1]} {kind} in both images. Check --pattern (inner "
            "corners per row and column for a checkerboard, circles for a grid), heat the board so that "
            "it shows in thermal, and fill a good part of both images with it."
            + "".join("\n" + n for n in notes)
        )
    h, _ = cv2.findHomography(np.concatenate(src), np.concatenate(dst), 0)
    if h is None:
        raise CalibrationError(f"cv2.findHomography found no homography for the {kind} points.")
    residuals = {
        name: float(np.linalg.norm(cv2.perspectiveTransform(s[None], h)[0] - d, axis=1).mean())
        for name, s, d in zip(owner, src, dst)
    }
    rig = _make_rig(h, rgb_size, thermal_size, kind, residuals)
    bad = {k: v for k, v in residuals.items() if v > max_residual_px}
    if bad:
        raise CalibrationError(
            f"Frame(s) whose board points miss the joint homography by more than {max_residual_px} px "
            f"(--max-residual): {_listing(bad)}. The board moved between the two exposures, it is too "
            "close (parallax), or a detection is wrong: leave those frames out."
        )
    return Calibration(rig, residuals, tuple(notes))


# ----------------------------------------------------------------------------- from scenes (ECC)
_MODELS = {"translation": [2, 5], "affine": [0, 1, 2, 3, 4, 5], "homography": list(range(8))}


def _schedule(levels: int) -> list[tuple[int, str]]:
    """(level, motion model) from coarse to fine: translation and affine first, the homography last."""
    out = [(levels, "translation"), (levels, "affine")]
    for level in range(levels, -1, -1):
        out.append((level, "affine" if level > 1 else "homography"))
    return out


class _Level:
    """The frames' edge maps at one pyramid level (thermal: the templates, RGB: the images warped onto
    them) and the joint Gauss-Newton linearisation of their summed correlation."""

    def __init__(self, frames, st: float, sr: float):
        self.templates, self.inputs = [], []
        for _, thermal, rgb in frames:
            t, self.fx_t = _resize(thermal, st)
            r, self.fx_r = _resize(rgb, sr)
            e = edge_map(t).astype(np.float64).ravel()
            self.templates.append((e - e.mean()) / (e.std() + 1e-12))
            self.inputs.append(edge_map(r))
        self.ht, self.wt = t.shape[:2]
        self.hr, self.wr = r.shape[:2]
        ys, xs = np.mgrid[0 : self.ht, 0 : self.wt].astype(np.float64)
        self.grid = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
        self.norm = pixel_normaliser((self.ht, self.wt))
        self.half = 1.0 / self.norm[0, 0]  # pixels per normalised unit
        u, v, _ = self.norm @ self.grid
        zero, one = np.zeros_like(u), np.ones_like(u)
        # d(warped x, y) / d(parameters) at the identity, in normalised thermal coordinates.
        self.dx = np.stack([u, v, one, zero, zero, zero, -u * u, -u * v], 1)
        self.dy = np.stack([zero, zero, zero, u, v, one, -u * v, -v * v], 1)

    def to_level(self, h: np.ndarray) -> np.ndarray:
        w = _scale_matrix(self.fx_r) @ h @ np.linalg.inv(_scale_matrix(self.fx_t))
        return w / w[2, 2]

    def from_level(self, w: np.ndarray) -> np.ndarray:
        h = np.linalg.inv(_scale_matrix(self.fx_r)) @ w @ _scale_matrix(self.fx_t)
        return h / h[2, 2]

    def linearise(self, w: np.ndarray, model: str) -> tuple[list[float], np.ndarray, np.ndarray] | None:
        """At warp ``w``: (ECC per frame, normal matrix, gradient) of the frames' summed correlation.

        Every frame counts alike, whatever its valid area. None when under a fifth of the thermal
        image maps into the RGB image (the estimate left it).
        """
        idx = _MODELS[model]
        q = w @ self.grid
        mx = (q[0] / q[2]).reshape(self.ht, self.wt).astype(np.float32)
        my = (q[1] / q[2]).reshape(self.ht, self.wt).astype(np.float32)
        valid = (q[2] > 0) & (mx.ravel() >= 0) & (mx.ravel() <= self.wr - 1)
        valid &= (my.ravel() >= 0) & (my.ravel() <= self.hr - 1)
        if valid.sum() < 0.2 * valid.size:
            return None
        a_mat = np.zeros((len(idx), len(idx)))
        b_vec = np.zeros(len(idx))
        ccs = []
        dx, dy = self.dx[valid][:, idx], self.dy[valid][:, idx]
        for t, image in zip(self.templates, self.inputs):
            warped = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            gx = (cv2.Sobel(warped, cv2.CV_32F, 1, 0, ksize=3) / 8.0).ravel()[valid]
            gy = (cv2.Sobel(warped, cv2.CV_32F, 0, 1, ksize=3) / 8.0).ravel()[valid]
            tv = t[valid]
            tv = (tv - tv.mean()) / (tv.std() + 1e-12)
            iv = warped.ravel()[valid].astype(np.float64)
            std = iv.std() + 1e-12
            iz = (iv - iv.mean()) / std
            rho = float(tv @ iz) / len(tv)
            ccs.append(rho)
            # Linearised residual of tv ~ rho * iz: d(iz)/dp = image gradient x d(x, y)/dp / std.
            jac = (gx[:, None] * dx + gy[:, None] * dy) * (rho * self.half / std)
            a_mat += jac.T @ jac / len(tv)
            b_vec += jac.T @ (tv - rho * iz) / len(tv)
        return ccs, a_mat, b_vec

    def update(self, w: np.ndarray, dp: np.ndarray, model: str) -> tuple[np.ndarray, float]:
        """``w`` composed with the step ``dp`` (in normalised thermal coordinates); how far it moved
        the thermal image's corners (level pixels)."""
        p = np.zeros(8)
        p[_MODELS[model]] = dp
        delta = np.array([[1 + p[0], p[1], p[2]], [p[3], 1 + p[4], p[5]], [p[6], p[7], 1.0]])
        new = w @ np.linalg.inv(self.norm) @ delta @ self.norm
        new = new / new[2, 2]
        corners = image_corners((self.ht, self.wt))[None]
        moved = np.abs(cv2.perspectiveTransform(corners, new) - cv2.perspectiveTransform(corners, w)).max()
        return new, float(moved)


def _maximise(lvl: _Level, w: np.ndarray, model: str, iterations: int, tolerance_px: float):
    """Levenberg-Marquardt on the summed ECC: a step is kept only if it raises the correlation, else
    the damping grows. Converged when a kept step moves the corners by under ``tolerance_px`` or no
    step raises the correlation any more (a maximum); refuses when the iterations run out first."""
    state = lvl.linearise(w, model)
    if state is None:
        raise CalibrationError(_LEFT_IMAGE)
    damping = 1e-3
    for _ in range(iterations):
        ccs, a_mat, b_vec = state
        dp = np.linalg.solve(a_mat + damping * np.diag(np.diag(a_mat) + 1e-12), b_vec)
        new, moved = lvl.update(w, dp, model)
        trial = lvl.linearise(new, model) if np.isfinite(new).all() else None
        if trial is not None and sum(trial[0]) >= sum(ccs):
            w, state, damping = new, trial, max(damping / 3, 1e-6)
            if moved < tolerance_px:
                return w, state[0]
        else:
            damping *= 4
            if damping > 1e4:  # no step in any direction raises the correlation: a maximum
                return w, ccs
    raise CalibrationError(
        f"The edge alignment (ECC) did not converge in {iterations} steps at a {lvl.wt}x{lvl.ht} pyramid "
        "level (--iterations). Use more frames with clear edges in both cameras, or start from clicked "
        "points (--init-points)."
    )


_LEFT_IMAGE = (
    "The estimate left the RGB image (under a fifth of the thermal image maps into it): the starting guess "
    "is too far off. Give --fov-ratio, or start from clicked points (--init-points)."
)


def calibrate_from_scenes(
    frames: Sequence[tuple[str, np.ndarray, np.ndarray]],
    *,
    init: np.ndarray | None = None,
    fov_ratio: float | None = None,
    min_frames: int = 3,
    max_frame_offset_px: float = 1.5,
    iterations: int = 100,
    tolerance_px: float = 0.01,
) -> Calibration:
    """A rig from ordinary pairs of one rig (no board): ``frames`` of (name, thermal, RGB).

    Args:
        frames: unlabelled, synchronised pairs of varied scenes with edges in both cameras (streets,
            buildings, people; not a flat wall or the sky), all of one image size per camera.
        init: the starting homography (e.g. from a few clicked points); default: the size guess
            (``rig.size_guess_homography`` with ``fov_ratio``). The estimate converges from about a
            tenth of the image away.
        min_frames: fewer usable frames (with edges in both images) are refused: one frame's edges
            fix a homography poorly, and frames can only be checked against each other.
        max_frame_offset_px: a frame whose edges stay offset by more (RGB pixels) after the joint
            estimate disagrees with the others (not synchronised, the mount moved): refused, named.
        iterations, tolerance_px: Gauss-Newton steps per level, and the corner movement (level
            pixels) below which a level has converged.

    The residual of each frame is its own remaining offset (:func:`alignment_offset`).
    """
    frames = list(frames)
    if not frames:
        raise CalibrationError("No frames given.")
    sizes = {(t.shape[:2], r.shape[:2]) for _, t, r in frames}
    if len(sizes) > 1:
        raise CalibrationError(f"The frames have different image sizes {sorted(sizes)}: one rig, one size.")
    ((thermal_size, rgb_size),) = sizes
    notes, usable = [], []
    for name, thermal, rgb in frames:
        images = (("thermal", thermal), ("RGB", rgb))
        flat = [k for k, img in images if edge_fraction(img) < MIN_EDGE_FRACTION]
        if flat:
            notes.append(f"{name}: the {' and '.join(flat)} image is flat (no edges); skipped.")
        else:
            usable.append((name, thermal, rgb))
    if len(usable) < min_frames:
        flat = f" with edges in both images ({len(frames) - len(usable)} flat)" if notes else ""
        raise CalibrationError(
            f"{len(usable)} frame(s) of {len(frames)}{flat}; at least {min_frames} are needed "
            "(--min-frames): one frame's edges fix a homography poorly, and frames are checked against "
            "each other. Use pairs of varied scenes with object borders that both cameras see (a flat "
            "wall, fog or the sky has none)." + "".join("\n" + n for n in notes)
        )
    h = size_guess_homography(thermal_size, rgb_size, fov_ratio) if init is None else np.asarray(init, float)
    h = h / h[2, 2]
    s = math.sqrt(abs(np.linalg.det(h[:2, :2])))  # RGB pixels per thermal pixel
    # Work at the coarser camera's resolution: the finer image is shrunk to match it.
    st0, sr0 = min(1.0, s), min(1.0, 1.0 / s)
    levels = max(0, int(math.log2(min(thermal_size) * st0 / _COARSEST_SIDE)))
    lvl, lvl_level = None, None
    for level, model in _schedule(levels):
        if level != lvl_level:
            lvl, lvl_level = _Level(usable, st0 * 0.5**level, sr0 * 0.5**level), level
        w, ccs = _maximise(lvl, lvl.to_level(h), model, iterations, tolerance_px)
        h = lvl.from_level(w)
    mean_cc = float(np.mean(ccs))
    if mean_cc < MIN_SCENE_CORRELATION:
        raise CalibrationError(
            f"The thermal and RGB edges do not agree (mean correlation {mean_cc:.3f}): the pairs are not "
            "synchronised, not of this rig, or the starting guess is too far off (--fov-ratio, "
            "--init-points)."
        )
    rig = _make_rig(h, rgb_size, thermal_size, "ecc", {name: 0.0 for name, _, _ in usable})
    # Each frame alone: the offset its edges keep under the joint estimate.
    residuals, unmeasured = {}, []
    for name, thermal, rgb in usable:
        warped, valid = warp_thermal(np.asarray(thermal, np.float32), rig)
        found = alignment_offset(rgb, warped, valid, max_shift=4 * max_frame_offset_px + 8)
        if found is None:
            unmeasured.append(name)
        else:
            residuals[name] = found.offset
    if unmeasured:
        notes.append(f"{', '.join(unmeasured)}: could not be checked alone (too few edges both cameras see).")
    bad = {k: v for k, v in residuals.items() if v > max_frame_offset_px}
    if bad:
        raise CalibrationError(
            f"Frame(s) disagree with the others: under the joint estimate their edges stay offset by more "
            f"than {max_frame_offset_px} px (--max-frame-offset): {_listing(bad)}. Those pairs are not "
            "synchronised, or the mount moved between them: leave them out."
        )
    if len(residuals) < min_frames:
        raise CalibrationError(
            f"Only {len(residuals)} frame(s) could be checked alone ({', '.join(unmeasured)} could not), "
            f"fewer than {min_frames} (--min-frames): add pairs with more edges that both cameras see."
        )
    mean = float(np.mean(list(residuals.values())))
    return Calibration(rig.replace(residual_px=mean, frame_residuals_px=residuals), residuals, tuple(notes))
