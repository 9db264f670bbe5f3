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

Families are registered parts, like fusions and heads: a :class:`Degradation` subclass registered in
``DEGRADATION_REGISTRY`` (in a ``--register`` module: no package edit) names the cameras it applies to
and its levels; it then works everywhere a family does: TEST.MODALITIES settings,
INPUT.DEGRADATION_AUG_KINDS, the robustness table, ``tools/eval_onnx.py`` and the web page.
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np
from detectron2.utils.registry import Registry

from ..modalities import CAMERAS, MODALITIES

__all__ = [
    "DEGRADATION_REGISTRY", "Degradation", "LEGACY_KINDS", "check_kinds", "degradation_kinds", "degrade",
    "expand_settings", "get_degradation", "parse_setting", "setting_kind", "setting_names",
]

DEGRADATION_REGISTRY = Registry("DEGRADATION")
DEGRADATION_REGISTRY.__doc__ = """
Degradation families of the robustness protocol (TEST.MODALITIES, INPUT.DEGRADATION_AUG_KINDS): each a
:class:`Degradation` subclass, looked up by its ``name``.
"""
# The first four families (the protocol of the first any-modality evaluation).
LEGACY_KINDS = ("noise", "blur", "dark", "bright")
# TEST.MODALITIES shorthands (``expand_settings``): no family may take one of these names.
SHORTHANDS = ("all", "missing", "seen", "unseen")


