"""A second synthetic RGB-T family, MFNet-like, to confirm that a recipe chosen on the embedded set transfers.

Recipes are tuned on ``sartm_d2.data.synthetic``; this family has other statistics and serves only to
check that a chosen recipe still holds. It has MFNet's 9 classes in MFNet's order and palette
(``builtin_meta.MFNET_CLASSES``) and is written in the MFNet layout by the embedded set's writer, to
``<root>/SyntheticMFNet_<H>x<W>`` (``builtin_meta.SYNTHETIC_MFNET_FOLDER``); 96x128 and 480x640 are
registered as ``synthetic_mfnet_{train,val,test}`` and ``synthetic_mfnet_480x640_{train,val,test}``.

- car, person, bike: warm, told apart by thermal level as well as by shape. Their ranges overlap in
  part and their means are ordered car < bike < person: car bodies are the coolest, with a hot
  exhaust or engine part and cooler windows; bikes (side view, rings for wheels, often ridden: the
  rider is a person) lie in between; persons are the hottest. In RGB they have their colours by day
  and take the dark colour of what is behind them at night: nearly invisible.
- curve (kerb), car_stop, guardrail, color_cone, bump: painted and cold. Visible in RGB by day and,
  retro-reflective, at night; in thermal at the temperature of the street behind them.
- unlabeled: a street in perspective: brick or banded facades with windows (lit at night: RGB
  distractors; warm vents and lamp heads: thermal distractors), paving tiles, fine-grained asphalt
  with shadow bands by day and painted lane dashes (painted, cold and unlabeled, as in MFNet).

Against the embedded set: more and smaller objects per scene, other textures (bricks, tiles in
perspective, stripes, grain) and another sensor model: signal-dependent (Poisson) shot noise plus read
noise in RGB, with a night gain; optics blur, vignetting and fixed-pattern column noise in thermal.
Scene ``i`` is drawn from ``np.random.default_rng([seed, i])`` (byte-identical files for a seed) and
is a day scene for even ``i`` (name ending in D), night for odd (N). Any size works; the geometry is
relative to the image size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from .datasets.builtin_meta import MFNET_CLASSES, SYNTHETIC_MFNET_FOLDER
from .synthetic import _cli, _mask, _smooth_noise, _write_mfnet_layout

__all__ = [
    "COLD_CLASSES",
    "GENERATOR_VERSION",
    "WARM_CLASSES",
    "generate_synthetic_mfnet",
    "main",
    "render_scene",
]

GENERATOR_VERSION = 1
_ID = {name: i for i, name in enumerate(MFNET_CLASSES)}
UNLABELED, CAR, PERSON, BIKE = _ID["unlabeled"], _ID["car"], _ID["person"], _ID["bike"]
CURVE, CAR_STOP, GUARDRAIL, COLOR_CONE, BUMP = (
    _ID["curve"],
    _ID["car_stop"],
    _ID["guardrail"],
    _ID["color_cone"],
    _ID["bump"],
)
WARM_CLASSES = (CAR, BIKE, PERSON)  # in the order of their mean thermal level
COLD_CLASSES = (CURVE, CAR_STOP, GUARDRAIL, COLOR_CONE, BUMP)

# Thermal levels (8-bit) of the warm parts; the background street lies at about 15..130.
_CAR_BODY = (125.0, 155.0)
_CAR_HOT = (180.0, 220.0)  # exhaust, engine hood
_BIKE = (170.0, 198.0)
_PERSON = (196.0, 230.0)
_PAINTS = {
    "car": [(235, 235, 230), (30, 30, 35), (165, 168, 172), (180, 30, 35), (35, 60, 150), (90, 95, 100)],
    "cloth": [(40, 45, 60), (150, 30, 40), (220, 220, 215), (60, 100, 60), (200, 160, 60), (90, 70, 50)],
}
_KERB_PAINTS = [((235, 235, 230), (200, 40, 40)), ((230, 200, 40), (35, 35, 35))]
_REFLECTIVE = (0.55, 0.85)  # share of the day colour that painted objects keep at night


@dataclass(frozen=True)
class _Street:
    """The perspective of a street: horizon row, vanishing point, road edges at the bottom row."""

    h: int
    w: int
    horizon: int
    vx: float
    left: float
    right: float

    def t(self, y):
        """0 at the horizon, 1 at the bottom row."""
        return np.clip((y - self.horizon) / max(self.h - 1 - self.horizon, 1), 0.0, 1.0)

    def depth(self, y):
        """Size of a ground object at row ``y`` relative to one at the bottom row."""
        return 0.15 + 0.85 * self.t(y)

    def edge(self, y, side: int):
        """Column of the left (side -1) or right (+1) road edge at row ``y``."""
        apex = self.vx + side * 0.01 * self.w
        return apex + ((self.right if side > 0 else self.left) - apex) * self.t(y)

    def px(self, v: float) -> int:
        """A length of ``v`` pixels at 96 rows, at this height (at least 1)."""
        return max(int(round(v * self.h / 96)), 1)

    def inv_depth(self, y):
        """A ground coordinate along the street (grows towards the horizon), for stripes in perspective."""
        return 40.0 * (self.h / 96) / np.maximum(np.asarray(y, np.float32) - self.horizon + 1.0, 1.0)

    def row(self, g: float) -> float:
        """The ground row whose ``inv_depth`` is ``g``."""
        return self.horizon - 1.0 + 40.0 * (self.h / 96) / max(g, 1e-3)


def _poly(h: int, w: int, pts) -> np.ndarray:
    return _mask(h, w, lambda m: cv2.fillPoly(m, [np.round(np.array(pts, np.float64)).astype(np.int32)], 1))


def _street(rng: np.random.Generator, h: int, w: int, day: bool):
    """Day-light RGB (H x W x 3), night light sources (H x W x 3), thermal (H x W) and the geometry."""
    st = _Street(
        h,
        w,
        int(h * rng.uniform(0.36, 0.48)),
        w * rng.uniform(0.35, 0.65),
        w * rng.uniform(-0.35, 0.1),
        w * rng.uniform(0.9, 1.35),
    )
    hz = st.horizon
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.zeros((h, w, 3), np.float32)
    glow = np.zeros((h, w, 3), np.float32)
    thermal = np.zeros((h, w), np.float32)

    # Sky: a ramp with large soft clouds.
    ramp = np.linspace(0.8, 1.1, hz, dtype=np.float32)[:, None, None]
    rgb[:hz] = np.array([120.0, 170.0, 225.0]) * rng.uniform(0.85, 1.1) * ramp
    rgb[:hz] += 25.0 * np.clip(_smooth_noise(rng, h, w, max(w // 4, 2)), 0, None)[:hz, :, None]
    thermal[:hz] = rng.uniform(30, 50) if day else rng.uniform(15, 30)

    # Ground: fine-grained asphalt between the edges, paving tiles in perspective outside them.
    ground = yy >= hz
    road = ground & (xx >= st.edge(yy, -1)) & (xx <= st.edge(yy, 1))
    walk = ground & ~road
    grain = cv2.GaussianBlur(rng.normal(0.0, 1.0, (h, w)).astype(np.float32), (0, 0), 0.6)
    rgb[road] = rng.uniform(65, 105) + 9.0 * grain[road][:, None]
    road_t = rng.uniform(100, 130) if day else rng.uniform(55, 80)
    thermal[ground] = road_t + 6.0 * st.t(yy[ground])
    thermal[road] += 2.5 * grain[road]
    thermal[walk] += rng.uniform(-4, 4)
    rows = np.modf(st.inv_depth(yy) * rng.uniform(0.8, 1.5))[0] < 0.15
    cols = np.modf((xx - st.vx) / np.maximum(yy - hz + 1.0, 1.0) * rng.uniform(2.5, 4.0))[0] < 0.18
    joints = walk & (rows | cols)
    rgb[walk] = rng.uniform(125, 175) * rng.uniform(0.9, 1.1, size=3)
    rgb[joints] *= 0.7
    thermal[joints] -= 1.5
    # Lane dashes on the centre line: painted, cold, unlabeled (MFNet does not label road markings).
    centre = st.vx + ((st.left + st.right) / 2 - st.vx) * st.t(yy)
    half = np.maximum(0.012 * w * st.depth(yy), 0.5)
    dashes = road & (np.abs(xx - centre) <= half) & (np.modf(st.inv_depth(yy) * 0.7)[0] < 0.5)
    rgb[dashes] = rng.uniform(200, 240)

    # Facades on the horizon: bricks or floor bands, with windows.
    x = int(rng.integers(-w // 10, w // 10))
    while x < w:
        bw = int(rng.integers(w // 10, w // 4))
        top = int(rng.integers(hz // 8, max(hz - 3, hz // 8 + 1)))
        x0, x1 = max(x, 0), min(x + bw, w)
        fy, fx = yy[top:hz, x0:x1] - top, xx[top:hz, x0:x1]
        colour = rng.uniform(70, 190, size=3).astype(np.float32)
        if rng.random() < 0.6:  # bricks in running bond, each with its own tint
            bh = st.px(rng.uniform(2.0, 3.5))
            row = (fy // bh).astype(np.int64)
            shifted = fx + (row % 2) * bh
            col = (shifted // (2 * bh)).astype(np.int64)
            tints = rng.normal(0.0, 12.0, size=(int(row.max()) + 1 if row.size else 1, w // bh + 3))
            face = colour + tints[row, np.clip(col, 0, tints.shape[1] - 1)][:, :, None]
            joint = st.px(0.4)
            mortar = (fy % bh < joint) | (shifted % (2 * bh) < joint)
            face[mortar] = 200.0
        else:  # concrete with floor bands
            band = st.px(rng.uniform(3, 6))
            face = np.broadcast_to(colour, fy.shape + (3,)).copy()
            face[(fy % (2 * band)) < band] *= 0.8
        rgb[top:hz, x0:x1] = face
        thermal[top:hz, x0:x1] = rng.uniform(75, 100) if day else rng.uniform(50, 70)
        win, gap = st.px(rng.uniform(2, 3)), st.px(rng.uniform(3, 5))
        for wy in range(top + gap // 2, hz - win, win + gap):
            for wx in range(x0 + gap // 2, x1 - win, win + gap):
                if rng.random() < 0.3:
                    continue
                rgb[wy : wy + win, wx : wx + win] = (60, 80, 100)
                if not day:
                    thermal[wy : wy + win, wx : wx + win] += rng.uniform(8, 20)  # heat through the glass
                    if rng.random() < 0.5:
                        glow[wy : wy + win, wx : wx + win] = np.array((255, 220, 150)) * rng.uniform(0.6, 1.0)
        if rng.random() < 0.5:  # a vent or air conditioner: warm in thermal (a distractor)
            vy, vx = int(rng.integers(top, max(hz - 2, top + 1))), int(rng.integers(x0, max(x1 - 2, x0 + 1)))
            vs = st.px(rng.uniform(2, 4))
            rgb[vy : vy + vs, vx : vx + vs] = 185.0
            thermal[vy : vy + vs, vx : vx + vs] = rng.uniform(145, 200)
        x += bw + int(rng.integers(0, w // 12))

    # Street lamps on the sidewalks: a pole and a head, warm (and lit) at night.
    for _ in range(int(rng.integers(0, 3))):
        side = 1 if rng.random() < 0.5 else -1
        yb = int(rng.integers(hz + 1, h))
        xb = int(st.edge(yb, side) + side * rng.uniform(0.02, 0.15) * w * st.depth(yb))
        top = int(yb - 0.7 * h * st.depth(yb))
        pole = st.px(0.8 * st.depth(yb))
        rgb[max(top, 0) : yb, max(xb, 0) : max(xb + pole, 0)] = 55.0
        radius = st.px(1.5 * st.depth(yb))
        head = _mask(h, w, lambda m, c=(xb, top), r=radius: cv2.circle(m, c, r, 1, -1))
        rgb[head] = 200.0
        thermal[head] = rng.uniform(90, 120) if day else rng.uniform(170, 215)
        if not day:
            glow[head] = (255, 240, 200)

    # Shadow bands of buildings across the ground by day: darker and cooler.
    if day:
        for _ in range(int(rng.integers(0, 3))):
            y0 = rng.uniform(hz, h)
            y1 = y0 + rng.uniform(0.05, 0.2) * h
            slant = rng.uniform(-0.3, 0.3) * h
            band = _poly(h, w, [[0, y0], [w, y0 + slant], [w, y1 + slant], [0, y1]]) & ground
            rgb[band] *= 0.55
            thermal[band] -= rng.uniform(8, 15)

    rgb *= 1.0 + 0.08 * _smooth_noise(rng, h, w, max(w // 3, 2))[:, :, None]
    return rgb, glow, thermal, st


def _stripes(st: _Street, period: float, slant: float) -> np.ndarray:
    """A boolean H x W pattern of diagonal stripes ``period`` pixels wide (at 96 rows)."""
    yy, xx = np.mgrid[0 : st.h, 0 : st.w].astype(np.float32)
    return (((xx + slant * yy) / (period * st.h / 96)) % 2.0) < 1.0


def _shape(st: _Street, x: float, y: float, sx: float, sy: float, pts) -> np.ndarray:
    """The filled polygon of ``pts`` given relative to (x, y), in units of (sx, sy)."""
    return _poly(st.h, st.w, [[x + a * sx, y + b * sy] for a, b in pts])


def _box(st: _Street, x: float, y: float, sx: float, sy: float, a0, b0, a1, b1) -> np.ndarray:
    """The rectangle from (a0, b0) to (a1, b1), relative to (x, y) in units of (sx, sy)."""
    return _shape(st, x, y, sx, sy, [(a0, b0), (a1, b0), (a1, b1), (a0, b1)])


def _trapezoid(st: _Street, x: float, y: float, sx: float, sy: float, half0, b0, half1, b1) -> np.ndarray:
    """The trapezoid symmetric about x with half-widths ``half0`` at row ``b0`` and ``half1`` at ``b1``."""
    return _shape(st, x, y, sx, sy, [(-half0, b0), (half0, b0), (half1, b1), (-half1, b1)])


def _pick(rng: np.random.Generator, colours) -> np.ndarray:
    return np.array(colours[int(rng.integers(len(colours)))], np.float32)


def _ground_objects(rng: np.random.Generator, st: _Street):
    """Kerbs, bumps and guardrails: (class, [(part mask, day colour, temperature or None), ...])."""
    h, w, hz = st.h, st.w, st.horizon
    yy = np.arange(h, dtype=np.float32)[:, None]
    objs = []
    for side in (-1, 1):  # kerbs along the road edges, plain or with painted stripes in perspective
        if rng.random() < (0.8 if side < 0 else 0.6):
            y0 = hz + (h - hz) * rng.uniform(0.02, 0.25)
            k0, k1 = 0.025 * w * st.depth(y0), 0.025 * w
            e0, e1 = st.edge(y0, side), st.edge(h - 1, side)
            m = _poly(h, w, [[e0, y0], [e0 + side * k0, y0], [e1 + side * k1, h - 1], [e1, h - 1]])
            if rng.random() < 0.6:
                a, b = _KERB_PAINTS[0] if rng.random() < 0.7 else _KERB_PAINTS[1]
                odd = np.broadcast_to(np.modf(st.inv_depth(yy) * 1.2)[0] < 0.5, (h, w))
                objs.append((CURVE, [(m & ~odd, a, None), (m & odd, b, None)]))
            else:
                objs.append((CURVE, [(m, (190, 190, 185), None)]))
    if rng.random() < 0.35:  # a speed bump across the road, yellow and black stripes
        y0 = hz + (h - hz) * rng.uniform(0.25, 0.9)
        y1 = y0 + max(0.028 * h * st.depth(y0), 2.0)
        m = _poly(h, w, [[st.edge(y, s), y] for y, s in ((y0, -1), (y0, 1), (y1, 1), (y1, -1))])
        odd = _stripes(st, rng.uniform(2.0, 3.5), 1.0)
        objs.append((BUMP, [(m & ~odd, (235, 200, 30), None), (m & odd, (35, 35, 35), None)]))
    if rng.random() < 0.45:  # a guardrail beside the road: beam with a groove, posts in perspective
        side = 1 if rng.random() < 0.5 else -1
        off = rng.uniform(0.06, 0.12) * w
        y0, y1 = hz + (h - hz) * rng.uniform(0.02, 0.15), h - 1.0

        def at(y, lift):
            return [st.edge(y, side) + side * off * st.depth(y), y - lift * 0.12 * h * st.depth(y)]

        beam = _poly(h, w, [at(y0, 0.8), at(y1, 0.8), at(y1, 0.45), at(y0, 0.45)])
        groove = _poly(h, w, [at(y0, 0.66), at(y1, 0.66), at(y1, 0.58), at(y0, 0.58)]) & beam
        posts = np.zeros((h, w), np.uint8)
        for g in np.arange(np.floor(float(st.inv_depth(y1))), float(st.inv_depth(y0)), 1.5):
            y = st.row(g)
            if y0 <= y <= y1:
                (xa, ya), (_, yb) = at(y, 0.0), at(y, 0.8)
                cv2.line(posts, (int(xa), int(ya)), (int(xa), int(yb)), 1, st.px(0.9 * st.depth(y)))
        posts = posts.astype(bool) & ~beam
        grey = np.array((200, 205, 210)) * rng.uniform(0.85, 1.05)
        parts = [(beam & ~groove, grey, None), (groove, grey * 0.75, None), (posts, grey * 0.85, None)]
        objs.append((GUARDRAIL, parts))
    return objs


def _car(rng: np.random.Generator, st: _Street, y: float, x: float):
    """A car standing on row ``y``: from behind (hot exhaust) or from the side (hot engine hood)."""
    d = st.depth(y)
    paint = _pick(rng, _PAINTS["car"]) * rng.uniform(0.9, 1.05)
    body_t = rng.uniform(*_CAR_BODY)
    glass, tyre = (45, 60, 75), (25, 25, 28)
    if rng.random() < 0.6:  # from behind: box, cabin with rear window, tyres, exhaust and bumper band
        cw = rng.uniform(0.09, 0.17) * st.w * d
        ch = cw * rng.uniform(0.75, 0.95)
        body = _box(st, x, y, cw, ch, -0.5, -0.55, 0.5, -0.12)
        cabin = _trapezoid(st, x, y, cw, ch, 0.45, -0.55, 0.33, -1.0)
        window = cabin & _trapezoid(st, x, y, cw, ch, 0.36, -0.6, 0.27, -0.93)
        tyres = _box(st, x, y, cw, ch, -0.45, -0.15, -0.28, 0.0)
        tyres |= _box(st, x, y, cw, ch, 0.28, -0.15, 0.45, 0.0)
        band = body & _box(st, x, y, cw, ch, -1.0, -0.27, 1.0, 0.0)
        ex = x + (0.3 if rng.random() < 0.5 else -0.3) * cw
        axes = (max(int(0.09 * cw), 1), max(int(0.06 * cw), 1))
        exhaust = (int(ex), int(y - 0.17 * ch))
        hot = _mask(st.h, st.w, lambda m: cv2.ellipse(m, exhaust, axes, 0, 0, 360, 1, -1)) & (body | tyres)
        return CAR, [
            ((body | cabin) & ~window & ~band & ~hot, paint, body_t),
            (band & ~hot, paint * 0.7, body_t + rng.uniform(8, 16)),
            (window, glass, body_t - rng.uniform(15, 25)),
            (tyres & ~hot, tyre, body_t + 5),
            (hot, paint * 0.5, rng.uniform(*_CAR_HOT)),
        ]
    cw = rng.uniform(0.13, 0.23) * st.w * d  # from the side: long body, cabin, wheels, engine at the front
    ch = cw * rng.uniform(0.38, 0.48)
    front = 1 if rng.random() < 0.5 else -1
    body = _box(st, x, y, cw, ch, -0.5, -0.65, 0.5, -0.18)
    cabin = _trapezoid(st, x, y, cw, ch, 0.3, -0.65, 0.18, -1.0)
    window = _trapezoid(st, x, y, cw, ch, 0.25, -0.68, 0.15, -0.92) & cabin
    r = max(int(0.22 * ch), 1)
    tyres = np.zeros((st.h, st.w), np.uint8)
    for wx in (x - 0.3 * cw, x + 0.3 * cw):
        cv2.circle(tyres, (int(wx), int(y - r)), r, 1, -1)
    tyres = tyres.astype(bool)
    hood = body & _box(st, x, y, front * cw, ch, 0.32, -1.0, 1.0, 0.0)
    return CAR, [
        ((body | cabin) & ~window & ~hood & ~tyres, paint, body_t),
        (hood & ~tyres, paint, rng.uniform(*_CAR_HOT) - 10),
        (window, glass, body_t - rng.uniform(15, 25)),
        (tyres, tyre, body_t + 5),
    ]


def _person(rng: np.random.Generator, st: _Street, y: float, x: float, height: float, seated: bool = False):
    """A walking person with its feet at (x, y), or a seated one (a rider) with its hips there."""
    t = rng.uniform(*_PERSON)
    skin = np.array((200, 160, 130)) * rng.uniform(0.6, 1.1)
    shirt, trousers = _pick(rng, _PAINTS["cloth"]), _pick(rng, _PAINTS["cloth"])
    lean = (0.15 if rng.random() < 0.5 else -0.15) * height if seated else 0.0
    hip = (x, y if seated else y - 0.45 * height)
    neck = (x + lean, hip[1] - (0.38 if seated else 0.36) * height)
    r, limb = max(int(round(0.09 * height)), 1), max(int(round(0.08 * height)), 1)
    hand = (neck[0] + 1.6 * lean, hip[1] - 0.12 * height) if seated else (x + 0.08 * height, hip[1])
    feet = [(x + 0.7 * lean, y + 0.35 * height)] if seated else [
        (x + s * rng.uniform(0.02, 0.12) * height, y) for s in (-1, 1)
    ]

    def seg(m, a, b, thick):
        cv2.line(m, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 1, thick)

    head = _mask(st.h, st.w, lambda m: cv2.circle(m, (int(neck[0]), int(neck[1] - r)), r, 1, -1))
    torso = np.zeros((st.h, st.w), np.uint8)
    seg(torso, hip, neck, max(int(round(0.17 * height)), 1))
    seg(torso, (neck[0], neck[1] + limb), hand, limb)
    legs = np.zeros((st.h, st.w), np.uint8)
    for foot in feet:
        seg(legs, hip, foot, limb)
    torso = torso.astype(bool) & ~head
    legs = legs.astype(bool) & ~torso & ~head
    return PERSON, [(head, skin, t + 6), (torso, shirt, t), (legs, trousers, t - 5)]


def _bike(rng: np.random.Generator, st: _Street, y: float, x: float):
    """A side-view two-wheeler with its wheels on row ``y``, often with its rider (a person)."""
    motor = rng.random() < 0.5
    r = max(rng.uniform(0.035, 0.05) * st.h * st.depth(y) * (1.2 if motor else 1.0), 1.5)
    length = 3.2 * r * (1 if rng.random() < 0.5 else -1)
    rear, front = (x - length / 2, y - r), (x + length / 2, y - r)
    seat, bar, crank = (x - 0.15 * length, y - 2.4 * r), (x + 0.35 * length, y - 2.7 * r), (x, y - 0.9 * r)
    thick = max(int(round(r / 3)), 1)
    t = rng.uniform(*_BIKE)
    frame = np.zeros((st.h, st.w), np.uint8)
    for hx, hy in (rear, front):
        cv2.circle(frame, (int(hx), int(hy)), int(round(r)), 1, thick)
    for a, b in ((rear, seat), (seat, crank), (crank, rear), (seat, bar), (bar, front), (crank, bar)):
        cv2.line(frame, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 1, thick)
    frame = frame.astype(bool)
    parts = [(frame, _pick(rng, _PAINTS["car"]) * 0.8, t)]
    if motor:  # an engine block between the wheels, hotter than the rest
        block = [(-0.5, -1.0), (-0.15, -2.4), (0.35, -2.7), (0.2, -0.6), (-0.2, -0.6)]
        engine = _shape(st, x, y, length, r, block)
        hot = min(t + rng.uniform(5, 15), 235.0)
        parts = [(frame & ~engine, parts[0][1], t), (engine, (70, 70, 75), hot)]
    objs = [(BIKE, parts)]
    if rng.random() < (0.8 if motor else 0.6):
        size = rng.uniform(0.22, 0.3) * st.h * st.depth(y)
        objs.append(_person(rng, st, seat[1], seat[0], size, seated=True))
    return objs


def _cone(rng: np.random.Generator, st: _Street, y: float, x: float):
    """A traffic cone on row ``y``: orange or red, with a white reflective band."""
    hc = max(rng.uniform(0.06, 0.09) * st.h * st.depth(y), 3.0)
    body = _trapezoid(st, x, y, hc, hc, 0.3, -0.12, 0.07, -1.0)
    body |= _box(st, x, y, hc, hc, -0.42, -0.12, 0.42, 0.0)
    white = body & _box(st, x, y, hc, hc, -1.0, -0.62, 1.0, -0.45)
    orange = (240, 95, 20) if rng.random() < 0.7 else (220, 40, 30)
    return COLOR_CONE, [(body & ~white, orange, None), (white, (240, 240, 240), None)]


def _car_stop(rng: np.random.Generator, st: _Street, y: float, x: float):
    """A wheel stop on row ``y``: a low bar, yellow or concrete with yellow stripes."""
    d = st.depth(y)
    m = _box(st, x, y, rng.uniform(0.06, 0.1) * st.w * d, max(0.03 * st.h * d, 2.0), -0.5, -1.0, 0.5, 0.0)
    if rng.random() < 0.5:
        return CAR_STOP, [(m, (235, 195, 30), None)]
    odd = _stripes(st, 2.5, 0.0)
    return CAR_STOP, [(m & ~odd, (185, 185, 180), None), (m & odd, (235, 195, 30), None)]


def _standing_objects(rng: np.random.Generator, st: _Street):
    """Cars, persons, bikes (with riders), cones and car stops, from the far ones to the near ones."""
    h, w, hz = st.h, st.w, st.horizon
    placed = []

    def ground_row():
        return hz + 1 + (h - hz - 1) * rng.uniform(0.03, 1.0)

    def on_road(y, margin=0.1):
        a, b = st.edge(y, -1), st.edge(y, 1)
        return rng.uniform(a + margin * (b - a), b - margin * (b - a))

    def beside_road(y, spread):
        side = 1 if rng.random() < 0.5 else -1
        return st.edge(y, side) + side * rng.uniform(*spread) * w * st.depth(y)

    for _ in range(int(rng.integers(1, 5))):
        y = ground_row()
        placed.append((y, [_car(rng, st, y, on_road(y))]))
    for _ in range(int(rng.integers(1, 5))):
        y = ground_row()
        x = beside_road(y, (0.0, 0.2)) if rng.random() < 0.6 else on_road(y)
        placed.append((y, [_person(rng, st, y, x, rng.uniform(0.2, 0.32) * h * st.depth(y))]))
    for _ in range(int(rng.integers(0, 3))):
        y = ground_row()
        placed.append((y, _bike(rng, st, y, on_road(y, 0.05))))
    for _ in range(int(rng.integers(0, 5))):
        y = ground_row()
        placed.append((y, [_cone(rng, st, y, on_road(y, 0.0))]))
    for _ in range(int(rng.integers(0, 3))):
        y = ground_row()
        placed.append((y, [_car_stop(rng, st, y, beside_road(y, (-0.1, -0.02)))]))
    placed.sort(key=lambda p: p[0])
    return [obj for _, objs in placed for obj in objs]


def render_scene(rng: np.random.Generator, height: int, width: int, day: bool):
    """One scene: (rgb uint8 H x W x 3, thermal uint8 H x W, label uint8 H x W of MFNet class ids)."""
    bg_rgb, glow, bg_thermal, st = _street(rng, height, width, day)
    dim = 1.0 if day else rng.uniform(0.1, 0.2)
    behind = bg_rgb * dim + glow if not day else bg_rgb
    rgb = behind.copy()
    thermal = bg_thermal.copy()
    label = np.zeros((height, width), np.uint8)
    light = 1.0 + 0.1 * _smooth_noise(rng, height, width, st.px(2))
    warmth = 3.0 * _smooth_noise(rng, height, width, st.px(1.5))
    for cls, parts in _ground_objects(rng, st) + _standing_objects(rng, st):
        reflect = 1.0 if day else rng.uniform(*_REFLECTIVE)
        offset = rng.uniform(-2, 2)
        for m, colour, temp in parts:
            if not m.any():
                continue
            label[m] = cls
            if temp is None:  # painted, cold: its paint in RGB (reflective at night), the street in thermal
                rgb[m] = np.asarray(colour, np.float32) * light[m][:, None] * reflect
                thermal[m] = bg_thermal[m]
            else:  # warm: its own temperature; its colours by day, the dark scene behind it at night
                rgb[m] = np.asarray(colour, np.float32) * light[m][:, None] if day else behind[m] + offset
                thermal[m] = temp + warmth[m]

    # RGB sensor: Poisson shot noise (fewer photons per level at night: higher gain) and read noise.
    per_level = rng.uniform(2.5, 5.0) if day else rng.uniform(0.25, 0.5)
    rgb = rng.poisson(np.clip(rgb, 0, None) * per_level) / per_level
    rgb += rng.normal(0.0, 1.0 if day else 2.0, size=rgb.shape)
    # Thermal camera: optics blur, vignetting (cooler corners), fixed-pattern column offsets, noise.
    thermal = cv2.GaussianBlur(thermal, (0, 0), 0.55 * height / 96)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((yy - height / 2) / (height / 2)) ** 2 / 2 + ((xx - width / 2) / (width / 2)) ** 2 / 2
    thermal -= rng.uniform(6, 14) * r2
    thermal += rng.normal(0.0, rng.uniform(1.5, 3.0), size=width)[None, :]
    thermal += rng.normal(0.0, 1.2, size=thermal.shape)
    to_u8 = lambda a: np.clip(np.round(a), 0, 255).astype(np.uint8)  # noqa: E731
    return to_u8(rgb), to_u8(thermal), label


def generate_synthetic_mfnet(
    root: str,
    *,
    seed: int = 0,
    num_train: int = 96,
    num_val: int = 16,
    num_test: int = 48,
    height: int = 96,
    width: int = 128,
) -> str:
    """Write the family to ``<root>/SyntheticMFNet_<height>x<width>`` (MFNet layout) and return that path.

    Deterministic for ``seed`` and idempotent like ``generate_synthetic_rgbt`` (same ``manifest.json``
    logic); other parameters replace the set of that size. 96x128 is read as ``synthetic_mfnet_*``,
    480x640 as ``synthetic_mfnet_480x640_*``; other sizes through ``register_rgbt_sem_seg``.
    """
    params = {
        "generator": "synthetic_mfnet",
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "num_train": int(num_train),
        "num_val": int(num_val),
        "num_test": int(num_test),
        "height": int(height),
        "width": int(width),
    }
    out = os.path.join(os.fspath(root), SYNTHETIC_MFNET_FOLDER.format(height=int(height), width=int(width)))
    return _write_mfnet_layout(out, render_scene, params, "generate_synthetic_mfnet")


def main(argv: list[str] | None = None) -> str:
    """``python -m sartm_d2.data.synthetic_mfnet [--root DIR --height H --width W ...]``: the folder."""
    return _cli(generate_synthetic_mfnet, "Generate the synthetic MFNet-like RGB-T family (9 classes).", argv)


if __name__ == "__main__":
    main()
