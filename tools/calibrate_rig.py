#!/usr/bin/env python
"""Estimate the rig file of an RGB + thermal camera pair that is not pixel-aligned, and write it.

    # clicked pixel pairs (CSV: x_thermal,y_thermal,x_rgb,y_rgb[,frame]), the sizes from one pair
    python tools/calibrate_rig.py points --points clicks.csv --rgb rgb/0001.png --thermal thermal/0001.png \\
        --output rig.json
    # a heated checkerboard (9x6 inner corners) or circle grid (7x5) in one or several pairs
    python tools/calibrate_rig.py checkerboard --pattern 9x6 --rgb board/rgb --thermal board/thermal \\
        --output rig.json
    # automatically, from a few ordinary pairs (edges of both cameras aligned; no board)
    python tools/calibrate_rig.py ecc --rgb scenes/rgb --thermal scenes/thermal --fov-ratio 0.8 \\
        --output rig.yaml

``--rgb`` / ``--thermal`` take image files (paired in the order given) or one folder each (paired by
file stem). It prints the residual of every pair or frame in RGB pixels and writes the rig
(``sartm_d2.data.rig``, JSON or YAML by the extension) atomically. When the estimate cannot be
trusted (too few points or frames, no board found, a degenerate homography, no convergence, frames
that disagree, a flat scene) it says why, writes nothing and exits with status 1. Register the
set with ``register_rgbt_sem_seg(..., rig="rig.json")`` and check it with ``datasets/check.py``.
"""

from __future__ import annotations

import argparse
import os
import sys

from sartm_d2.data.io import IMAGE_EXTENSIONS, THERMAL_16BIT_NORMS, read_rgb, read_thermal
from sartm_d2.data.rig import save_rig
from sartm_d2.data.rig_calibration import (
    CalibrationError,
    calibrate_from_pattern,
    calibrate_from_points,
    calibrate_from_scenes,
    read_point_pairs,
)