class Degradation:
    """One degradation family: subclass, set the class attributes, implement ``__call__``, register.

    Attributes:
        name: the family's name in settings ("<camera>-<name>-<level>"): letters, digits and "_".
        cameras: the cameras it can hit, a subset of ("rgb", "thermal").
        levels: its strength levels, positive integers, weakest first.
    """

    name: str = ""
    cameras: tuple[str, ...] = CAMERAS
    levels: tuple[int, ...] = (1, 2, 3)

    def generator(self, seed_key: str, level: int) -> np.random.Generator:
        """The generator of one image and family: the same draw (place, pattern) at every level."""
        return np.random.default_rng([zlib.crc32(seed_key.encode()), zlib.crc32(self.name.encode())])

    def __call__(self, image: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
        """The degraded image: ``image`` float32 H x W (thermal) or H x W x 3 (RGB) in 0..255; the
        result is clipped to 0..255 by the caller."""
        raise NotImplementedError


def _check_family(cls) -> type[Degradation]:
    name = getattr(cls, "name", "")
    if not (name and name.replace("_", "").isalnum()) or name in MODALITIES or name in SHORTHANDS:
        raise ValueError(
            f"Degradation {cls.__name__}: name {name!r} must be letters, digits or '_' (it is part of the "
            f"setting '<camera>-{name}-<level>') and none of {list(MODALITIES) + list(SHORTHANDS)}."
        )
    if not cls.cameras or not set(cls.cameras) <= set(CAMERAS):
        raise ValueError(f"Degradation {name!r}: cameras {cls.cameras!r} must be a subset of {CAMERAS}.")
    levels = tuple(cls.levels)
    if not levels or any(not isinstance(v, int) or v < 1 for v in levels) or len(set(levels)) != len(levels):
        raise ValueError(f"Degradation {name!r}: levels {cls.levels!r} must be distinct positive integers.")
    return cls


def _families() -> dict[str, type[Degradation]]:
    """Registered families by name, in registration order (built-ins first); names are checked."""
    out: dict[str, type[Degradation]] = {}
    for _, cls in DEGRADATION_REGISTRY:
        _check_family(cls)
        if cls.name in out:
            raise ValueError(
                f"Two degradations are named {cls.name!r}: {out[cls.name].__name__} and {cls.__name__}."
            )
        out[cls.name] = cls
    return out


def degradation_kinds() -> tuple[str, ...]:
    """The names of every registered family, built-ins first."""
    return tuple(_families())


def get_degradation(kind: str) -> Degradation:
    """An instance of the family ``kind`` (the error lists the registered ones)."""
    families = _families()
    if kind not in families:
        raise ValueError(f"Unknown degradation {kind!r}; choose from {list(families)}.")
    return families[kind]()


def setting_kind(name: str) -> str | None:
    """The degradation family of a setting ("thermal-stripe-2" -> "stripe"), None for rgbt/rgb/thermal."""
    degradation = parse_setting(name)[1]
    return None if degradation is None else degradation[1]


def setting_names(kinds=None) -> list[str]:
    """The three modality sets, then each degradation of ``kinds`` (default: every registered family) on
    each camera it applies to, at each of its levels."""
    families = _families()
    kinds = tuple(families) if kinds is None else check_kinds(kinds)
    degraded = [
        f"{m}-{k}-{lv}" for m in CAMERAS for k in kinds if m in families[k].cameras
        for lv in families[k].levels
    ]
    return [*MODALITIES, *degraded]


def check_kinds(kinds, key: str = "INPUT.DEGRADATION_AUG_KINDS") -> tuple[str, ...]:
    """``kinds`` as a tuple, each a registered family (the error names ``key`` and the families)."""
    kinds = tuple(kinds)
    known = degradation_kinds()
    unknown = [k for k in kinds if k not in known]
    if unknown:
        raise ValueError(
            f"{key} has unknown degradation families {unknown}; choose from {list(known)} (or register your "
            "own Degradation in DEGRADATION_REGISTRY, e.g. in a --register module)."
        )
    return kinds


def expand_settings(names, seen_kinds=LEGACY_KINDS) -> list[str]:
    """TEST.MODALITIES with its shorthands: "all" (every setting), "missing" (rgbt, rgb, thermal),
    "seen" / "unseen" (the degradations of the families in ``seen_kinds`` / of all others).

    Every name is checked (a typo fails before any evaluation); duplicates are dropped, order kept.
    """
    seen_kinds = check_kinds(seen_kinds)
    unseen_kinds = tuple(k for k in degradation_kinds() if k not in seen_kinds)
    groups = {
        "all": setting_names(),
        "missing": list(MODALITIES),
        "seen": setting_names(seen_kinds)[len(MODALITIES):],
        "unseen": setting_names(unseen_kinds)[len(MODALITIES):],
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
    families = _families()
    parts = name.split("-")
    if len(parts) == 3 and parts[1] in families and parts[0] in families[parts[1]].cameras and (
            parts[2].isdigit() and int(parts[2]) in families[parts[1]].levels):
        return "rgbt", (parts[0], parts[1], int(parts[2]))
    listed = ", ".join(
        f"{k} ({'/'.join(c.cameras)}; levels {'/'.join(map(str, c.levels))})" for k, c in families.items()
    )
    raise ValueError(
        f"Unknown input setting {name!r} (TEST.MODALITIES): use one of {list(MODALITIES)} or "
        f"'<rgb|thermal>-<kind>-<level>' with a kind, a camera it applies to and one of its levels: "
        f"{listed}; e.g. 'rgb-noise-2', 'thermal-stripe-3'."
    )


def degrade(image: np.ndarray, kind: str, level: int, *, seed_key: str) -> np.ndarray:
    """A degraded copy of a float32 image (H x W or H x W x C, 0..255), clipped to 0..255.

    Args:
        image: the RGB or thermal image.
        kind, level: a registered family and one of its levels (the camera it applies to is not
            checked here: ``parse_setting`` checks settings).
        seed_key: identifies the image (its id) for the random parts.
    """
    family = get_degradation(kind)
    if level not in family.levels:
        raise ValueError(f"Degradation {kind!r} has levels {family.levels}, not {level!r}.")
    image = np.asarray(image, dtype=np.float32)
    out = family(image, level, family.generator(seed_key, level))
    return np.clip(out, 0.0, 255.0).astype(np.float32)


# ---------------------------------------------------------------------------------- built-in families
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


@DEGRADATION_REGISTRY.register()
class Noise(Degradation):
    """Additive Gaussian noise, sigma 10 / 25 / 50 (seeded by image and level)."""

    name = "noise"
    sigma = {1: 10.0, 2: 25.0, 3: 50.0}

    def generator(self, seed_key, level):
        return np.random.default_rng([zlib.crc32(seed_key.encode()), level])

    def __call__(self, image, level, rng):
        return image + rng.normal(0.0, self.sigma[level], size=image.shape).astype(np.float32)


@DEGRADATION_REGISTRY.register()
class Blur(Degradation):
    """Gaussian blur, sigma 1 / 2 / 4 pixels per 128 pixels of the short side."""

    name = "blur"
    sigma_per_128 = {1: 1.0, 2: 2.0, 3: 4.0}

    def __call__(self, image, level, rng):
        sigma = self.sigma_per_128[level] * min(image.shape[:2]) / 128.0
        return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


@DEGRADATION_REGISTRY.register()
class Dark(Degradation):
    """Gain 0.5 / 0.25 / 0.1 (night, an under-exposed or failing sensor)."""

    name = "dark"
    gain = {1: 0.5, 2: 0.25, 3: 0.1}

    def __call__(self, image, level, rng):
        return image * self.gain[level]


@DEGRADATION_REGISTRY.register()
class Bright(Degradation):
    """Gain 2 / 3 / 5, clipped at 255 (glare, over-exposure, a thermal AGC step)."""

    name = "bright"
    gain = {1: 2.0, 2: 3.0, 3: 5.0}

    def __call__(self, image, level, rng):
        return image * self.gain[level]


@DEGRADATION_REGISTRY.register()
class Occlude(Degradation):
    """A soft-edged blob of 10 / 20 / 35% of the image: dark, blurred dirt in RGB, a flat temperature
    in thermal."""

    name = "occlude"
    area = {1: 0.10, 2: 0.20, 3: 0.35}

    def __call__(self, image, level, rng):
        h, w = image.shape[:2]
        mask = _expand(_blob_mask(rng, h, w, self.area[level]), image)
        if image.ndim == 3:  # dirt: dark brown, with a little of the blurred scene shining through
            blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=0.1 * min(h, w))
            fill = 0.25 * blurred + np.array([40.0, 32.0, 24.0], np.float32)
        else:  # the occluder radiates at its own, flat temperature
            fill = np.float32(rng.uniform(0.3, 0.7) * 255.0)
        return image * (1.0 - mask) + fill * mask


@DEGRADATION_REGISTRY.register()
class Jpeg(Degradation):
    """JPEG compression at quality 30 / 15 / 5."""

    name = "jpeg"
    quality = {1: 30, 2: 15, 3: 5}

    def __call__(self, image, level, rng):
        u8 = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        bgr = u8[:, :, ::-1] if u8.ndim == 3 else u8
        quality = [cv2.IMWRITE_JPEG_QUALITY, self.quality[level]]
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(bgr), quality)
        if not ok:
            raise RuntimeError("OpenCV could not JPEG-encode the image.")
        decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        return (decoded[:, :, ::-1] if decoded.ndim == 3 else decoded).astype(np.float32)


