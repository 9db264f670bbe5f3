"""Input settings for robustness evaluation: a missing modality, or one modality degraded.

A setting name is ``"rgbt"`` (both), ``"rgb"`` / ``"thermal"`` (the other stream missing), or
``"<modality>-<kind>-<level>"`` with both streams present and one of them degraded, in the spirit of
the noise protocol of arXiv 2503.18445 (e.g. ``"rgb-noise-2"``, ``"thermal-stripe-3"``). Sizes are
relative to the short side ``s`` of the image (``s / 128`` pixels per "pixel at 128"), so that a level
means the same at any resolution. Kinds ("families") and their three levels (images in 0..255):

Either camera:

- ``noise``: additive Gaussian noise, sigma 10 / 25 / 50;
- ``blur``: Gaussian blur, sigma 1 / 2 / 4 pixels per 128 pixels of the short side;
- ``dark``: gain 0.5 / 0.25 / 0.1 (night, an under-exposed or failing sensor);
- ``bright``: gain 2 / 3 / 5, clipped at 255 (glare, over-exposure, a thermal AGC step);
- ``occlude``: dirt or a drop on the lens: a soft-edged blob covering 10 / 20 / 35% of the image,
  dark and blurred in RGB, at one flat temperature in thermal;
- ``jpeg``: JPEG compression at quality 30 / 15 / 5.

Thermal only (the camera faults of uncooled microbolometers and of a two-camera rig):

- ``shift``: misregistration, thermal translated against RGB by 1.5 / 3 / 6% of the short side;
- ``rotate``: misregistration, thermal rotated about its centre by 1 / 2 / 4 degrees;
- ``stripe``: fixed-pattern column noise between non-uniformity corrections: a per-column offset
  of sigma 6 / 12 / 24 plus a weaker per-row one;
- ``hotspot``: a saturated hot source (sun, exhaust, fire) of radius 8 / 14 / 22% of the short side
  with a halo, and the rest of the image compressed to 70 / 50 / 30% of its range, as AGC does.

RGB only (weather and night driving):

- ``fog``: haze with scattering growing towards the horizon, transmission about 0.6 / 0.35 / 0.15;
- ``glare``: a headlight or lens flare: a saturated source with a bloom of radius 20 / 35 / 60% of
  the short side and a veil that lifts the whole image by 5 / 15 / 30%.

Everything random (the stripe pattern, where a blob, source or shift lands) is drawn from a
generator seeded by the image id and the kind, so every run sees the same degraded images and the
levels of one image differ only in strength (``noise`` keeps its original seeding by id and level).
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np

from ..modalities import CAMERAS, MODALITIES

__all__ = [
    "DEGRADATION_KINDS", "KIND_MODALITIES", "LEGACY_KINDS", "LEVELS", "MODALITIES", "check_kinds", "degrade",
    "expand_settings", "parse_setting", "setting_kind", "setting_names",
]

# Which camera each family can hit, in the order settings are listed.
KIND_MODALITIES = {
    "noise": ("rgb", "thermal"),
    "blur": ("rgb", "thermal"),
    "dark": ("rgb", "thermal"),
    "bright": ("rgb", "thermal"),
    "occlude": ("rgb", "thermal"),
    "jpeg": ("rgb", "thermal"),
    "shift": ("thermal",),
    "rotate": ("thermal",),
    "stripe": ("thermal",),
    "hotspot": ("thermal",),
    "fog": ("rgb",),
    "glare": ("rgb",),
}
DEGRADATION_KINDS = tuple(KIND_MODALITIES)
# The first four families (the protocol of the first any-modality evaluation).
LEGACY_KINDS = ("noise", "blur", "dark", "bright")
LEVELS = (1, 2, 3)
_NOISE_SIGMA = {1: 10.0, 2: 25.0, 3: 50.0}
_BLUR_SIGMA_PER_128 = {1: 1.0, 2: 2.0, 3: 4.0}
_DARK_GAIN = {1: 0.5, 2: 0.25, 3: 0.1}
_BRIGHT_GAIN = {1: 2.0, 2: 3.0, 3: 5.0}
_OCCLUDE_AREA = {1: 0.10, 2: 0.20, 3: 0.35}
_JPEG_QUALITY = {1: 30, 2: 15, 3: 5}
_SHIFT_FRACTION = {1: 0.015, 2: 0.03, 3: 0.06}
_ROTATE_DEGREES = {1: 1.0, 2: 2.0, 3: 4.0}
_STRIPE_SIGMA = {1: 6.0, 2: 12.0, 3: 24.0}
_HOTSPOT = {1: (0.08, 0.7), 2: (0.14, 0.5), 3: (0.22, 0.3)}  # radius / short side, range kept
_FOG_BETA = {1: 0.5, 2: 1.0, 3: 1.9}  # transmission exp(-beta * depth), depth 0.3 (bottom) .. 1.3
_GLARE = {1: (0.20, 0.05), 2: (0.35, 0.15), 3: (0.60, 0.30)}  # bloom radius / short side, veil


def setting_kind(name: str) -> str | None:
    """The degradation family of a setting ("thermal-stripe-2" -> "stripe"), None for rgbt/rgb/thermal."""
    degradation = parse_setting(name)[1]
    return None if degradation is None else degradation[1]


def setting_names(kinds=DEGRADATION_KINDS) -> list[str]:
    """The three modality sets, then each degradation of ``kinds`` on each camera it applies to."""
    degraded = [
        f"{m}-{k}-{lv}" for m in CAMERAS for k in kinds if m in KIND_MODALITIES[k] for lv in LEVELS
    ]
    return [*MODALITIES, *degraded]


def check_kinds(kinds, key: str = "INPUT.DEGRADATION_AUG_KINDS") -> tuple[str, ...]:
    """``kinds`` as a tuple, each a known family (the error names ``key`` and the families)."""
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in KIND_MODALITIES]
    if unknown:
        raise ValueError(
            f"{key} has unknown degradation families {unknown}; choose from {list(DEGRADATION_KINDS)}."
        )
    return kinds


def expand_settings(names, seen_kinds=LEGACY_KINDS) -> list[str]:
    """TEST.MODALITIES with its shorthands: "all" (every setting), "missing" (rgbt, rgb, thermal),
    "seen" / "unseen" (the degradations of the families in ``seen_kinds`` / of all others).

    Every name is checked (a typo fails before any evaluation); duplicates are dropped, order kept.
    """
    seen_kinds = check_kinds(seen_kinds)
    groups = {
        "all": setting_names(),
        "missing": list(MODALITIES),
        "seen": setting_names(seen_kinds)[len(MODALITIES):],
        "unseen": setting_names(tuple(k for k in DEGRADATION_KINDS if k not in seen_kinds))[len(MODALITIES):],
    }
    out = []
    for name in names:
        for setting in groups.get(name, [name]):
            parse_setting(setting)
            if setting not in out:
                out.append(setting)
    return out


def parse_setting(name: str) -> tuple[str, tuple[str, str, int] | None]:
    """``(modalities, degradation)`` of a setting: ``("rgbt", ("rgb", "noise", 2))`` for "rgb-noise-2"."""
    if name in MODALITIES:
        return name, None
    parts = name.split("-")
    if (len(parts) == 3 and parts[1] in KIND_MODALITIES and parts[0] in KIND_MODALITIES[parts[1]]
            and parts[2].isdigit() and int(parts[2]) in LEVELS):
        return "rgbt", (parts[0], parts[1], int(parts[2]))
    families = ", ".join(f"{k} ({'/'.join(m)})" for k, m in KIND_MODALITIES.items())
    raise ValueError(
        f"Unknown input setting {name!r} (TEST.MODALITIES): use one of {list(MODALITIES)} or "
        f"'<rgb|thermal>-<kind>-<1|2|3>' with a kind and the cameras it applies to: {families}; "
        "e.g. 'rgb-noise-2', 'thermal-stripe-3'."
    )


def _rng(seed_key: str, kind: str) -> np.random.Generator:
    """The generator of one image and family: the same draw (place, pattern) at every level."""
    return np.random.default_rng([zlib.crc32(seed_key.encode()), zlib.crc32(kind.encode())])


def _blob_mask(rng: np.random.Generator, h: int, w: int, area: float) -> np.ndarray:
    """A soft-edged (0..1) irregular blob of about ``area`` of the image: a few overlapping ellipses."""
    mask = np.zeros((h, w), np.float32)
    cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.2, 0.8) * w
    radius = np.sqrt(area * h * w / np.pi)
    for _ in range(4):
        oy, ox = rng.normal(0.0, 0.35 * radius, size=2)
        axes = (max(1, int(radius * rng.uniform(0.6, 1.0))), max(1, int(radius * rng.uniform(0.6, 1.0))))
        cv2.ellipse(mask, (int(cx + ox), int(cy + oy)), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    edge = max(0.5, 0.08 * radius)
    return np.clip(cv2.GaussianBlur(mask, (0, 0), sigmaX=edge, sigmaY=edge), 0.0, 1.0)


def _radial(h: int, w: int, cy: float, cx: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * radius**2)).astype(np.float32)


def _expand(weight: np.ndarray, image: np.ndarray) -> np.ndarray:
    return weight[..., None] if image.ndim == 3 else weight


def degrade(image: np.ndarray, kind: str, level: int, *, seed_key: str) -> np.ndarray:
    """A degraded copy of a float32 image (H x W or H x W x C, 0..255), clipped to 0..255.

    Args:
        image: the RGB or thermal image.
        kind, level: see the module docstring (the camera a kind applies to is not checked here).
        seed_key: identifies the image (its id) for the random parts.
    """
    image = np.asarray(image, dtype=np.float32)
    h, w = image.shape[:2]
    short = min(h, w)
    if kind == "noise":
        rng = np.random.default_rng([zlib.crc32(seed_key.encode()), level])
        out = image + rng.normal(0.0, _NOISE_SIGMA[level], size=image.shape).astype(np.float32)
    elif kind == "blur":
        sigma = _BLUR_SIGMA_PER_128[level] * short / 128.0
        out = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    elif kind == "dark":
        out = image * _DARK_GAIN[level]
    elif kind == "bright":
        out = image * _BRIGHT_GAIN[level]
    elif kind == "occlude":
        rng = _rng(seed_key, kind)
        mask = _expand(_blob_mask(rng, h, w, _OCCLUDE_AREA[level]), image)
        if image.ndim == 3:  # dirt: dark brown, with a little of the blurred scene shining through
            blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=0.1 * short)
            fill = 0.25 * blurred + np.array([40.0, 32.0, 24.0], np.float32)
        else:  # the occluder radiates at its own, flat temperature
            fill = np.float32(rng.uniform(0.3, 0.7) * 255.0)
        out = image * (1.0 - mask) + fill * mask
    elif kind == "jpeg":
        u8 = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        bgr = u8[:, :, ::-1] if u8.ndim == 3 else u8
        quality = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY[level]]
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(bgr), quality)
        if not ok:
            raise RuntimeError("OpenCV could not JPEG-encode the image.")
        decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        out = (decoded[:, :, ::-1] if decoded.ndim == 3 else decoded).astype(np.float32)
    elif kind in ("shift", "rotate"):
        rng = _rng(seed_key, kind)
        if kind == "shift":
            angle = rng.uniform(0.0, 2.0 * np.pi)
            d = _SHIFT_FRACTION[level] * short
            matrix = np.float32([[1, 0, d * np.cos(angle)], [0, 1, d * np.sin(angle)]])
        else:
            sign = 1.0 if rng.random() < 0.5 else -1.0
            centre = ((w - 1) / 2.0, (h - 1) / 2.0)
            matrix = cv2.getRotationMatrix2D(centre, sign * _ROTATE_DEGREES[level], 1.0)
        out = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    elif kind == "stripe":
        rng = _rng(seed_key, kind)
        sigma = _STRIPE_SIGMA[level]
        columns = rng.normal(0.0, sigma, size=(1, w)).astype(np.float32)
        rows = rng.normal(0.0, 0.3 * sigma, size=(h, 1)).astype(np.float32)
        out = image + _expand(columns + rows, image)
    elif kind == "hotspot":
        rng = _rng(seed_key, kind)
        radius_fraction, kept = _HOTSPOT[level]
        radius = radius_fraction * short
        cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.1, 0.9) * w
        core = _expand((_radial(h, w, cy, cx, 0.5 * radius) > np.exp(-2.0)).astype(np.float32), image)
        halo = _expand(_radial(h, w, cy, cx, radius), image)
        lo = float(image.min())
        compressed = lo + (image - lo) * kept  # AGC squeezes the scene to make room for the hot source
        out = np.maximum(compressed + halo * (255.0 - compressed) * 0.6, 255.0 * core)
    elif kind == "fog":
        rng = _rng(seed_key, kind)
        depth = 0.3 + np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
        transmission = _expand(np.exp(-_FOG_BETA[level] * depth * rng.uniform(0.9, 1.1)), image)
        airlight = np.float32(rng.uniform(190.0, 225.0))
        out = image * transmission + airlight * (1.0 - transmission)
    elif kind == "glare":
        rng = _rng(seed_key, kind)
        radius_fraction, veil = _GLARE[level]
        cy, cx = rng.uniform(0.4, 0.8) * h, rng.uniform(0.15, 0.85) * w
        bloom = _expand(_radial(h, w, cy, cx, radius_fraction * short), image)
        out = image + (255.0 - image) * np.clip(bloom + veil, 0.0, 1.0)
    else:
        raise ValueError(f"Unknown degradation {kind!r}; choose from {DEGRADATION_KINDS}.")
    return np.clip(out, 0.0, 255.0).astype(np.float32)
