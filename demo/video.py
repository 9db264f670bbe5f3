"""Frame streams for the RGB-T demo: read RGB-T videos or frame folders, write panel videos or PNGs.

Inputs (:func:`open_frames`), each read one frame at a time (nothing holds the whole stream):

* two videos, ``--video-input rgb.mp4 --thermal-video ir.mp4``: the i-th frames form the i-th pair;
* two frame folders, ``--video-input rgb_frames/ --thermal-video ir_frames/``: the image files
  (``sartm_d2.data.io.IMAGE_EXTENSIONS``) of each folder, sorted by name and paired by position.
  Each pair is read by ``sartm_d2.data.io.read_rgbt``, exactly like a still image (16-bit thermal PNG/TIFF
  frames normalised by ``INPUT.THERMAL_16BIT_NORM``, per frame as per image);
* one folder of 4-channel R,G,B,T PNGs (MFNet style), ``--video-input rgbt_frames/``;
* one 4-channel video that OpenCV decodes to BGRA (see below), ``--video-input rgbt.avi``.

A video is not paired with a folder: a folder has no frame rate or timestamps to align with.
With a rig (``--rig``: cameras that are not pixel-aligned) every RGB frame must be of the rig's RGB
size and every thermal frame of its thermal size (else the rig's error, naming the frame); the
thermal frames stay in their own frame, which the predictor warps into the RGB frame, one by one.
Thermal video frames follow the still-image conventions of ``sartm_d2.data.io``: one grey channel
(three equal channels count as grey; unequal ones, a false-colour palette, are reduced to their
luminance with one warning) and ``normalize_thermal`` to float32 0..255; 16-bit grey video
(FFV1 ``gray16le``) is read at full depth and normalised like a 16-bit PNG.

Frame counts: a folder's count is exact, and so is the header count of AVI and MP4/MOV files
(index / sample table). Those are compared before anything runs. Other containers (MKV, WebM)
only have an estimate (duration x fps, which an audio track or a variable frame rate skews), so
for them a mismatch is reported when one stream ends before the other.

What OpenCV (opencv-python-headless with its FFmpeg backend) does with 4-channel video (tried on
frames whose 4th channel differs from the other three; benchmarks/RESULTS.md names the versions):

* ``cv2.VideoWriter`` cannot write a 4th channel. ``write()`` of a 4-channel frame returns False
  and writes nothing, for every codec/container it opens (MJPG, XVID, mp4v, FFV1, png, HFYU, FFVH,
  RGBA, raw, Y800, I420, ULRA, MPNG in .avi/.mkv/.mov/.mp4; avc1/H264 do not open at all). FFV1 is
  stored as BGRA, but the writer converts its 3-channel input, so the stored alpha is constant 255.
  The built-in MJPEG writer accepts 4-channel frames and drops the 4th channel (JPEG). So no
  codec round-trips 4 channels through ``cv2.VideoWriter`` / ``cv2.VideoCapture``.
* ``cv2.VideoCapture`` can read a 4th channel written by FFmpeg itself: with
  ``CAP_PROP_CONVERT_RGB`` off, a stream whose pixel format (``CAP_PROP_CODEC_PIXEL_FORMAT``) is
  ``BGRA`` comes back as H x W x 4 uint8, exact (FFV1 ``-pix_fmt bgra`` in .mkv/.avi, and
  uncompressed 32-bit AVI). Other alpha formats are not: PNG-in-MOV (``RGBA``) and QuickTime RLE
  (``ARGB``) come back as a 2-D buffer ("unsupported picture format ... treated as 8UC1"); VP9
  alpha (WebM) decodes without it. With the conversion on, every video comes back as 3 channels.
* With ``CAP_PROP_CONVERT_RGB`` off, a YUV video comes back as its raw 8-bit luma plane (MPEG-4's
  limited range: up to 23 grey levels off), so it is switched off only for the exact grey formats
  ``Y800`` and ``gray16le`` (FFV1 grey video: exact, 16-bit kept) and for ``BGRA``.

Hence a single video without ``--thermal-video`` is accepted when it decodes to BGRA (B, G, R, T,
like OpenCV's reading of an MFNet PNG) and refused otherwise, with an error that says how to give
the thermal stream. To make such a video: ``ffmpeg -i rgbt_%06d.png -c:v ffv1 -pix_fmt bgra
rgbt.mkv``.

Output (:class:`PanelWriter`): a video when ``--output`` ends in .mp4/.avi/.mkv (mp4v, MJPG, mp4v:
the codecs this OpenCV build writes; its FFmpeg has no H.264 encoder), else one PNG per frame.
FFmpeg's writer silently crops odd frame sizes to even ones, so an odd-sized panel is padded
with one black row/column instead of losing the edge of the prediction.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from sartm_d2.data.inputs import read_rgbt_image
from sartm_d2.data.io import IMAGE_EXTENSIONS, normalize_thermal, read_rgbt
from sartm_d2.data.rig import Rig, check_rig_sizes

__all__ = [
    "DEFAULT_FPS",
    "OUTPUT_VIDEO_EXTENSIONS",
    "FrameReader",
    "PanelWriter",
    "RGBTFrame",
    "open_frames",
]

logger = logging.getLogger("sartm_d2.demo.video")  # under the demo's sartm_d2 log handler

DEFAULT_FPS = 10.0  # frame folders carry no frame rate
# Output container -> fourcc. This OpenCV build's FFmpeg has no H.264 encoder (avc1/H264 fail to open).
OUTPUT_VIDEO_EXTENSIONS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
# Video names that are not written: a folder called "out.mov" is almost certainly a mistake.
_UNSUPPORTED_OUTPUT_EXTENSIONS = (".mov", ".m4v", ".webm", ".wmv", ".flv", ".gif", ".mpg", ".mpeg")
# Containers whose header stores the frame count (AVI index, MP4/MOV sample tables).
EXACT_COUNT_EXTENSIONS = (".avi", ".mp4", ".mov", ".m4v")
# Pixel formats (CAP_PROP_CODEC_PIXEL_FORMAT) that come back exact with CAP_PROP_CONVERT_RGB off.
_GREY_FORMATS = ("Y800", "Y1\x00\x10")  # gray8, gray16le
_BGRA = "BGRA"


@dataclass(frozen=True)
class RGBTFrame:
    """One frame pair: rgb uint8 H x W x 3 (RGB order), thermal float32 in 0..255, H x W (with a rig:
    the thermal camera's size, not yet warped)."""

    index: int
    name: str  # output stem: frame index, plus the RGB file stem for frame folders
    rgb: np.ndarray
    thermal: np.ndarray


def _pixel_format(cap: cv2.VideoCapture) -> str:
    code = int(cap.get(cv2.CAP_PROP_CODEC_PIXEL_FORMAT))
    if code <= 0:
        return "unknown"
    return code.to_bytes(4, "little").decode("latin-1")


def _size(img: np.ndarray) -> str:
    return f"{img.shape[1]}x{img.shape[0]}"


class _Video:
    """One video file, decoded frame by frame. ``raw`` switches OpenCV's BGR conversion off."""

    def __init__(self, path: str, role: str):
        if path.lower().endswith(IMAGE_EXTENSIONS):
            raise ValueError(
                f"{path!r} is an image, not a video: pass single images with --input (and --thermal), or "
                "a folder of frames with --video-input."
            )
        self.path = path
        self.cap = cv2.VideoCapture(path)
        if not self.cap.isOpened():
            raise ValueError(
                f"Could not open {role} video {path!r}: OpenCV's VideoCapture failed, so it is not a video, "
                "uses a codec this OpenCV build cannot decode, or is broken."
            )
        self.pixel_format = _pixel_format(self.cap)
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.count = count if count > 0 else None
        self.count_exact = self.count is not None and path.lower().endswith(EXACT_COUNT_EXTENSIONS)
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and fps > 0 else None
        self.read_count = 0

    def raw(self) -> None:
        self.cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)

    def read(self) -> np.ndarray | None:
        ok, frame = self.cap.read()
        if not ok:
            return None
        self.read_count += 1
        return frame

    def where(self) -> str:
        return f"{self.path!r} frame {self.read_count - 1}"

    def close(self) -> None:
        self.cap.release()


