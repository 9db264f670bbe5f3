"""A small synthetic RGB-T street set, so that SARTM can be trained and tested without downloads.

The set is written in the MFNet layout (``SyntheticRGBT/images/<name>.png`` = 4-channel R, G, B, T,
``labels/<name>.png``, ``train.txt`` / ``val.txt`` / ``test.txt``; names end in D or N), so the real
MFNet loader reads it as ``synthetic_rgbt_{train,val,test}``. Half of the scenes are day, half night
(alternating, so every split is balanced). The classes are chosen so that each modality matters:

- person, car: warm. Bright in thermal by day and by night; well visible in RGB by day, but at night
  they take the (dark, noisy) colour of what is behind them: nearly invisible in RGB.
- traffic sign, road marking: painted and cold. Clearly visible in RGB (retro-reflective, so also
  at night) and at the temperature of what is behind them: invisible in thermal.
- background: sky, buildings with lit windows at night, road, poles, plus warm background blobs
  (lamps, exhausts) in thermal, textured and noisy, so that neither brightness alone decides.

Everything is drawn with numpy/OpenCV from ``np.random.default_rng([seed, index])``: a given seed
gives byte-identical files, and each image does not depend on the others. A ``manifest.json`` of
the parameters makes a second call with the same parameters a no-op.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import shutil

import cv2
import numpy as np

__all__ = ["GENERATOR_VERSION", "generate_synthetic_rgbt", "main"]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
FOLDER = "SyntheticRGBT"
BACKGROUND, PERSON, CAR, SIGN, MARKING = range(5)
_SPLITS = ("train", "val", "test")
_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 3]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Low-frequency texture in about -1..1: Gaussian noise on a coarse grid, upsampled."""
    coarse = rng.normal(size=(h // cell + 2, w // cell + 2)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def _mask(h: int, w: int, draw) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    draw(m)
    return m.astype(bool)


def _background(rng: np.random.Generator, h: int, w: int, day: bool):
    """Day-light RGB (float H x W x 3) and thermal (float H x W) of the empty street; horizon row."""
    horizon = int(h * rng.uniform(0.35, 0.5))
    rgb = np.empty((h, w, 3), np.float32)
    sky = np.array([135.0, 180.0, 230.0]) * rng.uniform(0.8, 1.1)
    ramp = np.linspace(0.85, 1.1, horizon, dtype=np.float32)[:, None, None]
    rgb[:horizon] = sky * ramp
    rgb[horizon:] = rng.uniform(85, 130)  # asphalt
    thermal = np.empty((h, w), np.float32)
    thermal[:horizon] = rng.uniform(35, 55) if day else rng.uniform(20, 40)
    road_temp = rng.uniform(95, 125) if day else rng.uniform(55, 80)
    thermal[horizon:] = road_temp + np.linspace(0, 10, h - horizon, dtype=np.float32)[:, None]

    # Buildings standing on the horizon (background), with windows.
    x = int(rng.integers(-w // 8, w // 8))
    while x < w:
        bw = int(rng.integers(w // 8, w // 3))
        top = int(rng.integers(horizon // 6, max(horizon - 4, horizon // 6 + 1)))
        colour = rng.uniform(60, 200, size=3)
        rgb[top:horizon, max(x, 0) : x + bw] = colour
        thermal[top:horizon, max(x, 0) : x + bw] = rng.uniform(75, 105) if day else rng.uniform(55, 85)
        for _ in range(int(rng.integers(1, 5))):
            wy = int(rng.integers(top, max(horizon - 3, top + 1)))
            wx = int(rng.integers(max(x, 0), max(min(x + bw, w) - 3, max(x, 0) + 1)))
            lit = (not day) and rng.random() < 0.6  # lit windows: bright RGB distractors at night
            rgb[wy : wy + 3, wx : wx + 3] = (255, 230, 160) if lit else colour * 0.5
        x += bw + int(rng.integers(0, w // 10))
    # Warm background blobs (street lamps, exhausts, sun-heated spots): thermal distractors.
    for _ in range(int(rng.integers(0, 3))):
        cx, cy, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(2, 5))
        blob = _mask(h, w, lambda m, cx=cx, cy=cy, r=r: cv2.circle(m, (cx, cy), r, 1, -1))
        thermal[blob] = rng.uniform(120, 150)
    # Poles (background in RGB; thermally like their surroundings).
    for _ in range(int(rng.integers(0, 3))):
        px = int(rng.integers(0, w - 2))
        rgb[int(horizon * 0.3) : horizon + h // 8, px : px + 2] = rng.uniform(40, 90)

    texture = _smooth_noise(rng, h, w, 8)
    rgb += 18.0 * texture[:, :, None]
    thermal += 6.0 * _smooth_noise(rng, h, w, 6)
    return rgb, thermal, horizon


def _objects(rng: np.random.Generator, h: int, w: int, horizon: int):
    """Random objects as (class id, mask, RGB colour, temperature) in drawing order."""
    objs = []

    def depth(y: float) -> float:  # perspective: 0.3 at the horizon, 1 at the bottom row
        return 0.3 + 0.7 * (y - horizon) / max(h - horizon, 1)

    for _ in range(int(rng.integers(1, 4))):  # road markings: slanted dashes or crossing bars
        y0 = int(rng.integers(horizon + 2, h - 4))
        s = depth(y0)
        length, thick = max(int(rng.uniform(14, 40) * s * w / 160), 6), max(int(rng.uniform(3, 7) * s), 2)
        x0 = int(rng.integers(0, w))
        slant = rng.uniform(-0.8, 0.8)
        if rng.random() < 0.5:
            pts = np.array(
                [
                    [x0, y0],
                    [x0 + thick, y0],
                    [x0 + thick + slant * length, y0 + length],
                    [x0 + slant * length, y0 + length],
                ],
                np.int32,
            )
        else:
            pts = np.array(
                [[x0, y0], [x0 + length, y0], [x0 + length, y0 + thick], [x0, y0 + thick]], np.int32
            )
        m = _mask(h, w, lambda m, pts=pts: cv2.fillConvexPoly(m, pts, 1))
        colour = (240, 240, 235) if rng.random() < 0.7 else (235, 200, 40)
        objs.append((MARKING, m, np.array(colour, np.float32), None))

    for _ in range(int(rng.integers(0, 3))):  # cars: body, cabin and wheels
        yb = int(rng.integers(horizon + 4, h))
        s = depth(yb)
        cw = max(int(rng.uniform(0.18, 0.32) * w * s), 10)
        ch = max(int(cw * rng.uniform(0.4, 0.55)), 6)
        x0 = int(rng.integers(-cw // 3, w - cw // 2))

        def car(m, x0=x0, yb=yb, cw=cw, ch=ch):
            cv2.rectangle(m, (x0, yb - int(ch * 0.6)), (x0 + cw, yb - ch // 8), 1, -1)
            cabin = [
                [x0 + cw // 5, yb - int(ch * 0.6)],
                [x0 + cw // 3, yb - ch],
                [x0 + 2 * cw // 3, yb - ch],
                [x0 + 4 * cw // 5, yb - int(ch * 0.6)],
            ]
            cv2.fillConvexPoly(m, np.array(cabin, np.int32), 1)
            for wx in (x0 + cw // 5, x0 + 4 * cw // 5):
                cv2.circle(m, (wx, yb - ch // 8), max(ch // 5, 1), 1, -1)

        objs.append(
            (CAR, _mask(h, w, car), rng.uniform(20, 235, size=3).astype(np.float32), rng.uniform(150, 195))
        )

    for _ in range(int(rng.integers(1, 4))):  # persons: head, torso, legs
        yf = int(rng.integers(horizon + 3, h))
        s = depth(yf)
        ph = max(int(rng.uniform(0.25, 0.4) * h * s), 10)
        xc = int(rng.integers(0, w))

        def person(m, xc=xc, yf=yf, ph=ph):
            head = max(ph // 9, 1)
            cv2.circle(m, (xc, yf - ph + head), head, 1, -1)
            cv2.ellipse(m, (xc, yf - int(ph * 0.6)), (max(ph // 8, 1), max(ph // 4, 1)), 0, 0, 360, 1, -1)
            leg = max(ph // 14, 1)
            cv2.line(m, (xc - leg, yf - int(ph * 0.4)), (xc - 2 * leg, yf), 1, leg + 1)
            cv2.line(m, (xc + leg, yf - int(ph * 0.4)), (xc + 2 * leg, yf), 1, leg + 1)

        objs.append(
            (
                PERSON,
                _mask(h, w, person),
                rng.uniform(20, 235, size=3).astype(np.float32),
                rng.uniform(190, 225),
            )
        )

    for _ in range(int(rng.integers(0, 3))):  # traffic signs: disc, triangle or diamond
        cx, cy = int(rng.integers(4, w - 4)), int(rng.integers(max(horizon // 3, 4), horizon + h // 6))
        r = int(rng.integers(max(h // 24, 3), max(h // 10, 4)))
        shape = int(rng.integers(0, 3))
        if shape == 0:
            m = _mask(h, w, lambda m, cx=cx, cy=cy, r=r: cv2.circle(m, (cx, cy), r, 1, -1))
        else:
            pts = (
                [[cx, cy - r], [cx + r, cy + r], [cx - r, cy + r]]
                if shape == 1
                else [[cx, cy - r], [cx + r, cy], [cx, cy + r], [cx - r, cy]]
            )
            m = _mask(h, w, lambda m, pts=pts: cv2.fillConvexPoly(m, np.array(pts, np.int32), 1))
        colour = [(220, 30, 30), (30, 70, 210), (245, 205, 20), (245, 245, 245)][int(rng.integers(0, 4))]
        objs.append((SIGN, m, np.array(colour, np.float32), None))
    return objs


def render_scene(rng: np.random.Generator, height: int, width: int, day: bool):
    """One scene: (rgb uint8 H x W x 3, thermal uint8 H x W, label uint8 H x W)."""
    bg_rgb, bg_thermal, horizon = _background(rng, height, width, day)
    dim = 1.0 if day else rng.uniform(0.12, 0.22)
    rgb = bg_rgb * dim
    thermal = bg_thermal.copy()
    label = np.zeros((height, width), np.uint8)
    for cls, m, colour, temp in _objects(rng, height, width, horizon):
        if not m.any():
            continue
        label[m] = cls
        shade = 1.0 + 0.12 * _smooth_noise(rng, height, width, 4)[m][:, None]
        if cls in (PERSON, CAR):
            # Warm: thermal from the body; RGB from its paint by day, else the dark scene behind it.
            rgb[m] = colour * shade if day else bg_rgb[m] * dim + rng.uniform(-3, 3)
            thermal[m] = temp + 6.0 * (shade[:, 0] - 1.0) / 0.12
        else:
            # Painted, cold: RGB from its paint (retro-reflective at night), thermal from behind it.
            rgb[m] = colour * shade * (1.0 if day else rng.uniform(0.7, 0.9))
            thermal[m] = bg_thermal[m]
    rgb += rng.normal(0.0, 3.0 if day else 6.0, size=rgb.shape)
    thermal = cv2.GaussianBlur(thermal, (3, 3), 0.8) + rng.normal(0.0, 2.5, size=thermal.shape)
    to_u8 = lambda a: np.clip(np.round(a), 0, 255).astype(np.uint8)  # noqa: E731
    return to_u8(rgb), to_u8(thermal), label


def _scene_names(counts: dict[str, int]) -> dict[str, list[str]]:
    """Names per split of a running index over train, val, test: even = day (``D``), odd = night (``N``)."""
    names: dict[str, list[str]] = {}
    index = 0
    for split in _SPLITS:
        names[split] = []
        for _ in range(counts[split]):
            names[split].append(f"{index:05d}{'D' if index % 2 == 0 else 'N'}")
            index += 1
    return names


def _write_mfnet_layout(out: str, render, params: dict, caller: str) -> str:
    """Write the scenes of ``render(rng, height, width, day)`` to ``out`` in the MFNet layout; return ``out``.

    The one writer of the synthetic families. ``params`` (``seed``, ``num_train``, ``num_val``,
    ``num_test``, ``height``, ``width`` and the generator's version) become ``manifest.json``. Scene
    ``i`` of the running index is drawn from ``np.random.default_rng([seed, i])``, so a seed gives
    byte-identical files and no image depends on another. When the manifest already records the same
    parameters and every file is there, nothing is written; other parameters replace the set; a
    non-empty folder without a manifest is refused. ``caller`` names the function in errors.
    """
    counts = {split: params[f"num_{split}"] for split in _SPLITS}
    for split, value in counts.items():
        if value < 1:
            raise ValueError(f"{caller}: num_{split} must be >= 1 (an empty split is unusable).")
    height, width = params["height"], params["width"]
    if height < 32 or width < 32:
        raise ValueError(f"{caller}: height and width must be >= 32, got {height}x{width}.")
    manifest = os.path.join(out, "manifest.json")
    names = _scene_names(counts)

    if os.path.isfile(manifest):
        with open(manifest) as f:
            old = json.load(f)
        every = [n for split in _SPLITS for n in names[split]]
        complete = all(
            os.path.isfile(os.path.join(out, d, f"{n}.png")) for n in every for d in ("images", "labels")
        )
        if old == params and complete:
            logger.info("Synthetic RGB-T set already at %s (same parameters); nothing to do.", out)
            return out
        logger.info("Synthetic RGB-T set at %s has other parameters or missing files; rebuilding.", out)
        for d in ("images", "labels"):
            shutil.rmtree(os.path.join(out, d), ignore_errors=True)
        os.remove(manifest)
    elif os.path.isdir(out) and os.listdir(out):
        raise ValueError(
            f"{out!r} exists, is not empty and has no manifest.json, so it was not written by "
            f"{caller}; remove it or choose another root."
        )

    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    os.makedirs(os.path.join(out, "labels"), exist_ok=True)
    index = 0
    for split in _SPLITS:
        for name in names[split]:
            rng = np.random.default_rng([int(params["seed"]), index])
            rgb, thermal, label = render(rng, height, width, day=name.endswith("D"))
            bgrt = np.dstack([rgb[:, :, ::-1], thermal])  # OpenCV writes B, G, R, A = stored R, G, B, T
            cv2.imwrite(os.path.join(out, "images", f"{name}.png"), bgrt, _PNG)
            cv2.imwrite(os.path.join(out, "labels", f"{name}.png"), label, _PNG)
            index += 1
        with open(os.path.join(out, f"{split}.txt"), "w") as f:
            f.write("\n".join(names[split]) + "\n")
    with open(manifest, "w") as f:  # last: a half-written set is rebuilt next time
        json.dump(params, f, indent=1, sort_keys=True)
    logger.info("Wrote the synthetic RGB-T set (%d images) to %s.", index, out)
    return out


def _cli(generate, description: str, argv: list[str] | None) -> str:
    """The command line of a generator: ``--root`` plus one option per size argument of ``generate``,
    whose defaults are those of ``generate``'s signature."""
    defaults = inspect.signature(generate).parameters
    keys = ("seed", "num_train", "num_val", "num_test", "height", "width")
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"), help="dataset root")
    for key in keys:
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=defaults[key].default)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return generate(args.root, **{key: getattr(args, key) for key in keys})


def generate_synthetic_rgbt(
    root: str,
    *,
    seed: int = 0,
    num_train: int = 96,
    num_val: int = 24,
    num_test: int = 48,
    height: int = 128,
    width: int = 160,
) -> str:
    """Write the synthetic set to ``<root>/SyntheticRGBT`` (MFNet layout) and return that path.

    Deterministic for ``seed`` and idempotent: when ``manifest.json`` already records the same
    parameters and every file is there, nothing is written. Other parameters replace the set.
    ``height`` and ``width`` should be multiples of 32 (Hiera's stride; the model pads otherwise).
    """
    params = {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "num_train": int(num_train),
        "num_val": int(num_val),
        "num_test": int(num_test),
        "height": int(height),
        "width": int(width),
    }
    out = os.path.join(os.fspath(root), FOLDER)
    return _write_mfnet_layout(out, render_scene, params, "generate_synthetic_rgbt")


def main(argv: list[str] | None = None) -> str:
    """``python -m sartm_d2.data.synthetic [--root DIR --height H ...]``; returns the folder written."""
    return _cli(generate_synthetic_rgbt, "Generate the synthetic RGB-T set in the MFNet layout.", argv)


if __name__ == "__main__":
    main()
