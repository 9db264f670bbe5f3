#!/usr/bin/env python
"""How well the rig calibration recovers a known rig, where it refuses, and what the warp costs.

    python tools/measure_rig.py --trials 5 --json benchmarks/results/cpu_rig_480x640.json

Recovery: scenes of the synthetic set drawn at 480x640 (``sartm_d2.data.synthetic_rig``) are seen by
a thermal camera of another resolution (``--thermal-sizes``) through random homographies (shift up
to 30 px, rotation up to 3 degrees, scale 0.9 to 1.1, a slight keystone). For each calibration mode
(clicked points with clicking noise, one per cell of a grid over the image; a heated checkerboard and
circle grid drawn into both views; the automatic mode on ``--frames`` ordinary pairs, alternately day
and night, from the size guess or from 4 clicked points) it reports the mean corner error of the
recovered homography (RGB pixels: where the thermal image's corners land, against the truth) and how
often it refused. Then the failure cases, each expected to be refused: flat
scenes, too few frames, a pair out of sync.

Cost: ``warp_thermal`` of one thermal frame into a 480x640 RGB frame (the rig's per-pixel maps are
built once per rig and process, timed apart) against the forward pass of a random-weight Hiera-T
SARTM at 480x640 (MFNet config, prepared for inference, fp32, eager), in interleaved rounds of one
run on one machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import sartm_d2  # noqa: F401  (compat patches + registration before detectron2)

# isort: split

import cv2
import numpy as np
import torch

from sartm_d2.benchmark.measure import build_benchmark_model, build_cfg, cpu_flags, machine_info, make_inputs
from sartm_d2.data.rig import Rig, corner_error, warp_thermal
from sartm_d2.data.rig_calibration import (
    CalibrationError,
    calibrate_from_pattern,
    calibrate_from_points,
    calibrate_from_scenes,
)
from sartm_d2.data.synthetic_rig import random_rig_homography, render_board_pair, render_rig_scene

RGB_SIZE = (480, 640)
PATTERNS = {"checkerboard": (9, 6), "circles": (7, 5)}


def _scenes(truth: Rig, n: int, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        rgb, thermal, _ = render_rig_scene(rng, truth.homography, truth.rgb_size, truth.thermal_size,
                                           day=i % 2 == 0)
        out.append((f"pair{i}", thermal, rgb))
    return out


def _points(truth: Rig, grid: tuple[int, int], noise: float, seed: int):
    """One pair per cell of a ``grid`` (columns, rows) over the thermal image, as a user clicks them
    (spread over the whole image, where RGB sees it too), with ``noise`` px on each coordinate."""
    rng = np.random.default_rng(seed)
    th, tw = truth.thermal_size
    cols, rows = grid
    src = []
    for r in range(rows):
        for c in range(cols):
            while True:
                p = np.array([rng.uniform(c * tw / cols, (c + 1) * tw / cols),
                              rng.uniform(r * th / rows, (r + 1) * th / rows)])
                q = cv2.perspectiveTransform(p[None, None], truth.homography)[0, 0]
                if 8 <= q[0] < truth.rgb_size[1] - 8 and 8 <= q[1] < truth.rgb_size[0] - 8 and p.min() > 8 \
                        and p[0] < tw - 8 and p[1] < th - 8:
                    src.append(p)
                    break
    src = np.array(src)
    dst = cv2.perspectiveTransform(src[None], truth.homography)[0]
    return src + rng.normal(0, noise, src.shape), dst + rng.normal(0, noise, dst.shape)


def _run(name: str, fn, truth: Rig, rows: list, **extra) -> None:
    """Call one calibration; a row with its corner error against ``truth``, or why it refused."""
    row = {"mode": name, "corner_error_px": None, "residual_px": None, "refused": None, **extra}
    t0 = time.perf_counter()
    try:
        cal = fn()
        row.update(corner_error_px=corner_error(truth, cal.rig.homography), residual_px=cal.rig.residual_px)
    except CalibrationError as e:
        row["refused"] = str(e).splitlines()[0]
    row["s"] = time.perf_counter() - t0
    rows.append(row)


def recovery(thermal_sizes, trials: int, frames: int, noise: float) -> list[dict]:
    rows: list[dict] = []
    for thermal_size in thermal_sizes:
        for trial in range(trials):
            truth = Rig(random_rig_homography(np.random.default_rng([11, trial]), thermal_size, RGB_SIZE),
                        RGB_SIZE, thermal_size)
            common = {"thermal_size": thermal_size, "trial": trial}
            for grid in ((2, 2), (4, 3), (6, 4)):
                n = grid[0] * grid[1]
                src, dst = _points(truth, grid, noise, seed=100 + trial)
                sizes = {"thermal_size": thermal_size, "rgb_size": RGB_SIZE}
                _run(f"points, {n} pairs, {noise:g} px clicking noise",
                     lambda s=src, d=dst, z=sizes: calibrate_from_points(s, d, **z), truth, rows, **common)
            for kind, pattern in PATTERNS.items():
                boards = []
                for i in range(3):
                    rng = np.random.default_rng([12, trial, i])
                    rgb, thermal = render_board_pair(rng, truth.homography, RGB_SIZE, thermal_size,
                                                     pattern=pattern, kind=kind)
                    boards.append((f"board{i}", thermal, rgb))
                _run(f"{kind} {pattern[0]}x{pattern[1]}, 3 frames",
                     lambda b=boards, k=kind, p=pattern: calibrate_from_pattern(b, p, kind=k), truth, rows,
                     **common)
            scenes = _scenes(truth, frames, seed=13 + trial)
            for n in sorted({frames, 4, 2}, reverse=True):
                _run(f"automatic (ecc), {n} pairs", lambda s=scenes[:n]: calibrate_from_scenes(s), truth,
                     rows, **common)
            src, dst = _points(truth, (2, 2), noise, seed=100 + trial)
            init = calibrate_from_points(src, dst, thermal_size=thermal_size, rgb_size=RGB_SIZE).rig
            _run(f"automatic (ecc), {frames} pairs, from the 4 clicked pairs",
                 lambda s=scenes, h=init.homography: calibrate_from_scenes(s, init=h), truth, rows, **common)
    return rows


def failures(thermal_size, frames: int) -> list[dict]:
    """The cases the automatic mode must refuse."""
    rows: list[dict] = []
    truth = Rig(random_rig_homography(np.random.default_rng([11, 0]), thermal_size, RGB_SIZE), RGB_SIZE,
                thermal_size)
    rng = np.random.default_rng(14)
    flat = [(f"flat{i}", rng.normal(100, 2, thermal_size).astype(np.float32),
             rng.normal(120, 3, (*RGB_SIZE, 3)).clip(0, 255).astype(np.uint8)) for i in range(frames)]
    _run(f"automatic, {frames} flat pairs (noise only)", lambda: calibrate_from_scenes(flat), truth, rows)
    scenes = _scenes(truth, frames, seed=15)
    _run("automatic, 2 pairs (--min-frames 3)", lambda: calibrate_from_scenes(scenes[:2]), truth, rows)
    name, thermal, rgb = scenes[2]
    shift = 6 * thermal_size[1] / RGB_SIZE[1]  # 6 RGB pixels
    drifted = cv2.warpAffine(thermal, np.float32([[1, 0, shift], [0, 1, 0]]), thermal.shape[::-1],
                             borderMode=cv2.BORDER_REFLECT)
    bad = [*scenes[:2], (name, drifted, rgb), *scenes[3:]]
    _run(f"automatic, {frames} pairs, {name} out of sync by 6 px", lambda: calibrate_from_scenes(bad), truth,
         rows)
    return rows


def cost(thermal_size, rounds: int, config: str) -> dict:
    """Median warp and model times per 480x640 frame, interleaved."""
    truth = Rig(random_rig_homography(np.random.default_rng([11, 0]), thermal_size, RGB_SIZE), RGB_SIZE,
                thermal_size)
    thermal = np.random.default_rng(0).uniform(0, 255, thermal_size).astype(np.float32)
    t0 = time.perf_counter()
    warp_thermal(thermal, truth)  # builds and keeps the rig's maps
    first = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build_cfg(config, size="t", device="cpu", embeddings_dir=tmp, opts=[])
        model = build_benchmark_model(cfg).eval().prepare_for_inference()
    inputs = make_inputs(1, RGB_SIZE, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, torch.device("cpu"), labels=False)
    warps, models = [], []
    with torch.no_grad():
        model(inputs)  # warm-up
        for _ in range(rounds):
            t0 = time.perf_counter()
            model(inputs)
            models.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for _ in range(20):
                warp_thermal(thermal, truth)
            warps.append((time.perf_counter() - t0) / 20)
    warp, forward = statistics.median(warps), statistics.median(models)
    return {"thermal_size": list(thermal_size), "rounds": rounds, "warp_ms": 1000 * warp,
            "first_warp_ms": 1000 * first, "model_ms": 1000 * forward, "ratio": warp / forward,
            "warp_times_s": warps, "model_times_s": models, "torch_threads": torch.get_num_threads(),
            "opencv_threads": cv2.getNumThreads()}


def _table(rows: list[dict]) -> list[str]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((tuple(r.get("thermal_size", ())), r["mode"]), []).append(r)
    lines = ["| thermal (HxW) | mode | mean corner error px (trials) | worst px | refused | s / trial |",
             "|---|---|---|---|---|---|"]
    for (size, mode), rs in groups.items():
        ok = [r["corner_error_px"] for r in rs if r["refused"] is None]
        refused = sum(r["refused"] is not None for r in rs)
        mean = f"{statistics.fmean(ok):.2f} ({len(ok)})" if ok else "-"
        worst = f"{max(ok):.2f}" if ok else "-"
        where = "x".join(str(v) for v in size) if size else ""
        lines.append(f"| {where} | {mode} | {mean} | {worst} | {refused} of {len(rs)} | "
                     f"{statistics.fmean(r['s'] for r in rs):.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--thermal-sizes", nargs="+", default=["384x512", "512x640"],
                   help="HxW of the thermal camera")
    p.add_argument("--trials", type=int, default=5, help="random rigs per thermal size")
    p.add_argument("--frames", type=int, default=8, help="pairs of the automatic mode")
    p.add_argument("--click-noise", type=float, default=1.0,
                   help="clicking noise, pixels (standard deviation per coordinate)")
    p.add_argument("--rounds", type=int, default=8, help="interleaved timing rounds")
    p.add_argument("--config-file", default="configs/mfnet.yaml")
    p.add_argument("--skip-cost", action="store_true")
    p.add_argument("--json", help="write every figure here")
    args = p.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.thermal_sizes]
    rows = recovery(sizes, args.trials, args.frames, args.click_noise)
    print(f"Recovery at RGB {RGB_SIZE[0]}x{RGB_SIZE[1]}: {args.trials} random rigs per thermal size")
    print("\n".join(_table(rows)))
    fails = failures(sizes[0], args.frames)
    print("\nWhere the automatic mode must refuse:")
    for r in fails:
        print(f"- {r['mode']}: " + (f"REFUSED: {r['refused']}" if r["refused"] else
                                    f"NOT refused (corner error {r['corner_error_px']:.2f} px)"))
    result = {"machine": machine_info(torch.device("cpu")), "recovery": rows, "failures": fails}
    if not args.skip_cost:
        c = cost(sizes[-1], args.rounds, args.config_file)
        result["cost"] = c
        flags = cpu_flags()
        print(f"\nCost per 480x640 frame ({args.rounds} interleaved rounds, thermal "
              f"{c['thermal_size'][0]}x{c['thermal_size'][1]}, {c['torch_threads']} torch / "
              f"{c['opencv_threads']} OpenCV threads): warp "
              f"{c['warp_ms']:.2f} ms (first call with the maps {c['first_warp_ms']:.1f} ms), Hiera-T SARTM "
              f"{c['model_ms']:.0f} ms: {100 * c['ratio']:.2f}% of the model")
        print("CPU flags: " + ", ".join(k for k, v in flags.items() if v))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