def _frame_files(folder: str) -> list[str]:
    files = sorted(
        os.path.join(folder, e)
        for e in os.listdir(folder)
        if e.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, e))
    )
    if not files:
        extensions = ", ".join(IMAGE_EXTENSIONS)
        raise ValueError(f"No frames in folder {folder!r}: expected image files ({extensions}).")
    return files


class FrameReader:
    """Iterator of :class:`RGBTFrame` over one input, checked as it streams.

    Opening reads the first frame (an unreadable input, an empty one or a 3-channel single stream
    fails before a model is built). Every frame must have the first frame's size. ``count`` is the
    number of frames when known (an estimate for some containers, see the module docstring), ``fps``
    the input's frame rate (None for frame folders).
    """

    count: int | None = None
    fps: float | None = None

    def __init__(self, description: str):
        self.description = description
        self._frames = self._generate()
        try:
            self._first = next(self._frames, None)
        except BaseException:
            self.close()
            raise
        if self._first is None:
            self.close()
            raise ValueError(f"{description} has no readable frames: OpenCV opened it but decoded none.")

    def _generate(self) -> Iterator[tuple[np.ndarray, np.ndarray, str, str]]:
        """Yield (rgb, thermal, where, stem): ``where`` names the file(s) for errors."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[RGBTFrame]:
        first = self._first
        if first is None:
            raise RuntimeError(f"{self.description} was already read; open it again.")
        self._first = None
        width = max(6, len(str(self.count - 1))) if self.count else 6
        size, first_where = first[0].shape[:2], first[2]
        index = 0
        for rgb, thermal, where, stem in _chain(first, self._frames):
            if rgb.shape[:2] != size:
                raise ValueError(
                    f"Frame size changed: {where} is {_size(rgb)} but the first frame ({first_where}) is "
                    f"{size[1]}x{size[0]} (WxH). All frames of a stream must have one size."
                )
            name = f"{index:0{width}d}" + (f"_{stem}" if stem else "")
            yield RGBTFrame(index, name, rgb, thermal)
            index += 1

    def close(self) -> None:
        self._frames.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _chain(first, rest):
    yield first
    yield from rest


class _RGBTFolder(FrameReader):
    """A folder of 4-channel R,G,B,T images, each read like an MFNet PNG by ``read_rgbt``."""

    def __init__(self, folder: str, thermal_16bit_norm: str, rig: Rig | None = None):
        self.files = _frame_files(folder)
        self.count = len(self.files)
        self.norm = thermal_16bit_norm
        self.rig = rig
        read_rgbt_image(
            self.files[0], "give the thermal frames with --thermal-video ir_frames/ (or a thermal video)",
            where=f" (first frame of {folder!r})",
        )
        super().__init__(f"Folder {folder!r}")

    def _generate(self):
        for path in self.files:
            record = {"file_name": path, "thermal_file_name": path, "image_id": path}
            rgb, thermal = read_rgbt(record, self.norm, self.rig, warp=False)
            yield rgb, thermal, repr(path), os.path.splitext(os.path.basename(path))[0]


class _PairedFolders(FrameReader):
    """RGB and thermal frame folders paired by sorted position; each pair read by ``read_rgbt``."""

    def __init__(self, rgb_folder: str, thermal_folder: str, thermal_16bit_norm: str, rig: Rig | None = None):
        self.rgb_files = _frame_files(rgb_folder)
        self.thermal_files = _frame_files(thermal_folder)
        if len(self.rgb_files) != len(self.thermal_files):
            raise ValueError(
                f"Frame counts differ: {rgb_folder!r} has {len(self.rgb_files)} frames and "
                f"{thermal_folder!r} has {len(self.thermal_files)}. The RGB and thermal frames are paired "
                "by sorted name, one thermal frame per RGB frame."
            )
        self.count = len(self.rgb_files)
        self.norm = thermal_16bit_norm
        self.rig = rig
        super().__init__(f"Folders {rgb_folder!r} and {thermal_folder!r}")

    def _generate(self):
        for rgb_path, thermal_path in zip(self.rgb_files, self.thermal_files):
            record = {"file_name": rgb_path, "thermal_file_name": thermal_path, "image_id": rgb_path}
            # Also refuses an RGB/thermal size mismatch (with a rig: sizes other than the rig's).
            rgb, thermal = read_rgbt(record, self.norm, self.rig, warp=False)
            yield rgb, thermal, repr(rgb_path), os.path.splitext(os.path.basename(rgb_path))[0]


_warned_false_colour: set[str] = set()


def _thermal_plane(frame: np.ndarray, path: str) -> np.ndarray:
    """One grey plane of a decoded thermal frame, with ``sartm_d2.data.io``'s rules for 3 channels."""
    if frame.ndim == 2:
        return frame
    b, g, r = frame[:, :, 0], frame[:, :, 1], frame[:, :, 2]
    if np.array_equal(b, g) and np.array_equal(b, r):
        return b
    if path not in _warned_false_colour:
        _warned_false_colour.add(path)
        logger.warning("Thermal video %s has 3 unequal channels; using its luminance.", path)
    return cv2.cvtColor(frame[:, :, :3], cv2.COLOR_BGR2GRAY)


