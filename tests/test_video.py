"""The demo on streams: video pairs, frame folders, 4-channel streams, panel output and clear errors.

Only the round trip runs the tiny model; the other tests replace the predictor with a stub, so the
reading, pairing, checking and writing are tested in well under a second each.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import struct
import uuid

import cv2
import numpy as np
import pytest
import torch
from test_demo import CLASSES, COLORS, DEMO_DIR, _tiny_config

import sartm_d2  # noqa: F401  (compat patches before detectron2)

# isort: split
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.modeling import build_model

from sartm_d2 import get_sartm_cfg
from sartm_d2.data.io import normalize_thermal, read_rgbt

H, W, FRAMES = 32, 48, 3
METADATA = Metadata(name="video_test", stuff_classes=CLASSES, stuff_colors=COLORS)


@pytest.fixture
def demo(monkeypatch):
    """demo/video.py and demo/demo.py, imported the way ``python demo/demo.py`` sees them."""
    monkeypatch.syspath_prepend(DEMO_DIR)
    video = importlib.import_module("video")
    spec = importlib.util.spec_from_file_location("sartm_demo_cli", os.path.join(DEMO_DIR, "demo.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return video, cli


class StubPredictor:
    """Stands in for the package's predictor in ``demo.main``: records its inputs, returns zero logits."""

    calls: list = []

    def __init__(self, cfg):
        self.metadata = METADATA
        StubPredictor.calls = []

    def __call__(self, rgb, thermal, modalities="rgbt", *, image_id=None):
        StubPredictor.calls.append((rgb, thermal))
        return {"sem_seg": torch.zeros(len(CLASSES), *rgb.shape[:2]), "trust": None}


def _panel_shape(h=H, w=W):
    """The shape of a drawn panel for an h x w input (upscaled, with its caption row and legend strip)."""
    drawing = importlib.import_module("drawing")
    image = drawing.draw_panel(np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.float32),
                                 np.zeros((h, w), np.int64), METADATA)
    return image.shape


@pytest.fixture
def stub(demo, monkeypatch, tmp_path):
    """``run(*args)``: ``demo.main`` with a config and the stub predictor."""
    _, cli = demo
    monkeypatch.setattr(cli, "build_predictor", lambda args, cfg: StubPredictor(cfg))
    config = _tiny_config(tmp_path, "synthetic_rgbt_test", min_size_test=0)

    def run(*args):
        return cli.main(["--config-file", config, *args])

    return run


def _frames(rng, n=FRAMES, h=H, w=W, channels=3, dtype=np.uint8):
    top = 256 if dtype == np.uint8 else 65536
    shape = (h, w) if channels == 1 else (h, w, channels)
    return [rng.integers(0, top, size=shape).astype(dtype) for _ in range(n)]


def _write_video(path, frames, fps=7.0, fourcc="MJPG"):
    color = frames[0].ndim == 3
    size = (frames[0].shape[1], frames[0].shape[0])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size, color)
    assert writer.isOpened()
    for frame in frames:
        assert writer.write(frame)
    writer.release()
    return str(path)


def _write_folder(folder, frames, ext=".png", prefix="f"):
    os.makedirs(folder, exist_ok=True)
    for i, frame in enumerate(frames):
        assert cv2.imwrite(os.path.join(folder, f"{prefix}{i:03d}{ext}"), frame)
    return str(folder)


def _chunk(fourcc: bytes, data: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(data)) + data + b"\0" * (len(data) % 2)


