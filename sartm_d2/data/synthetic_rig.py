"""Synthetic camera pairs that are not pixel-aligned, with a known rig (tests, ``tools/measure_rig.py``).

- :func:`random_rig_homography`: a thermal -> RGB homography of another resolution, shifted, rotated
  and scaled about the image centre (what a second camera beside the first gives, within limits);
  :func:`rig_homography` of given values.
- :func:`render_rig_scene`: a scene of the synthetic set (``synthetic.render_scene``) seen by the
  RGB camera and by a thermal camera through that homography (the scene is drawn larger than the RGB
  image, so the thermal camera sees real content beyond the RGB borders, never a padded edge).
- :func:`thermal_camera_view`: an aligned thermal image (in the RGB frame) as such a thermal camera
  sees it (what turns an aligned set into a misaligned one with a known rig).
- :func:`render_board_pair`: a heated calibration board (checkerboard or circle grid) in both views:
  dark squares or circles are warm, so they are bright in thermal, and thermal is blurred.

Everything is drawn from the caller's ``np.random.Generator``: the same seed gives the same pairs.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .rig import image_corners, size_guess_homography
from .synthetic import render_scene

__all__ = ["random_rig_homography", "render_board_pair", "render_rig_scene", "rig_homography",
           "thermal_camera_view"]


def random_rig_homography(
    rng: np.random.Generator,
    thermal_size: tuple[int, int],
    rgb_size: tuple[int, int],
    *,
    max_shift: float = 30.0,
    max_rotation_deg: float = 3.0,
    scale: tuple[float, float] = (0.9, 1.1),
    max_perspective: float = 0.02,
) -> np.ndarray:
    """The size guess (thermal stretched onto the RGB image), then a random similarity about the RGB
    centre: shift up to ``max_shift`` RGB pixels per axis, rotation up to ``max_rotation_deg``, scale in
    ``scale``, and a slight keystone (up to ``max_perspective`` relative scale change across the image);
    :func:`rig_homography` of the drawn values."""
    angle = rng.uniform(-max_rotation_deg, max_rotation_deg)
    k = rng.uniform(*scale)
    shift = rng.uniform(-max_shift, max_shift, 2)
    keystone = rng.uniform(-max_perspective, max_perspective, 2)
    return rig_homography(thermal_size, rgb_size, shift=shift, rotation_deg=angle, scale=k, keystone=keystone)


def rig_homography(
    thermal_size: tuple[int, int],
    rgb_size: tuple[int, int],
    *,
    shift=(0.0, 0.0),
    rotation_deg: float = 0.0,
    scale: float = 1.0,
    keystone=(0.0, 0.0),
) -> np.ndarray:
    """The size guess (thermal stretched onto the RGB image), then about the RGB centre: a keystone
    (relative scale change (x, y) across the image; the centre stays), a rotation by ``rotation_deg``, a
    scale by ``scale`` and a ``shift`` (x, y) in RGB pixels: a known rig of a second camera."""
    rh, rw = rgb_size
    angle = math.radians(rotation_deg)
    c = np.array([(rw - 1) / 2, (rh - 1) / 2])
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    sim = np.eye(3)
    sim[:2, :2] = rot
    sim[:2, 2] = c + np.asarray(shift, np.float64) - rot @ c
    persp = np.eye(3)
    persp[2, :2] = np.asarray(keystone, np.float64) / np.array([rw, rh])
    persp[:2, 2] = (persp[2, :2] @ c) * c  # the centre stays in place
    h = sim @ persp @ size_guess_homography(thermal_size, rgb_size)
    return h / h[2, 2]


def _canvas_margin(homography: np.ndarray, thermal_size, rgb_size) -> int:
    """RGB pixels to draw beyond each RGB border so that the thermal view lies inside the canvas."""
    q = cv2.perspectiveTransform(image_corners(thermal_size)[None], homography)[0]
    rh, rw = rgb_size
    out = max(0.0, -q[:, 0].min(), -q[:, 1].min(), q[:, 0].max() - rw, q[:, 1].max() - rh)
    return int(math.ceil(out)) + 8


def render_rig_scene(
    rng: np.random.Generator,
    homography: np.ndarray,
    rgb_size: tuple[int, int],
    thermal_size: tuple[int, int],
    *,
    day: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene through a rig: (RGB uint8 H x W x 3, thermal uint8 at ``thermal_size``, label uint8 H x W
    in the RGB frame). The thermal camera sees the scene's thermal image through ``homography``
    (thermal pixel -> RGB pixel), anti-aliased when its pixels are larger than the RGB camera's."""
    rh, rw = rgb_size
    m = _canvas_margin(homography, thermal_size, rgb_size)
    rgb, thermal, label = render_scene(rng, rh + 2 * m, rw + 2 * m, day)
    to_canvas = np.array([[1, 0, m], [0, 1, m], [0, 0, 1]], np.float64) @ homography
    crop = (slice(m, m + rh), slice(m, m + rw))
    return np.ascontiguousarray(rgb[crop]), thermal_camera_view(thermal, to_canvas, thermal_size), label[crop]