class _PairedVideos(FrameReader):
    """An RGB video and a thermal video, frame i with frame i."""

    def __init__(self, rgb_path: str, thermal_path: str, thermal_16bit_norm: str, rig: Rig | None = None):
        self.rgb = _Video(rgb_path, "RGB")
        self.thermal = _Video(thermal_path, "thermal")
        if self.thermal.pixel_format in _GREY_FORMATS:
            self.thermal.raw()  # exact grey (and 16-bit) instead of a BGR copy
        if self.rgb.count_exact and self.thermal.count_exact and self.rgb.count != self.thermal.count:
            raise ValueError(
                f"Frame counts differ: {rgb_path!r} has {self.rgb.count} frames and {thermal_path!r} has "
                f"{self.thermal.count}. The RGB and thermal videos must be synchronised, frame for frame."
            )
        self.count = self.rgb.count
        self.fps = self.rgb.fps
        if self.fps and self.thermal.fps and abs(self.fps - self.thermal.fps) > 0.01 * self.fps:
            logger.warning(
                "Frame rates differ: %s at %.3g fps, %s at %.3g fps; frames are paired by index.",
                rgb_path, self.fps, thermal_path, self.thermal.fps,
            )
        self.norm = thermal_16bit_norm
        self.rig = rig
        super().__init__(f"Videos {rgb_path!r} and {thermal_path!r}")

    def _generate(self):
        while True:
            bgr, t = self.rgb.read(), self.thermal.read()
            if bgr is None or t is None:
                if bgr is None and t is None:
                    return
                ended, other = (self.rgb, self.thermal) if bgr is None else (self.thermal, self.rgb)
                if ended.read_count == 0:
                    raise ValueError(
                        f"{ended.path!r} has no readable frames: OpenCV opened it but decoded none (an empty "
                        "or broken video)."
                    )
                raise ValueError(
                    f"Frame counts differ: {ended.path!r} ended after {ended.read_count} frames but "
                    f"{other.path!r} has more. The RGB and thermal videos must be synchronised, frame for "
                    f"frame (the first {ended.read_count} pairs were processed)."
                )
            plane = _thermal_plane(t, self.thermal.path)
            if self.rig is not None:
                check_rig_sizes(self.rig, bgr.shape, plane.shape, self.rgb.where(), self.thermal.where())
            elif plane.shape != bgr.shape[:2]:
                raise ValueError(
                    f"RGB and thermal sizes differ: {self.rgb.where()} is {_size(bgr)} and "
                    f"{self.thermal.where()} is {_size(plane)} (WxH). The pair must be registered "
                    "(pixel-aligned) and of equal size, or come with the cameras' rig file (--rig; "
                    "tools/calibrate_rig.py writes one)."
                )
            thermal = normalize_thermal(plane, self.norm, path=self.thermal.path)
            yield np.ascontiguousarray(bgr[:, :, ::-1]), thermal, self.rgb.where(), ""

    def close(self):
        super().close()
        self.rgb.close()
        self.thermal.close()