def _size(text: str) -> tuple[int, int]:
    """``HxW`` -> (H, W)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 480x640), got {text!r}") from None
    return h, w


def _pattern(text: str) -> tuple[int, int]:
    """``COLSxROWS`` -> (columns, rows)."""
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected COLSxROWS (e.g. 9x6), got {text!r}") from None
    return cols, rows


def _images(paths: list[str]) -> list[str]:
    if len(paths) == 1 and os.path.isdir(paths[0]):
        return sorted(
            os.path.join(paths[0], f) for f in os.listdir(paths[0])
            if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS and not f.startswith(".")
        )
    return list(paths)


def _pairs(rgb: list[str], thermal: list[str]) -> list[tuple[str, str, str]]:
    """(name, RGB file, thermal file): folders are paired by stem, file lists by position."""
    rgb_files, thermal_files = _images(rgb), _images(thermal)
    if len(rgb) == 1 and len(thermal) == 1 and os.path.isdir(rgb[0]) and os.path.isdir(thermal[0]):
        stem = lambda p: os.path.splitext(os.path.basename(p))[0]  # noqa: E731
        by_stem = {stem(p): p for p in thermal_files}
        alone = [stem(p) for p in rgb_files if stem(p) not in by_stem]
        if alone:
            raise SystemExit(
                f"error: RGB image(s) without a thermal image of the same stem in {thermal[0]!r}: {alone[:5]}"
            )
        return [(stem(p), p, by_stem[stem(p)]) for p in rgb_files]
    if len(rgb_files) != len(thermal_files):
        raise SystemExit(
            f"error: {len(rgb_files)} RGB but {len(thermal_files)} thermal images: give them in pairs."
        )
    return [(os.path.basename(r), r, t) for r, t in zip(rgb_files, thermal_files)]


def _read(pairs, norm: str):
    """(name, thermal float32 0..255, RGB uint8) per pair, as the data loader reads them."""
    return [(name, read_thermal(t, norm), read_rgb(r)) for name, r, t in pairs]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("method", choices=["points", "checkerboard", "circles", "ecc"])
    p.add_argument("--output", required=True, help="the rig file to write (.json, .yaml or .yml)")
    p.add_argument("--rgb", nargs="+", default=[], help="RGB image files, or one folder")
    p.add_argument("--thermal", nargs="+", default=[], help="thermal image files, or one folder")
    p.add_argument("--thermal-16bit-norm", default="percentile", choices=THERMAL_16BIT_NORMS,
                   help="how 16-bit thermal images are brought to 0..255 (as INPUT.THERMAL_16BIT_NORM)")
    p.add_argument("--points", help="points: CSV of clicked pairs x_thermal,y_thermal,x_rgb,y_rgb[,frame]")
    p.add_argument("--rgb-size", type=_size, help="points without images: the RGB images' HxW")
    p.add_argument("--thermal-size", type=_size, help="points without images: the thermal images' HxW")
    p.add_argument("--ransac-px", type=float, default=5.0,
                   help="points: a pair this far (RGB pixels) from the others' homography is a mis-click")
    p.add_argument("--pattern", type=_pattern,
                   help="checkerboard: inner corners COLSxROWS; circles: circles COLSxROWS")
    p.add_argument("--max-residual", type=float, default=None,
                   help="points / board: refuse above this mean reprojection error, RGB pixels "
                   "(default 3 for points, 2 for a board)")
    p.add_argument("--fov-ratio", type=float,
                   help="ecc: thermal over RGB horizontal field of view (the starting guess)")
    p.add_argument("--init-points", help="ecc: start from the homography of these clicked pairs (CSV)")
    p.add_argument("--min-frames", type=int, default=3, help="ecc: refuse with fewer usable pairs")
    p.add_argument("--max-frame-offset", type=float, default=1.5,
                   help="ecc: refuse when a pair's edges stay offset by more (RGB pixels) under the rig")
    p.add_argument("--iterations", type=int, default=100, help="ecc: steps per pyramid level")
    args = p.parse_args(argv)

    pairs = _pairs(args.rgb, args.thermal)
    try:
        if args.method == "points":
            if not args.points:
                p.error("points needs --points CSV")
            if pairs:
                _, thermal, rgb = _read(pairs[:1], args.thermal_16bit_norm)[0]
                sizes = {"thermal_size": thermal.shape[:2], "rgb_size": rgb.shape[:2]}
            elif args.rgb_size and args.thermal_size:
                sizes = {"thermal_size": args.thermal_size, "rgb_size": args.rgb_size}
            else:
                p.error("points needs an --rgb and a --thermal image (for the sizes), or --rgb-size and "
                        "--thermal-size")
            src, dst, frames = read_point_pairs(args.points)
            kwargs = {} if args.max_residual is None else {"max_residual_px": args.max_residual}
            cal = calibrate_from_points(src, dst, frames=frames, ransac_px=args.ransac_px, **sizes, **kwargs)
        else:
            if not pairs:
                p.error(f"{args.method} needs --rgb and --thermal images")
            frames = _read(pairs, args.thermal_16bit_norm)
            if args.method in ("checkerboard", "circles"):
                if not args.pattern:
                    p.error(f"{args.method} needs --pattern COLSxROWS")
                kwargs = {} if args.max_residual is None else {"max_residual_px": args.max_residual}
                cal = calibrate_from_pattern(frames, args.pattern, kind=args.method, **kwargs)
            else:
                init = None
                if args.init_points:
                    src, dst, names = read_point_pairs(args.init_points)
                    init = calibrate_from_points(src, dst, frames=names, thermal_size=frames[0][1].shape[:2],
                                                 rgb_size=frames[0][2].shape[:2]).rig.homography
                cal = calibrate_from_scenes(
                    frames, init=init, fov_ratio=args.fov_ratio, min_frames=args.min_frames,
                    max_frame_offset_px=args.max_frame_offset, iterations=args.iterations,
                )
    except CalibrationError as e:
        print(f"refused ({args.method}): {e}\nNo rig file written.", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as e:  # an unreadable image or point file: named in the message
        print(f"error: {e}\nNo rig file written.", file=sys.stderr)
        return 2
    rig = cal.rig
    print(f"{args.method}: thermal {rig.thermal_size[1]}x{rig.thermal_size[0]} -> RGB "
          f"{rig.rgb_size[1]}x{rig.rgb_size[0]} (WxH)")
    print("residual (RGB pixels):")
    for name, value in cal.residuals_px.items():
        print(f"  {name}: {value:.2f}")
    print(f"  mean: {rig.residual_px:.2f}")
    for note in cal.notes:
        print(f"note: {note}")
    save_rig(rig, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
