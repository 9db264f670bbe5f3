"""SARTM demo in Detectron2's style: segment RGB-thermal pairs and draw RGB | thermal | prediction.

Examples::

    # one pair
    python demo/demo.py --config-file configs/pst900.yaml --input rgb/0001.png --thermal thermal/0001.png \\
        --output output/demo --opts MODEL.WEIGHTS output/pst900/model_final.pth
    # a folder of pairs (rgb/ + thermal/, or FMB's Visible/ + Infrared/)
    python demo/demo.py --config-file configs/fmb.yaml --input datasets/FMB/test --output output/demo \\
        --opts MODEL.WEIGHTS output/fmb/model_final.pth
    # MFNet 4-channel RGBT PNGs (files, a folder, or a quoted glob pattern)
    python demo/demo.py --config-file configs/mfnet.yaml --input "datasets/MFNet/images/*D.png" \\
        --output output/demo --opts MODEL.WEIGHTS output/mfnet/model_final.pth

    # streams: an RGB and a thermal video (or two frame folders, paired by sorted name)
    python demo/demo.py --config-file configs/mfnet.yaml --video-input rgb.mp4 --thermal-video ir.mp4 \\
        --output output/demo/out.mp4 --opts MODEL.WEIGHTS output/mfnet/model_final.pth
    # a folder of 4-channel RGBT frames, one PNG panel per frame
    python demo/demo.py --config-file configs/mfnet.yaml --video-input rgbt_frames/ \\
        --output output/demo/frames --opts MODEL.WEIGHTS output/mfnet/model_final.pth

    # one camera (thermal failed, or an RGB-only robot): a model trained with modality dropout
    python demo/demo.py --config-file configs/mfnet-anymodal.yaml --modality thermal --input ir/ \\
        --output output/demo --opts MODEL.WEIGHTS output/mfnet-anymodal/model_final.pth

    # cameras that are not pixel-aligned (other sizes, fields of view): their rig (tools/calibrate_rig.py)
    python demo/demo.py --config-file configs/own-dataset.yaml --rig rig.json --input rgb/0001.png \
        --thermal thermal/0001.png --output output/demo --opts MODEL.WEIGHTS output/own/model_final.pth

    # an exported model (tools/export_model.py), run by onnxruntime; no model is built, no config read
    python demo/demo.py --onnx output/onnx/model.onnx --input night.png --thermal night_ir.png --output vis/
    python demo/demo.py --onnx output/onnx/model.onnx --video-input rgb.mp4 --thermal-video ir.mp4 \\
        --output vis/out.mp4
    # a one-camera graph (export_model.py --modality thermal), with --modality of its camera: images of
    # that camera, or RGB-T inputs (streams need no --modality: the graph reads its camera from them)
    python demo/demo.py --onnx output/onnx/model_thermal_int8.onnx --modality thermal --input ir/ --output v/

The model comes from ``model_options.py`` (``--config-file`` or ``--onnx``: the package's
``RGBTPredictor`` or ``OnnxRGBTPredictor``), the inputs from ``inputs.py``, the panels from
``drawing.py``, the streams from ``video.py``.

Images: writes ``<output>/<name>.png`` per input: RGB | thermal | prediction side by side, each at
the input's size or, under 480 px on the short side, upscaled (masks nearest-neighbour), above a
strip naming the classes present and, for a model that estimates it, its trust in each camera.
``--overlay-on`` chooses the image under the masks (default: RGB, brightened when dark).
Streams (``video.py`` reads and writes them): a video when ``--output`` ends in .mp4/.avi/.mkv, at
the input video's frame rate (10 fps for frame folders, or ``--fps``), else one PNG per frame.
With ``--onnx``, images must have the exported size (its sidecar ``<file>.json`` says which): the
graph has fixed sizes, and another size is an error naming both (re-export for that size).
With ``--rig`` (default with ``--config-file``: the rig DATASETS.TEST[0] was registered with) the
inputs are pairs of the rig's RGB and thermal sizes; each thermal image (or stream frame) is warped
into the RGB frame, and the panels are in the RGB frame, the thermal one grey where the thermal
camera does not see.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable

import cv2
from drawing import OVERLAY_BASES, draw_panel
from model_options import (
    add_model_options,
    build_predictor,
    check_model_options,
    input_rig,
    setup_cfg,
    thermal_norm,
)
from tqdm import tqdm
from video import DEFAULT_FPS, PanelWriter, RGBTFrame, open_frames

import sartm_d2  # noqa: F401  (compat patches + registration before detectron2)
from sartm_d2.data.inputs import find_inputs, load_pair
from sartm_d2.data.rig import Rig, in_rgb_frame

# isort: split
from detectron2.utils.logger import setup_logger

from sartm_d2.export import InputSizeError
from sartm_d2.modalities import MODALITIES

logger = logging.getLogger("sartm_d2.demo")

PROGRESS_MIN_FRAMES = 20  # shorter streams finish before a progress bar helps


def get_parser():
    parser = add_model_options(argparse.ArgumentParser(description="SARTM RGB-T semantic segmentation demo"))
    parser.add_argument(
        "--input",
        nargs="+",
        help="RGB images (with --thermal), 4-channel RGBT PNGs, folders of pairs (rgb/ + thermal/ or "
        "Visible/ + Infrared/) or of RGBT PNGs, or a quoted glob pattern",
    )
    parser.add_argument(
        "--thermal", nargs="+", default=None, help="thermal images, one per --input image, in the same order"
    )
    parser.add_argument(
        "--modality",
        choices=MODALITIES,
        default="rgbt",
        help="one camera only (failed, blinded or absent): --input images are RGB (rgb) or thermal "
        "(thermal) images alone; the other stream is not computed. Needs a model trained with modality "
        "dropout (configs/*-anymodal.yaml); others are warned about. A one-camera --onnx graph takes its "
        "camera's (its images alone, or RGB-T images)",
    )
    parser.add_argument(
        "--video-input",
        metavar="PATH",
        help="an RGB video (with --thermal-video), a folder of RGB frames (with --thermal-video), a folder "
        "of 4-channel RGBT frames, or a 4-channel (BGRA) video",
    )
    parser.add_argument(
        "--thermal-video",
        metavar="PATH",
        help="the thermal video (or folder of thermal frames) of --video-input",
    )
    parser.add_argument(
        "--overlay-on",
        choices=OVERLAY_BASES,
        default="auto",
        help="the image under the predicted masks: rgb, rgb-bright (brightened), thermal (grey), or auto "
        "(RGB, brightened when dark, as at night; thermal when there is no RGB)",
    )
    parser.add_argument(
        "--fps", type=float, default=None, help="frame rate of an output video (default: the input's; 10)"
    )
    parser.add_argument(
        "--output",
        required=True,
        help="folder for the <name>.png panels (created); with --video-input, a .mp4/.avi/.mkv file "
        "or a folder for one PNG per frame",
    )
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = get_parser()
    args = parser.parse_args(argv)
    check_model_options(parser, args)
    if args.video_input and args.input:
        parser.error("--video-input and --input exclude each other: give images or a stream, not both.")
    if args.thermal_video and not args.video_input:
        parser.error("--thermal-video needs --video-input (the RGB video or frame folder it belongs to).")
    if args.video_input and args.thermal:
        parser.error("--thermal belongs to --input images; with --video-input use --thermal-video.")
    if args.modality != "rgbt" and args.video_input:
        parser.error("--modality rgb|thermal takes --input images (a one-camera --onnx graph reads its "
                     "camera from RGB-T streams).")
    if not args.video_input and not args.input:
        parser.error("give --input (images) or --video-input (a video or a folder of frames).")
    if args.fps is not None and not args.video_input:
        parser.error("--fps sets the frame rate of a --video-input stream's output video.")
    if args.fps is not None and not args.fps > 0:
        parser.error(f"--fps must be positive, got {args.fps}.")
    return args


def run_video(
    frames: Iterable[RGBTFrame],
    predictor: Callable[..., dict],
    metadata,
    writer: PanelWriter,
    total: int | None = None,
    *,
    overlay_on: str = "auto",
    rig: Rig | None = None,
) -> dict:
    """Segment a stream frame by frame and write its panels; return frame count and timings.

    ``predictor(rgb, thermal)`` takes rgb uint8 H x W x 3 and thermal float32 H x W (0..255) and
    returns ``{"sem_seg": K x H x W logits (a tensor or an array), "trust": (2,) or None}`` like the
    package's predictors (both cameras; a one-camera graph reads its own), so any backend can be
    plugged in. ``total`` (the frame count, when known) sizes the progress bar, shown on stderr for
    streams longer than PROGRESS_MIN_FRAMES. ``rig``: the predictor's, by which the panel shows the
    thermal frame in the RGB frame (``sartm_d2.data.rig.in_rgb_frame``, as the predictor warps it).
    """
    bar = tqdm(total=total, unit="frame", file=sys.stderr) if total and total > PROGRESS_MIN_FRAMES else None
    model_s, n = 0.0, 0
    start = time.perf_counter()
    try:
        for frame in frames:
            t0 = time.perf_counter()
            out = predictor(frame.rgb, frame.thermal)
            model_s += time.perf_counter() - t0
            rgb, thermal = in_rgb_frame(frame.rgb, frame.thermal, rig, where=frame.name)
            panel = draw_panel(rgb, thermal, out["sem_seg"].argmax(0), metadata, trust=out["trust"],
                               overlay_on=overlay_on)
            writer.write(panel, frame.name)
            n += 1
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    total_s = time.perf_counter() - start
    if n:
        logger.info(
            f"{n} frames in {total_s:.1f}s: model {n / max(model_s, 1e-9):.2f} fps "
            f"({1000 * model_s / n:.0f} ms/frame), end to end {n / max(total_s, 1e-9):.2f} fps"
        )
    return {"frames": n, "model_s": model_s, "total_s": total_s}


def main_video(args, cfg) -> list[str]:
    """The stream mode of :func:`main`; the input and the output are checked before the model is built."""
    rig = input_rig(args, cfg)
    with open_frames(args.video_input, args.thermal_video, thermal_norm(args, cfg), rig) as frames:
        fps = args.fps or frames.fps or DEFAULT_FPS
        with PanelWriter(args.output, fps) as writer:
            predictor = build_predictor(args, cfg)
            count = frames.count or "unknown number of"
            logger.info(f"{frames.description}: {count} frames -> {args.output}")
            try:
                run_video(frames, predictor, predictor.metadata, writer, total=frames.count,
                          overlay_on=args.overlay_on, rig=rig)
            except InputSizeError as e:
                raise InputSizeError(f"--video-input {args.video_input!r}: {e}") from None
    return writer.written


def main(argv=None) -> list[str]:
    """Run the demo; return the written paths (PNGs, or one video).

    Inputs are all checked before the model is built.
    """
    args = parse_args(argv)
    cfg = None if args.onnx else setup_cfg(args)
    if args.video_input:
        return main_video(args, cfg)
    norm = thermal_norm(args, cfg)
    rig = input_rig(args, cfg)
    items = find_inputs(args.input, args.thermal, args.modality)
    predictor = build_predictor(args, cfg)
    os.makedirs(args.output, exist_ok=True)
    written = []
    for i, item in enumerate(items, 1):
        start = time.perf_counter()
        rgb, thermal = load_pair(item, norm, rig)
        try:
            out = predictor(rgb, thermal, args.modality, image_id=item.name)
        except InputSizeError as e:
            raise InputSizeError(f"{item.rgb_path or item.thermal_path!r}: {e}") from None
        rgb, thermal = in_rgb_frame(rgb, thermal, rig, where=item.name)  # as the predictor warps it
        panel = draw_panel(rgb, thermal, out["sem_seg"].argmax(0), predictor.metadata, trust=out["trust"],
                           overlay_on=args.overlay_on)
        path = os.path.join(args.output, f"{item.name}.png")
        if not cv2.imwrite(path, panel[:, :, ::-1]):
            raise OSError(f"Could not write {path!r}: check that the --output folder is writable.")
        written.append(path)
        logger.info(f"[{i}/{len(items)}] {item.name}: {time.perf_counter() - start:.2f}s -> {path}")
    return written


if __name__ == "__main__":
    setup_logger(name="fvcore")
    setup_logger(name="sartm_d2")
    setup_logger()
    main()