def _write_bgra_avi(path, frames, fps=10):
    """An uncompressed 32-bit AVI (top-down BI_RGB): FFmpeg decodes it to BGRA, 4th channel kept.

    cv2.VideoWriter cannot write a 4th channel (see demo/video.py), so the file is built by hand.
    """
    h, w = frames[0].shape[:2]
    size = w * h * 4
    n = len(frames)
    avih = struct.pack("<14I", round(1e6 / fps), size * fps, 0, 0x10, n, 0, 1, size, w, h, 0, 0, 0, 0)
    strh = struct.pack(
        "<4s4sIHHIIIIIIiI4h", b"vids", b"\0" * 4, 0, 0, 0, 0, 1, fps, 0, n, size, -1, 0, 0, 0, w, h
    )
    strf = struct.pack("<IiiHHIIiiII", 40, w, -h, 1, 32, 0, size, 0, 0, 0, 0)
    strl = _chunk(b"LIST", b"strl" + _chunk(b"strh", strh) + _chunk(b"strf", strf))
    hdrl = _chunk(b"LIST", b"hdrl" + _chunk(b"avih", avih) + strl)
    movi = _chunk(b"LIST", b"movi" + b"".join(_chunk(b"00db", f.tobytes()) for f in frames))
    idx1 = b"".join(struct.pack("<4sIII", b"00db", 0x10, 4 + i * (8 + size), size) for i in range(n))
    with open(path, "wb") as f:
        f.write(_chunk(b"RIFF", b"AVI " + hdrl + movi + _chunk(b"idx1", idx1)))
    return str(path)