def _warp_affine(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@DEGRADATION_REGISTRY.register()
class Shift(Degradation):
    """Misregistration: thermal translated against RGB by 1.5 / 3 / 6% of the short side."""

    name = "shift"
    cameras = ("thermal",)
    fraction = {1: 0.015, 2: 0.03, 3: 0.06}

    def __call__(self, image, level, rng):
        angle = rng.uniform(0.0, 2.0 * np.pi)
        d = self.fraction[level] * min(image.shape[:2])
        return _warp_affine(image, np.float32([[1, 0, d * np.cos(angle)], [0, 1, d * np.sin(angle)]]))


@DEGRADATION_REGISTRY.register()
class Rotate(Degradation):
    """Misregistration: thermal rotated about its centre by 1 / 2 / 4 degrees."""

    name = "rotate"
    cameras = ("thermal",)
    degrees = {1: 1.0, 2: 2.0, 3: 4.0}

    def __call__(self, image, level, rng):
        h, w = image.shape[:2]
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return _warp_affine(image, cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0),
                                                           sign * self.degrees[level], 1.0))


@DEGRADATION_REGISTRY.register()
class Stripe(Degradation):
    """Fixed-pattern column noise of sigma 6 / 12 / 24 plus a weaker per-row one."""

    name = "stripe"
    cameras = ("thermal",)
    sigma = {1: 6.0, 2: 12.0, 3: 24.0}

    def __call__(self, image, level, rng):
        h, w = image.shape[:2]
        sigma = self.sigma[level]
        columns = rng.normal(0.0, sigma, size=(1, w)).astype(np.float32)
        rows = rng.normal(0.0, 0.3 * sigma, size=(h, 1)).astype(np.float32)
        return image + _expand(columns + rows, image)