class _RGBTVideo(FrameReader):
    """A single video that decodes to BGRA: B, G, R, thermal (see the module docstring)."""

    def __init__(self, path: str, thermal_16bit_norm: str, rig: Rig | None = None):
        self.video = _Video(path, "RGBT")
        if self.video.pixel_format != _BGRA:
            self.video.close()
            raise ValueError(
                f"{path!r} has no thermal channel that OpenCV can read: it decodes to pixel format "
                f"{self.video.pixel_format!r}, and OpenCV returns a 4th channel only for BGRA video. Give "
                "the thermal stream with --thermal-video (a second video, or a folder of thermal frames), or "
                "pass a folder of 4-channel R,G,B,T PNG frames as --video-input (or an FFV1 BGRA video: "
                "ffmpeg -i rgbt_%06d.png -c:v ffv1 -pix_fmt bgra rgbt.mkv)."
            )
        self.video.raw()
        self.count, self.fps = self.video.count, self.video.fps
        self.norm = thermal_16bit_norm
        self.rig = rig
        super().__init__(f"Video {path!r}")

    def _generate(self):
        while (frame := self.video.read()) is not None:
            if frame.ndim != 3 or frame.shape[2] != 4:
                raise ValueError(f"{self.video.where()} did not decode to 4 channels (shape {frame.shape}).")
            if self.rig is not None:
                check_rig_sizes(self.rig, frame.shape, frame.shape, self.video.where(), self.video.where())
            thermal = normalize_thermal(frame[:, :, 3], self.norm, path=self.video.path)
            yield np.ascontiguousarray(frame[:, :, 2::-1]), thermal, self.video.where(), ""

    def close(self):
        super().close()
        self.video.close()


