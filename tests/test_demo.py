"""The RGB-T demo: input discovery in every layout, clear errors, drawing, and an end-to-end run."""

from __future__ import annotations

import importlib
import importlib.util
import os
import uuid

import cv2
import numpy as np
import pytest
import torch
from conftest import BASE_CONFIG, TINY_MODEL

import sartm_d2  # noqa: F401  (compat patches before detectron2)

# isort: split
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.modeling import build_model
from detectron2.utils.visualizer import Visualizer

from sartm_d2.config import add_sartm_config

DEMO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demo")
H, W = 64, 96
CLASSES = ["background", "person", "car"]
COLORS = [(0, 0, 0), (220, 20, 60), (0, 0, 142)]


@pytest.fixture
def demo(monkeypatch):
    """demo/predictor.py and demo/demo.py, imported the way ``python demo/demo.py`` sees them."""
    monkeypatch.syspath_prepend(DEMO_DIR)
    predictor = importlib.import_module("predictor")
    spec = importlib.util.spec_from_file_location("sartm_demo_cli", os.path.join(DEMO_DIR, "demo.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return predictor, cli


def _rgb(rng, h=H, w=W):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _thermal(rng, h=H, w=W, dtype=np.uint8):
    top = 255 if dtype == np.uint8 else 40000
    return rng.integers(0, top, size=(h, w)).astype(dtype)


def _write_pair_folder(root, rgb_name, thermal_name, stems, rng, label_dir=None):
    os.makedirs(os.path.join(root, rgb_name))
    os.makedirs(os.path.join(root, thermal_name))
    if label_dir:
        os.makedirs(os.path.join(root, label_dir))
    for stem in stems:
        cv2.imwrite(os.path.join(root, rgb_name, f"{stem}.png"), _rgb(rng))
        cv2.imwrite(os.path.join(root, thermal_name, f"{stem}.png"), _thermal(rng))
        if label_dir:
            cv2.imwrite(os.path.join(root, label_dir, f"{stem}.png"), np.zeros((H, W), np.uint8))
    return str(root)


def _write_rgbt(path, rng):
    bgra = np.dstack([_rgb(rng), _thermal(rng)])
    cv2.imwrite(str(path), bgra)
    return str(path)


@pytest.fixture
def layouts(tmp_path):
    rng = np.random.default_rng(0)
    pst = _write_pair_folder(tmp_path / "pst", "rgb", "thermal", ["p1", "p0"], rng, label_dir="labels")
    fmb = _write_pair_folder(tmp_path / "fmb", "Visible", "Infrared", ["f0"], rng, label_dir="Label")
    os.makedirs(tmp_path / "mfnet")
    rgbt = [_write_rgbt(tmp_path / "mfnet" / f"{n}.png", rng) for n in ("m0D", "m1N")]
    os.makedirs(tmp_path / "single")
    rgb = str(tmp_path / "single" / "s0.jpg")
    cv2.imwrite(rgb, _rgb(rng))
    thermal16 = str(tmp_path / "single" / "s0_ir.png")
    cv2.imwrite(thermal16, _thermal(rng, dtype=np.uint16))
    mfnet = str(tmp_path / "mfnet")
    return {"pst": pst, "fmb": fmb, "mfnet": mfnet, "rgbt": rgbt, "rgb": rgb, "thermal": thermal16}


# ---------------------------------------------------------------- discovery (no model needed)
def test_find_inputs_every_layout(demo, layouts):
    predictor, _ = demo
    items = predictor.find_inputs([layouts["pst"]])
    assert [i.name for i in items] == ["p0", "p1"]
    assert items[0].rgb_path.endswith(os.path.join("rgb", "p0.png"))
    assert items[0].thermal_path.endswith(os.path.join("thermal", "p0.png"))

    items = predictor.find_inputs([layouts["fmb"]])
    assert [(i.name, os.path.basename(os.path.dirname(i.thermal_path))) for i in items] == [
        ("f0", "Infrared")
    ]

    items = predictor.find_inputs([layouts["mfnet"]])
    assert [i.name for i in items] == ["m0D", "m1N"] and all(i.rgb_path == i.thermal_path for i in items)

    items = predictor.find_inputs([os.path.join(layouts["mfnet"], "*N.png")])
    assert [i.name for i in items] == ["m1N"]

    items = predictor.find_inputs([layouts["rgb"]], [layouts["thermal"]])
    assert len(items) == 1 and items[0].thermal_path == layouts["thermal"]

    items = predictor.find_inputs([layouts["pst"], layouts["rgbt"][0]])
    assert [i.name for i in items] == ["p0", "p1", "m0D"]


def test_load_pair_reads_like_the_loader(demo, layouts):
    predictor, _ = demo
    item = predictor.find_inputs([layouts["rgbt"][0]])[0]
    rgb, thermal = predictor.load_pair(item)
    stored = cv2.imread(layouts["rgbt"][0], cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(rgb, stored[:, :, 2::-1])
    np.testing.assert_array_equal(thermal, stored[:, :, 3].astype(np.float32))

    item = predictor.find_inputs([layouts["rgb"]], [layouts["thermal"]])[0]
    rgb, thermal = predictor.load_pair(item, "minmax")  # 16-bit thermal normalised to 0..255
    assert rgb.shape == (H, W, 3) and thermal.dtype == np.float32
    assert thermal.min() == 0.0 and thermal.max() == pytest.approx(255.0)


def test_discovery_errors(demo, layouts, tmp_path):
    predictor, _ = demo
    os.remove(os.path.join(layouts["pst"], "thermal", "p1.png"))
    cv2.imwrite(os.path.join(layouts["pst"], "thermal", "extra.png"), np.zeros((H, W), np.uint8))
    with pytest.raises(ValueError, match=r"Unmatched names.*\['p1'\].*\['extra'\]"):
        predictor.find_inputs([layouts["pst"]])
    with pytest.raises(ValueError, match="--thermal has 2"):
        predictor.find_inputs([layouts["rgb"]], [layouts["thermal"], layouts["thermal"]])
    with pytest.raises(FileNotFoundError, match="nope.png"):
        predictor.find_inputs([str(tmp_path / "nope.png")])
    with pytest.raises(FileNotFoundError, match="No file matches"):
        predictor.find_inputs([str(tmp_path / "*.tif")])
    with pytest.raises(FileNotFoundError, match="is a folder"):
        predictor.find_inputs([layouts["fmb"]], [layouts["thermal"]])
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="neither paired subfolders"):
        predictor.find_inputs([str(tmp_path / "empty")])
    with pytest.raises(ValueError, match="share an output name"):
        predictor.find_inputs([layouts["rgbt"][0], layouts["rgbt"][0]])


def test_read_errors(demo, layouts, tmp_path):
    predictor, _ = demo
    rgb_only = predictor.find_inputs([layouts["rgb"]])[0]  # a 3-channel file without --thermal
    with pytest.raises(ValueError, match=r"s0\.jpg.*--thermal"):
        predictor.load_pair(rgb_only)

    small = str(tmp_path / "small.png")
    cv2.imwrite(small, np.zeros((H // 2, W), np.uint8))
    with pytest.raises(ValueError, match=r"sizes differ.*small\.png"):
        predictor.load_pair(predictor.find_inputs([layouts["rgb"]], [small])[0])

    broken = str(tmp_path / "broken.png")
    with open(layouts["rgbt"][0], "rb") as f:
        data = f.read()
    with open(broken, "wb") as f:
        f.write(data[:40])
    with pytest.raises(ValueError, match=r"broken\.png"):
        predictor.load_pair(predictor.find_inputs([broken])[0])


def test_missing_weights_errors(demo):
    predictor, _ = demo
    cfg = get_cfg()
    add_sartm_config(cfg)
    cfg.MODEL.WEIGHTS = ""
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is empty"):
        predictor.RGBTPredictor(cfg)
    cfg.MODEL.WEIGHTS = "/no/such/model_final.pth"
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS file not found: '/no/such/model_final.pth'"):
        predictor.RGBTPredictor(cfg)


def test_draw_panel(demo):
    predictor, _ = demo
    rng = np.random.default_rng(1)
    rgb = _rgb(rng)
    thermal = _thermal(rng).astype(np.float32)
    pred = np.zeros((H, W), np.int64)
    pred[10:40, 20:60] = 2
    metadata = Metadata(name="t", stuff_classes=CLASSES, stuff_colors=COLORS)
    panel = predictor.draw_panel(rgb, thermal, torch.from_numpy(pred), metadata)
    assert panel.shape == (H, 3 * W, 3) and panel.dtype == np.uint8
    np.testing.assert_array_equal(panel[:, :W], rgb)
    inferno = cv2.applyColorMap(thermal.astype(np.uint8), cv2.COLORMAP_INFERNO)[:, :, ::-1]
    np.testing.assert_array_equal(panel[:, W : 2 * W], inferno)
    expected = Visualizer(rgb, metadata).draw_sem_seg(pred).get_image()
    np.testing.assert_array_equal(panel[:, 2 * W :], expected)
    # Each region is tinted towards its class colour: "car" (0, 0, 142) inside the box, black outside.
    overlay = panel[:, 2 * W :].astype(np.float64)

    def dist(img, ys, xs, color):
        return np.abs(img[ys, xs] - np.array(color, np.float64)).mean()

    box, outside = (slice(12, 20), slice(22, 58)), (slice(48, 62), slice(0, 96))
    assert dist(overlay, *box, COLORS[2]) < 0.5 * dist(rgb.astype(np.float64), *box, COLORS[2])
    assert dist(overlay, *outside, COLORS[0]) < 0.5 * dist(rgb.astype(np.float64), *outside, COLORS[0])
    with pytest.raises(ValueError, match="one size"):
        predictor.draw_panel(rgb, thermal, pred[:-1], metadata)


# ---------------------------------------------------------------- end to end (tiny model)
def _tiny_config(tmp_path, dataset_name, min_size_test):
    yaml = tmp_path / "tiny.yaml"
    yaml.write_text(
        f"""
_BASE_: ["{BASE_CONFIG}", "{TINY_MODEL}"]
MODEL:
  DEVICE: cpu
  SEM_SEG_HEAD: {{NUM_CLASSES: {len(CLASSES)}}}
  SARTM:
    FUSION: average
    LORA: {{RANK: 2}}
    AUX_HEAD: {{CONVS_DIM: 16}}
    DISTILL: {{ENABLED: False}}
DATASETS: {{TRAIN: ["{dataset_name}"], TEST: ["{dataset_name}"]}}
INPUT: {{MIN_SIZE_TEST: {min_size_test}, MAX_SIZE_TEST: 1000}}
"""
    )
    return str(yaml)


def test_demo_end_to_end(demo, layouts, tmp_path):
    predictor_mod, cli = demo
    name = f"test_demo_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(stuff_classes=CLASSES, stuff_colors=COLORS, ignore_label=255)
    config = _tiny_config(tmp_path, name, min_size_test=32)  # exercises the test-time resize

    def cfg_from(*opts):
        args = cli.get_parser().parse_args(["--config-file", config, "--input", "x", "--output", "y", *opts])
        return cli.setup_cfg(args)

    torch.manual_seed(0)
    model = build_model(cfg_from())
    os.makedirs(tmp_path / "w")
    DetectionCheckpointer(model, save_dir=str(tmp_path / "w")).save("model_final")
    weights = str(tmp_path / "w" / "model_final.pth")

    out = str(tmp_path / "out")
    opts = ["--opts", "MODEL.WEIGHTS", weights]
    folders = [layouts["pst"], layouts["fmb"], layouts["mfnet"]]
    written = cli.main(["--config-file", config, "--input", *folders, "--output", out, *opts])
    pair = ["--input", layouts["rgb"], "--thermal", layouts["thermal"]]
    written += cli.main(["--config-file", config, *pair, "--output", out, *opts])
    names = ["p0", "p1", "f0", "m0D", "m1N", "s0"]
    assert written == [os.path.join(out, f"{n}.png") for n in names]
    for path in written:
        panel = cv2.imread(path, cv2.IMREAD_COLOR)
        assert panel.shape == (H, 3 * W, 3), path

    # The predictor returns logits at the input's size; the overlay panel draws their argmax.
    predictor = predictor_mod.RGBTPredictor(cfg_from(*opts))
    item = predictor_mod.find_inputs([layouts["rgbt"][0]])[0]
    rgb, thermal = predictor_mod.load_pair(item)
    logits = predictor(rgb, thermal)
    assert logits.shape == (len(CLASSES), H, W) and torch.isfinite(logits).all()
    # The deployable model: LoRA merged (prepare_for_inference), not the training form.
    assert predictor.model.inference_only and not predictor.model.training
    merged = [m.merged for m in predictor.model.modules() if hasattr(m, "merged_weight")]
    assert merged and all(merged)
    panel = predictor_mod.draw_panel(rgb, thermal, logits.argmax(0), predictor.metadata)
    np.testing.assert_array_equal(cv2.imread(os.path.join(out, "m0D.png"))[:, :, ::-1], panel)
    with pytest.raises(ValueError, match="thermal must be"):
        predictor(rgb, thermal[:, :-1])


def test_demo_with_one_camera(demo, layouts, tmp_path, caplog):
    """--modality thermal / rgb: one camera's images alone, the missing panel grey and labelled."""
    predictor_mod, cli = demo
    name = f"test_demo_one_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(stuff_classes=CLASSES, stuff_colors=COLORS, ignore_label=255)
    config = _tiny_config(tmp_path, name, min_size_test=0)
    args = cli.get_parser().parse_args(["--config-file", config, "--input", "x", "--output", "y"])
    torch.manual_seed(0)
    model = build_model(cli.setup_cfg(args))
    os.makedirs(tmp_path / "w")
    DetectionCheckpointer(model, save_dir=str(tmp_path / "w")).save("model_final")
    opts = ["--opts", "MODEL.WEIGHTS", str(tmp_path / "w" / "model_final.pth")]
    thermal_dir = os.path.join(layouts["pst"], "thermal")
    out = str(tmp_path / "thermal_only")
    with caplog.at_level("WARNING"):
        written = cli.main(["--config-file", config, "--modality", "thermal", "--input", thermal_dir,
                            "--output", out, *opts])
    assert [os.path.basename(p) for p in written] == ["p0.png", "p1.png"]
    assert "trained without modality dropout" in caplog.text  # this model never saw one camera
    panel = cv2.imread(written[0])
    assert panel.shape == (H, 3 * W, 3)
    rgb_panel = panel[:, :W]
    assert (rgb_panel == 96).mean() > 0.9 and (rgb_panel != 96).any()  # grey, with "no RGB" written
    # The panel's prediction is the model's, run on the thermal stream alone.
    item = predictor_mod.RGBTInput("p0", None, os.path.join(thermal_dir, "p0.png"))
    rgb, thermal = predictor_mod.load_pair(item)
    assert rgb is None and thermal.shape == (H, W)
    predictor = predictor_mod.RGBTPredictor(cli.setup_cfg(cli.get_parser().parse_args(
        ["--config-file", config, "--input", "x", "--output", "y", *opts])))
    logits = predictor(None, thermal)
    any_rgb = torch.rand(3, H, W) * 255  # not computed: whatever the RGB channels hold
    image = torch.cat([any_rgb, torch.from_numpy(thermal)[None]])
    with torch.no_grad():
        expected = predictor.model([{"image": image, "modalities": "thermal"}])[0]["sem_seg"]
    torch.testing.assert_close(logits, expected)
    expected_panel = predictor_mod.draw_panel(None, thermal, logits.argmax(0), predictor.metadata)
    np.testing.assert_array_equal(panel[:, :, ::-1], expected_panel)

    rgb_dir = os.path.join(layouts["pst"], "rgb")
    written = cli.main(["--config-file", config, "--modality", "rgb", "--input", rgb_dir, "--output",
                        str(tmp_path / "rgb_only"), *opts])
    assert (cv2.imread(written[0])[:, W:2 * W] == 96).mean() > 0.9  # the thermal panel is the grey one
    # A 4-channel RGBT image with one camera: its other stream is dropped, as the loader reads it.
    rgbt_item = predictor_mod.find_inputs([layouts["rgbt"][0]], modality="thermal")[0]
    _, thermal_only = predictor_mod.load_pair(rgbt_item)
    both = predictor_mod.load_pair(predictor_mod.find_inputs([layouts["rgbt"][0]])[0])
    np.testing.assert_array_equal(thermal_only, both[1])
    with pytest.raises(SystemExit):
        cli.main(["--config-file", config, "--modality", "thermal", "--video-input", thermal_dir,
                  "--output", "y", *opts])