@DEGRADATION_REGISTRY.register()
class Hotspot(Degradation):
    """A saturated hot source of radius 8 / 14 / 22% of the short side with a halo, the rest of the
    image compressed to 70 / 50 / 30% of its range (as AGC does)."""

    name = "hotspot"
    cameras = ("thermal",)
    spec = {1: (0.08, 0.7), 2: (0.14, 0.5), 3: (0.22, 0.3)}  # radius / short side, range kept

    def __call__(self, image, level, rng):
        h, w = image.shape[:2]
        radius_fraction, kept = self.spec[level]
        radius = radius_fraction * min(h, w)
        cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.1, 0.9) * w
        core = _expand((_radial(h, w, cy, cx, 0.5 * radius) > np.exp(-2.0)).astype(np.float32), image)
        halo = _expand(_radial(h, w, cy, cx, radius), image)
        lo = float(image.min())
        compressed = lo + (image - lo) * kept  # AGC squeezes the scene to make room for the hot source
        return np.maximum(compressed + halo * (255.0 - compressed) * 0.6, 255.0 * core)


@DEGRADATION_REGISTRY.register()
class Fog(Degradation):
    """Haze thickening towards the horizon, transmission about 0.6 / 0.35 / 0.15."""

    name = "fog"
    cameras = ("rgb",)
    beta = {1: 0.5, 2: 1.0, 3: 1.9}  # transmission exp(-beta * depth), depth 0.3 (bottom) .. 1.3

    def __call__(self, image, level, rng):
        h, w = image.shape[:2]
        depth = 0.3 + np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
        transmission = _expand(np.exp(-self.beta[level] * depth * rng.uniform(0.9, 1.1)), image)
        airlight = np.float32(rng.uniform(190.0, 225.0))
        return image * transmission + airlight * (1.0 - transmission)


@DEGRADATION_REGISTRY.register()
class Glare(Degradation):
    """A headlight or lens flare: a saturated bloom of radius 20 / 35 / 60% of the short side and a veil
    lifting the whole image by 5 / 15 / 30%."""

    name = "glare"
    cameras = ("rgb",)
    spec = {1: (0.20, 0.05), 2: (0.35, 0.15), 3: (0.60, 0.30)}  # bloom radius / short side, veil

    def __call__(self, image, level, rng):
        h, w = image.shape[:2]
        radius_fraction, veil = self.spec[level]
        cy, cx = rng.uniform(0.4, 0.8) * h, rng.uniform(0.15, 0.85) * w
        bloom = _expand(_radial(h, w, cy, cx, radius_fraction * min(h, w)), image)
        return image + (255.0 - image) * np.clip(bloom + veil, 0.0, 1.0)