def open_frames(video_input: str, thermal_video: str | None = None,
                thermal_16bit_norm: str = "percentile", rig: Rig | None = None) -> FrameReader:
    """The reader for ``--video-input`` (and ``--thermal-video``), with the cameras' ``rig`` when they are
    not pixel-aligned; see the module docstring."""
    for option, path in (("--video-input", video_input), ("--thermal-video", thermal_video)):
        if path is not None and not os.path.exists(path):
            raise FileNotFoundError(f"{option} not found: {path!r}.")
    if thermal_video is None:
        if os.path.isdir(video_input):
            return _RGBTFolder(video_input, thermal_16bit_norm, rig)
        return _RGBTVideo(video_input, thermal_16bit_norm, rig)
    if os.path.isdir(video_input) and os.path.isdir(thermal_video):
        return _PairedFolders(video_input, thermal_video, thermal_16bit_norm, rig)
    if os.path.isdir(video_input) or os.path.isdir(thermal_video):
        raise ValueError(
            f"--video-input {video_input!r} and --thermal-video {thermal_video!r} must both be videos or "
            "both be frame folders."
        )
    return _PairedVideos(video_input, thermal_video, thermal_16bit_norm, rig)


class PanelWriter:
    """Writes RGB panels (H x W x 3 uint8) to a video file or as ``<output>/<name>.png``.

    A video is opened on the first panel (its size is known then); every panel must have that size.
    """

    def __init__(self, output: str, fps: float = DEFAULT_FPS):
        if output.lower().endswith(_UNSUPPORTED_OUTPUT_EXTENSIONS):
            raise ValueError(
                f"--output {output!r}: write a video as {', '.join(OUTPUT_VIDEO_EXTENSIONS)}, or PNG frames "
                "into a folder (any other name)."
            )
        self.output = output
        self.fps = fps
        self.is_video = os.path.splitext(output)[1].lower() in OUTPUT_VIDEO_EXTENSIONS
        self.written: list[str] = []
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        folder = os.path.dirname(os.path.abspath(output)) if self.is_video else output
        os.makedirs(folder, exist_ok=True)

    def _open(self, height: int, width: int) -> None:
        ext = os.path.splitext(self.output)[1].lower()
        fourcc = OUTPUT_VIDEO_EXTENSIONS[ext]
        self._size = (height, width)
        padded = (width + width % 2, height + height % 2)
        if padded != (width, height):
            logger.info("Panels are %dx%d: padded to %dx%d (the video encoder needs even sizes).",
                        width, height, *padded)
        self._writer = cv2.VideoWriter(self.output, cv2.VideoWriter_fourcc(*fourcc), self.fps, padded)
        if not self._writer.isOpened():
            raise OSError(
                f"Could not open {self.output!r} for writing ({fourcc} at {self.fps:g} fps): check that the "
                "folder is writable, or write PNG frames by giving a folder as --output."
            )
        self.written.append(self.output)

    def write(self, panel: np.ndarray, name: str) -> None:
        bgr = panel[:, :, ::-1]
        if not self.is_video:
            path = os.path.join(self.output, f"{name}.png")
            if not cv2.imwrite(path, bgr):
                raise OSError(f"Could not write {path!r}: check that the --output folder is writable.")
            self.written.append(path)
        else:
            if self._writer is None:
                self._open(*panel.shape[:2])
            if panel.shape[:2] != self._size:
                raise ValueError(f"Panel {name} is {_size(panel)}, but the video {self.output!r} is "
                                 f"{self._size[1]}x{self._size[0]}.")
            h, w = self._size
            if h % 2 or w % 2:
                bgr = cv2.copyMakeBorder(bgr, 0, h % 2, 0, w % 2, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            if not self._writer.write(np.ascontiguousarray(bgr)):
                raise OSError(f"Writing frame {name} to {self.output!r} failed.")
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