def thermal_camera_view(
    thermal: np.ndarray, homography: np.ndarray, thermal_size: tuple[int, int]
) -> np.ndarray:
    """What a thermal camera of ``thermal_size`` (H, W) sees of ``thermal`` (an H' x W' image in the
    frame that ``homography`` maps the camera's pixels into, e.g. an aligned thermal image in the RGB
    frame): uint8, anti-aliased (Gaussian) when the camera's pixels are larger than the image's; what it
    sees beyond the image's borders is the image mirrored (drawn content, never a flat edge)."""
    s = math.sqrt(abs(np.linalg.det(homography[:2, :2])))  # image pixels per thermal pixel
    src = thermal.astype(np.float32)
    if s > 1:
        src = cv2.GaussianBlur(src, (0, 0), 0.5 * math.sqrt(s * s - 1))
    seen = cv2.warpPerspective(
        src, homography, (thermal_size[1], thermal_size[0]), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )
    return np.clip(np.round(seen), 0, 255).astype(np.uint8)


def _board_texture(pattern: tuple[int, int], kind: str, px: int) -> np.ndarray:
    """The board's ink (1 = dark, 0 = white) at ``px`` pixels per square or grid step, with a white
    border: ``pattern`` counts inner corners (checkerboard) or circles per row and column."""
    cols, rows = pattern
    if kind == "checkerboard":
        squares = (np.indices((rows + 1, cols + 1)).sum(0) % 2).astype(np.float32)
        return np.pad(np.kron(squares, np.ones((px, px), np.float32)), px, constant_values=0.0)
    big = np.zeros(((rows + 1) * px * 4, (cols + 1) * px * 4), np.uint8)  # drawn 4x larger: smooth edges
    for y in range(1, rows + 1):
        for x in range(1, cols + 1):
            cv2.circle(big, (x * px * 4, y * px * 4), int(px * 0.3 * 4), 1, -1)
    size = ((cols + 1) * px, (rows + 1) * px)
    return cv2.resize(big.astype(np.float32), size, interpolation=cv2.INTER_AREA)


def render_board_pair(
    rng: np.random.Generator,
    homography: np.ndarray,
    rgb_size: tuple[int, int],
    thermal_size: tuple[int, int],
    *,
    pattern: tuple[int, int] = (9, 6),
    kind: str = "checkerboard",
) -> tuple[np.ndarray, np.ndarray]:
    """A heated board at a random pose, seen by both cameras: (RGB uint8 H x W x 3, thermal uint8).

    The board fills about half of the overlap of the two views, tilted a little; in RGB it is black
    ink on white, in thermal the ink is warm (bright) and the image is blurred and noisy.
    """
    rh, rw = rgb_size
    px = 32
    ink = _board_texture(pattern, kind, px)
    bh, bw = ink.shape
    inv = np.linalg.inv(homography)
    for _ in range(1000):
        width = rng.uniform(0.45, 0.65) * rw
        angle = math.radians(rng.uniform(-10, 10))
        k = width / bw
        rot = k * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        centre = np.array([rng.uniform(0.35, 0.65) * rw, rng.uniform(0.35, 0.65) * rh])
        board = np.eye(3)
        board[:2, :2] = rot
        board[:2, 2] = centre - rot @ np.array([(bw - 1) / 2, (bh - 1) / 2])
        tilt = np.eye(3)
        tilt[2, :2] = rng.uniform(-0.2, 0.2, 2) / np.array([bw, bh])
        to_rgb = board @ tilt
        outline = image_corners((bh, bw))[None]
        in_rgb = cv2.perspectiveTransform(outline, to_rgb)[0]
        in_thermal = cv2.perspectiveTransform(outline, inv @ to_rgb)[0]
        inside = (in_rgb.min() > 4 and (in_rgb[:, 0].max() < rw - 4) and (in_rgb[:, 1].max() < rh - 4)
                  and in_thermal.min() > 4 and (in_thermal[:, 0].max() < thermal_size[1] - 4)
                  and (in_thermal[:, 1].max() < thermal_size[0] - 4))
        if inside:
            break
    else:
        raise ValueError("render_board_pair: the two views overlap too little to hold a board.")

    def view(to_image, size, ink_level, paper_level, blur, noise):
        mask = cv2.warpPerspective(np.ones_like(ink), to_image, (size[1], size[0]), flags=cv2.INTER_LINEAR)
        inked = cv2.warpPerspective(ink, to_image, (size[1], size[0]), flags=cv2.INTER_LINEAR)
        texture = cv2.GaussianBlur(rng.normal(size=size).astype(np.float32), (0, 0), 6)
        background = rng.uniform(90, 140) + 70 * texture
        board_img = paper_level + (ink_level - paper_level) * inked
        img = background * (1 - mask) + board_img * mask
        if blur:
            img = cv2.GaussianBlur(img, (0, 0), blur)
        return np.clip(np.round(img + rng.normal(0, noise, size)), 0, 255).astype(np.uint8)

    rgb_grey = view(to_rgb, rgb_size, rng.uniform(15, 40), rng.uniform(200, 235), 0.6, 2.0)
    thermal = view(inv @ to_rgb, thermal_size, rng.uniform(190, 230), rng.uniform(70, 100), 1.2, 2.5)
    return np.repeat(rgb_grey[:, :, None], 3, axis=2), thermal