def _read_all(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps


# ---------------------------------------------------------------- end to end (tiny model)
def test_video_pair_round_trip(demo, tmp_path):
    _, cli = demo
    name = f"test_video_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(stuff_classes=CLASSES, stuff_colors=COLORS, ignore_label=255)
    config = _tiny_config(tmp_path, name, min_size_test=0)
    torch.manual_seed(0)
    os.makedirs(tmp_path / "w")
    model = build_model(get_sartm_cfg(config))
    DetectionCheckpointer(model, save_dir=str(tmp_path / "w")).save("model_final")

    rng = np.random.default_rng(0)
    rgb = _write_video(tmp_path / "rgb.avi", _frames(rng))
    thermal = _write_video(tmp_path / "ir.avi", _frames(rng, channels=1))
    out = str(tmp_path / "out" / "panels.mp4")
    weights = str(tmp_path / "w" / "model_final.pth")
    written = cli.main(["--config-file", config, "--video-input", rgb, "--thermal-video", thermal,
                        "--output", out, "--opts", "MODEL.WEIGHTS", weights])
    assert written == [out]
    frames, fps = _read_all(out)
    assert len(frames) == FRAMES and fps == pytest.approx(7.0)  # the input's frame rate
    shape = _panel_shape()
    assert all(f.shape[:2] == (shape[0] + shape[0] % 2, shape[1]) for f in frames)  # even for the encoder


# ---------------------------------------------------------------- inputs and outputs (stub predictor)
def test_frame_folders_with_16bit_tiff_thermal_to_pngs(stub, tmp_path):
    run = stub
    rng = np.random.default_rng(1)
    rgb = _write_folder(tmp_path / "rgb", _frames(rng, n=3), ".jpg", prefix="rgb_")
    thermal16 = _frames(rng, n=3, channels=1, dtype=np.uint16)
    thermal = _write_folder(tmp_path / "ir", thermal16, ".tiff", prefix="ir_")
    out = str(tmp_path / "panels")
    written = run("--video-input", rgb, "--thermal-video", thermal, "--output", out,
                  "--opts", "INPUT.THERMAL_16BIT_NORM", "minmax")
    assert written == [os.path.join(out, f"{i:06d}_rgb_{i:03d}.png") for i in range(3)]
    assert sorted(os.listdir(out)) == [os.path.basename(p) for p in written]
    for path in written:
        assert cv2.imread(path).shape == _panel_shape()
    # Each pair is read exactly like a still image (sartm_d2.data.io.read_rgbt, 16-bit minmax).
    for i, (got_rgb, got_thermal) in enumerate(StubPredictor.calls):
        record = {"file_name": os.path.join(rgb, f"rgb_{i:03d}.jpg"),
                  "thermal_file_name": os.path.join(thermal, f"ir_{i:03d}.tiff")}
        want_rgb, want_thermal = read_rgbt(record, "minmax")
        np.testing.assert_array_equal(got_rgb, want_rgb)
        np.testing.assert_array_equal(got_thermal, want_thermal)
        assert got_thermal.min() == 0.0 and got_thermal.max() == pytest.approx(255.0)


def test_16bit_thermal_video(stub, tmp_path):
    """FFV1 grey video keeps 16 bits; it is read at full depth and normalised like a 16-bit PNG."""
    run = stub
    rng = np.random.default_rng(6)
    thermal16 = _frames(rng, n=2, channels=1, dtype=np.uint16)
    path = str(tmp_path / "ir16.mkv")
    params = [cv2.VIDEOWRITER_PROP_DEPTH, cv2.CV_16U, cv2.VIDEOWRITER_PROP_IS_COLOR, 0]
    writer = cv2.VideoWriter(path, cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (W, H), params)
    assert writer.isOpened() and all(writer.write(t) for t in thermal16)
    writer.release()
    rgb = _write_video(tmp_path / "rgb.avi", _frames(rng, n=2))
    run("--video-input", rgb, "--thermal-video", path, "--output", str(tmp_path / "out"),
        "--opts", "INPUT.THERMAL_16BIT_NORM", "minmax")
    assert len(StubPredictor.calls) == 2
    for (_, thermal), source in zip(StubPredictor.calls, thermal16):
        np.testing.assert_array_equal(thermal, normalize_thermal(source, "minmax"))


def test_rgbt_frame_folder_and_bgra_video(stub, tmp_path):
    """One stream with thermal as channel 4: a folder of RGBT PNGs, or a video that decodes to BGRA."""
    run = stub
    rng = np.random.default_rng(2)
    frames = _frames(rng, n=3, channels=4)  # B, G, R, T as OpenCV stores an MFNet PNG
    folder = _write_folder(tmp_path / "rgbt", frames)
    out = str(tmp_path / "out.avi")
    assert run("--video-input", folder, "--output", out) == [out]
    panels, fps = _read_all(out)
    shape = _panel_shape()
    assert len(panels) == 3 and panels[0].shape[:2] == (shape[0] + shape[0] % 2, shape[1])
    assert fps == pytest.approx(10.0)  # frame folders have no frame rate: the default
    for (rgb, thermal), frame in zip(StubPredictor.calls, frames):
        np.testing.assert_array_equal(rgb, frame[:, :, 2::-1])
        np.testing.assert_array_equal(thermal, frame[:, :, 3].astype(np.float32))

    avi = _write_bgra_avi(tmp_path / "rgbt.avi", frames)
    out = str(tmp_path / "out.mkv")
    assert run("--video-input", avi, "--output", out, "--fps", "12.5") == [out]
    panels, fps = _read_all(out)
    assert len(panels) == 3 and fps == pytest.approx(12.5)
    for (rgb, thermal), frame in zip(StubPredictor.calls, frames):
        np.testing.assert_array_equal(rgb, frame[:, :, 2::-1])
        np.testing.assert_array_equal(thermal, frame[:, :, 3].astype(np.float32))


def test_predict_called_once_per_frame(demo, tmp_path, capsys):
    """run_video takes any predictor(rgb, thermal) -> {"sem_seg", "trust"}: here one with numpy logits."""
    video, cli = demo
    rng = np.random.default_rng(3)
    n = cli.PROGRESS_MIN_FRAMES + 1
    frames = [video.RGBTFrame(i, f"{i:06d}", rgb, t.astype(np.float32))
              for i, (rgb, t) in enumerate(zip(_frames(rng, n, 8, 12), _frames(rng, n, 8, 12, channels=1)))]
    calls = []

    def predict(rgb, thermal):
        calls.append((rgb.dtype, rgb.shape, thermal.dtype, thermal.shape))
        return {"sem_seg": np.zeros((len(CLASSES), *rgb.shape[:2]), np.float32), "trust": None}

    with video.PanelWriter(str(tmp_path / "panels"), 10.0) as writer:
        stats = cli.run_video(iter(frames), predict, METADATA, writer, total=n)
    assert calls == [(np.dtype(np.uint8), (8, 12, 3), np.dtype(np.float32), (8, 12))] * n
    assert stats["frames"] == n and len(writer.written) == n
    captured = capsys.readouterr()
    assert f"{n}/{n}" in captured.err and captured.out == ""  # progress bar on stderr only


def test_frames_drawn_with_trust_and_overlay_base(demo, tmp_path):
    """A predictor's trust: each frame shows its trust bar and the chosen overlay base, exactly as a still
    image would."""
    video, cli = demo
    drawing = importlib.import_module("drawing")
    rng = np.random.default_rng(4)
    frames = [video.RGBTFrame(i, f"{i:06d}", rgb, t.astype(np.float32))
              for i, (rgb, t) in enumerate(zip(_frames(rng, 2, 8, 12), _frames(rng, 2, 8, 12, channels=1)))]
    trusts = [np.array([0.9, 0.2], np.float32), np.array([0.3, 0.7], np.float32)]
    logits = np.zeros((len(CLASSES), 8, 12), np.float32)
    logits[1, 2:6, 3:9] = 1.0

    def predict(rgb, thermal):
        return {"sem_seg": logits, "trust": trusts[len(written)]}

    with video.PanelWriter(str(tmp_path / "panels"), 10.0) as writer:
        written = writer.written
        cli.run_video(iter(frames), predict, METADATA, writer, overlay_on="thermal")
    for frame, trust, path in zip(frames, trusts, written):
        layout = drawing.render_panel(frame.rgb, frame.thermal, logits.argmax(0), METADATA, trust=trust,
                                        overlay_on="thermal")
        np.testing.assert_array_equal(cv2.imread(path)[:, :, ::-1], layout.image)
        assert [b.value for b in layout.trust] == [pytest.approx(float(v)) for v in trust]
        assert [e.name for e in layout.legend] == ["background", "person"]


def test_panel_writer_pads_odd_sizes(demo, tmp_path):
    video, _ = demo
    out = str(tmp_path / "odd.mp4")
    with video.PanelWriter(out, 5.0) as writer:
        for _ in range(2):
            writer.write(np.full((33, 141, 3), 200, np.uint8), "x")
    frames, _ = _read_all(out)
    assert len(frames) == 2 and frames[0].shape == (34, 142, 3)  # the encoder would crop to 32x140


# ---------------------------------------------------------------- errors name the offending file
def test_count_and_size_errors(stub, tmp_path):
    run = stub
    rng = np.random.default_rng(4)
    out = str(tmp_path / "out")
    rgb3 = _write_folder(tmp_path / "rgb3", _frames(rng, n=3))
    ir2 = _write_folder(tmp_path / "ir2", _frames(rng, n=2, channels=1))
    with pytest.raises(ValueError, match=r"Frame counts differ: .*rgb3.* has 3 frames and .*ir2.* has 2"):
        run("--video-input", rgb3, "--thermal-video", ir2, "--output", out)

    # AVI stores its frame count: compared before anything runs.
    rgb_avi = _write_video(tmp_path / "rgb.avi", _frames(rng, n=4))
    ir_avi = _write_video(tmp_path / "ir.avi", _frames(rng, n=3, channels=1))
    with pytest.raises(ValueError, match=r"rgb\.avi' has 4 frames and .*ir\.avi' has 3"):
        run("--video-input", rgb_avi, "--thermal-video", ir_avi, "--output", out)
    assert not os.path.exists(out)  # refused before any output

    # MKV only estimates it: the mismatch shows when the thermal stream ends first.
    rgb_mkv = _write_video(tmp_path / "rgb.mkv", _frames(rng, n=4))
    ir_mkv = _write_video(tmp_path / "ir.mkv", _frames(rng, n=3, channels=1))
    with pytest.raises(ValueError, match=r"ir\.mkv' ended after 3 frames but .*rgb\.mkv' has more"):
        run("--video-input", rgb_mkv, "--thermal-video", ir_mkv, "--output", out)

    small_ir = _write_video(tmp_path / "small_ir.avi", _frames(rng, n=4, h=H // 2, channels=1))
    with pytest.raises(ValueError, match=r"sizes differ: .*rgb\.avi' frame 0 is 48x32 and .*small_ir\.avi"):
        run("--video-input", rgb_avi, "--thermal-video", small_ir, "--output", out)

    small = _write_folder(tmp_path / "small", _frames(rng, n=3, h=H // 2, channels=1))
    with pytest.raises(ValueError, match=r"sizes differ: .*rgb3.*f000\.png.*small.*f000\.png"):
        run("--video-input", rgb3, "--thermal-video", small, "--output", out)

    cv2.imwrite(os.path.join(rgb3, "f002.png"), _frames(rng, n=1, h=H + 2, w=W + 2)[0])
    ir3 = _write_folder(tmp_path / "ir3", _frames(rng, n=2, channels=1) + _frames(rng, 1, H + 2, W + 2, 1))
    with pytest.raises(ValueError, match=r"Frame size changed: .*rgb3.*f002\.png' is 50x34 .*f000\.png"):
        run("--video-input", rgb3, "--thermal-video", ir3, "--output", out)


def test_input_errors(stub, tmp_path, capsys):
    run = stub
    rng = np.random.default_rng(5)
    out = str(tmp_path / "out")
    rgb = _write_video(tmp_path / "rgb.avi", _frames(rng, n=2))

    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    with pytest.raises(ValueError, match=r"Could not open RGB video .*notes\.mp4"):
        run("--video-input", str(notes), "--thermal-video", rgb, "--output", out)

    empty_avi = cv2.VideoWriter(str(tmp_path / "empty.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    empty_avi.release()  # a valid AVI without frames
    with pytest.raises(ValueError, match=r"empty\.avi.* has no readable frames"):
        run("--video-input", rgb, "--thermal-video", str(tmp_path / "empty.avi"), "--output", out)

    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"No frames in folder .*empty"):
        run("--video-input", str(tmp_path / "empty"), "--output", out)

    with pytest.raises(FileNotFoundError, match=r"--thermal-video not found: .*nope\.mp4"):
        run("--video-input", rgb, "--thermal-video", str(tmp_path / "nope.mp4"), "--output", out)

    # One 3-channel stream has no thermal: say how to give it.
    with pytest.raises(ValueError, match=r"rgb\.avi' has no thermal channel .*--thermal-video"):
        run("--video-input", rgb, "--output", out)
    rgb_folder = _write_folder(tmp_path / "rgb_frames", _frames(rng, n=2))
    with pytest.raises(ValueError, match=r"f000\.png.*has 3 channel\(s\).*--thermal-video"):
        run("--video-input", rgb_folder, "--output", out)
    with pytest.raises(ValueError, match="both be videos or both be frame folders"):
        run("--video-input", rgb, "--thermal-video", rgb_folder, "--output", out)
    with pytest.raises(ValueError, match=r"--output .*out\.mov"):
        run("--video-input", rgb, "--thermal-video", rgb, "--output", str(tmp_path / "out.mov"))

    for args, message in [
        (["--thermal-video", rgb], "--thermal-video needs --video-input"),
        (["--video-input", rgb, "--input", rgb], "--video-input and --input exclude each other"),
        (["--video-input", rgb, "--fps", "0"], "--fps must be positive"),
        (["--input", rgb, "--fps", "5"], "--fps sets the frame rate of a --video-input"),
    ]:
        with pytest.raises(SystemExit):
            run(*args, "--output", out)
        assert message in capsys.readouterr().err
