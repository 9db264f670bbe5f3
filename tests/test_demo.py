"""The RGB-T demo: input discovery in every layout, clear errors, drawing, and an end-to-end run with the
package's predictor."""

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

from sartm_d2.config import add_sartm_config
from sartm_d2.engine import RGBTPredictor, build_inference_model

DEMO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demo")
H, W = 64, 96
CLASSES = ["background", "person", "car"]
COLORS = [(0, 0, 0), (220, 20, 60), (0, 0, 142)]


@pytest.fixture
def demo(monkeypatch):
    """sartm_d2.data.inputs, and demo/drawing.py and demo/demo.py imported the way ``python demo/demo.py``
    sees them (demo/ first on the import path)."""
    monkeypatch.syspath_prepend(DEMO_DIR)
    inputs = importlib.import_module("sartm_d2.data.inputs")
    drawing = importlib.import_module("drawing")
    spec = importlib.util.spec_from_file_location("sartm_demo_cli", os.path.join(DEMO_DIR, "demo.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return inputs, drawing, cli


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
    inputs, _, _ = demo
    items = inputs.find_inputs([layouts["pst"]])
    assert [i.name for i in items] == ["p0", "p1"]
    assert items[0].rgb_path.endswith(os.path.join("rgb", "p0.png"))
    assert items[0].thermal_path.endswith(os.path.join("thermal", "p0.png"))

    items = inputs.find_inputs([layouts["fmb"]])
    assert [(i.name, os.path.basename(os.path.dirname(i.thermal_path))) for i in items] == [
        ("f0", "Infrared")
    ]

    items = inputs.find_inputs([layouts["mfnet"]])
    assert [i.name for i in items] == ["m0D", "m1N"] and all(i.rgb_path == i.thermal_path for i in items)

    items = inputs.find_inputs([os.path.join(layouts["mfnet"], "*N.png")])
    assert [i.name for i in items] == ["m1N"]

    items = inputs.find_inputs([layouts["rgb"]], [layouts["thermal"]])
    assert len(items) == 1 and items[0].thermal_path == layouts["thermal"]

    items = inputs.find_inputs([layouts["pst"], layouts["rgbt"][0]])
    assert [i.name for i in items] == ["p0", "p1", "m0D"]


def test_load_pair_reads_like_the_loader(demo, layouts):
    inputs, _, _ = demo
    item = inputs.find_inputs([layouts["rgbt"][0]])[0]
    rgb, thermal = inputs.load_pair(item)
    stored = cv2.imread(layouts["rgbt"][0], cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(rgb, stored[:, :, 2::-1])
    np.testing.assert_array_equal(thermal, stored[:, :, 3].astype(np.float32))

    item = inputs.find_inputs([layouts["rgb"]], [layouts["thermal"]])[0]
    rgb, thermal = inputs.load_pair(item, "minmax")  # 16-bit thermal normalised to 0..255
    assert rgb.shape == (H, W, 3) and thermal.dtype == np.float32
    assert thermal.min() == 0.0 and thermal.max() == pytest.approx(255.0)


def test_discovery_errors(demo, layouts, tmp_path):
    inputs, _, _ = demo
    os.remove(os.path.join(layouts["pst"], "thermal", "p1.png"))
    cv2.imwrite(os.path.join(layouts["pst"], "thermal", "extra.png"), np.zeros((H, W), np.uint8))
    with pytest.raises(ValueError, match=r"Unmatched names.*\['p1'\].*\['extra'\]"):
        inputs.find_inputs([layouts["pst"]])
    with pytest.raises(ValueError, match="--thermal has 2"):
        inputs.find_inputs([layouts["rgb"]], [layouts["thermal"], layouts["thermal"]])
    with pytest.raises(FileNotFoundError, match="nope.png"):
        inputs.find_inputs([str(tmp_path / "nope.png")])
    with pytest.raises(FileNotFoundError, match="No file matches"):
        inputs.find_inputs([str(tmp_path / "*.tif")])
    with pytest.raises(FileNotFoundError, match="is a folder"):
        inputs.find_inputs([layouts["fmb"]], [layouts["thermal"]])
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="neither paired subfolders"):
        inputs.find_inputs([str(tmp_path / "empty")])
    with pytest.raises(ValueError, match="share an output name"):
        inputs.find_inputs([layouts["rgbt"][0], layouts["rgbt"][0]])


def test_read_errors(demo, layouts, tmp_path):
    inputs, _, _ = demo
    rgb_only = inputs.find_inputs([layouts["rgb"]])[0]  # a 3-channel file without --thermal
    with pytest.raises(ValueError, match=r"s0\.jpg.*--thermal"):
        inputs.load_pair(rgb_only)

    small = str(tmp_path / "small.png")
    cv2.imwrite(small, np.zeros((H // 2, W), np.uint8))
    with pytest.raises(ValueError, match=r"sizes differ.*small\.png"):
        inputs.load_pair(inputs.find_inputs([layouts["rgb"]], [small])[0])

    broken = str(tmp_path / "broken.png")
    with open(layouts["rgbt"][0], "rb") as f:
        data = f.read()
    with open(broken, "wb") as f:
        f.write(data[:40])
    with pytest.raises(ValueError, match=r"broken\.png"):
        inputs.load_pair(inputs.find_inputs([broken])[0])


def test_missing_weights_errors():
    """One message per case, from build_inference_model, before the model is built."""
    cfg = get_cfg()
    add_sartm_config(cfg)
    cfg.MODEL.WEIGHTS = ""
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is empty: inference needs trained weights"):
        RGBTPredictor(cfg)
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is empty: inference needs trained weights"):
        build_inference_model(cfg)
    cfg.MODEL.WEIGHTS = "/no/such/model_final.pth"
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS file not found: '/no/such/model_final.pth'"):
        RGBTPredictor(cfg)


def _boxes_overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _inside(box, outer):
    return outer[0] <= box[0] <= box[2] <= outer[2] and outer[1] <= box[1] <= box[3] <= outer[3]


def test_draw_panel(demo):
    """Upscaled panels (masks nearest-neighbour), the legend naming exactly the classes present, and a
    size that does not depend on the content."""
    _, drawing, _ = demo
    rng = np.random.default_rng(1)
    rgb = _rgb(rng)
    thermal = _thermal(rng).astype(np.float32)
    pred = np.zeros((H, W), np.int64)
    pred[10:40, 20:60] = 2
    metadata = Metadata(name="t", stuff_classes=CLASSES, stuff_colors=COLORS)
    layout = drawing.render_panel(rgb, thermal, torch.from_numpy(pred), metadata, overlay_on="rgb")
    panel = layout.image
    h, w = drawing.drawing_size(H, W)
    assert (h, w) == (480, 720) and layout.scale == 7.5  # 64x96 drawn with a short side of 480
    header = layout.strip[1] - h
    assert panel.dtype == np.uint8 and panel.shape == (layout.strip[3], 3 * w, 3) and header > 0
    np.testing.assert_array_equal(panel[header:header + h, :w], cv2.resize(rgb, (w, h)))
    inferno = cv2.applyColorMap(cv2.resize(thermal, (w, h)).round().astype(np.uint8), cv2.COLORMAP_INFERNO)
    np.testing.assert_array_equal(panel[header:header + h, w:2 * w], inferno[:, :, ::-1])
    assert np.array_equal(drawing.draw_panel(rgb, thermal, pred, metadata, overlay_on="rgb"), panel)

    # The legend names the classes present, in class order, each swatch in its class colour.
    assert [(e.class_id, e.name) for e in layout.legend] == [(0, "background"), (2, "car")]
    for entry in layout.legend:
        x0, y0, x1, y1 = entry.box
        swatch = panel[y0 + 2:y1 - 2, x0 + 2:x1 - 2].reshape(-1, 3)
        assert (swatch == entry.color).all(), entry
        assert _inside(entry.box, layout.strip) and _inside(entry.label_box, layout.strip)
    assert layout.trust == []  # no trust given: no bar

    # The car, upscaled nearest-neighbour (rows 10..40 -> 75..300), tinted towards its colour; the
    # background only dimmed (black would hide the image).
    overlay = panel[header:header + h, 2 * w:].astype(np.float64)
    base = cv2.resize(rgb, (w, h)).astype(np.float64)
    car, outside = (slice(90, 280), slice(160, 440)), (slice(330, 470), slice(0, 700))

    def dist(img, region, color):
        return np.abs(img[region] - np.array(color, np.float64)).mean()

    assert dist(overlay, car, COLORS[2]) < 0.5 * dist(base, car, COLORS[2])
    assert overlay[outside].mean() < 0.8 * base[outside].mean() and overlay[outside].mean() > 0.5 * base[
        outside].mean()
    edge = pred.copy()
    edge[10:40, 20:60] = 1  # another class present: another legend, the same size
    assert drawing.draw_panel(rgb, thermal, edge, metadata).shape == panel.shape
    # A large input is drawn at its own size.
    big = drawing.render_panel(_rgb(rng, 480, 640), None, np.zeros((480, 640), np.int64), metadata)
    assert big.scale == 1.0 and big.image.shape[1] == 3 * 640
    assert drawing.render_panel(rgb, thermal, pred, metadata, short_side=0).image.shape[1] == 3 * W
    with pytest.raises(ValueError, match="one size"):
        drawing.draw_panel(rgb, thermal, pred[:-1], metadata)
    with pytest.raises(ValueError, match="overlay_on must be one of"):
        drawing.draw_panel(rgb, thermal, pred, metadata, overlay_on="ir")


def test_legend_names_never_collide(demo):
    """Many long class names on a small image: the legend wraps; no swatch or name touches another."""
    _, drawing, _ = demo
    names = [f"class with a long name number {i}" for i in range(16)]
    colors = [(15 * i, 255 - 15 * i, (70 * i) % 256) for i in range(16)]
    metadata = Metadata(name="long", stuff_classes=names, stuff_colors=colors)
    pred = np.repeat(np.arange(16), 4)[None, :].repeat(32, axis=0)  # 32 x 64, every class present
    layout = drawing.render_panel(_rgb(np.random.default_rng(0), 32, 64), None, pred, metadata)
    assert [e.name for e in layout.legend] == names
    rows = {e.box[1] for e in layout.legend}
    assert len(rows) > 1  # wrapped
    boxes = [b for e in layout.legend for b in (e.box, e.label_box)]
    for i, a in enumerate(boxes):
        assert _inside(a, layout.strip)
        for b in boxes[i + 1:]:
            assert not _boxes_overlap(a, b), (a, b)
    # The trust bar sits in the same strip, clear of the legend.
    with_trust = drawing.render_panel(_rgb(np.random.default_rng(0), 32, 64), None, pred, metadata,
                                        trust=[0.0, 0.5])
    assert with_trust.image.shape == layout.image.shape
    for bar in with_trust.trust:
        assert _inside(bar.box, layout.strip) and not any(_boxes_overlap(bar.box, b) for b in boxes)


def test_trust_bar(demo):
    """Given a trust, each camera's bar is filled in proportion; a missing camera reads "missing"."""
    _, drawing, _ = demo
    rng = np.random.default_rng(2)
    rgb, thermal = _rgb(rng), _thermal(rng).astype(np.float32)
    pred = np.zeros((H, W), np.int64)
    metadata = Metadata(name="t", stuff_classes=CLASSES, stuff_colors=COLORS)
    plain = drawing.render_panel(rgb, thermal, pred, metadata)
    layout = drawing.render_panel(rgb, thermal, pred, metadata, trust=torch.tensor([0.93, 0.12]))
    assert [(b.name, round(b.value, 2)) for b in layout.trust] == [("RGB", 0.93), ("thermal", 0.12)]
    rgb_bar, thermal_bar = layout.trust
    bar_len = rgb_bar.box[2] - rgb_bar.box[0]
    assert rgb_bar.fill[2] - rgb_bar.fill[0] == round(0.93 * bar_len)
    assert thermal_bar.fill[2] - thermal_bar.fill[0] == round(0.12 * bar_len)
    changed = np.argwhere((layout.image != plain.image).any(axis=2))
    assert len(changed) and _inside((*changed.min(0)[::-1], *changed.max(0)[::-1] + 1), layout.strip)
    x0, y0, x1, y1 = rgb_bar.fill
    assert (layout.image[y0:y1, x0:x1] != layout.image[y0, x1 + 1]).any(axis=2).all()  # filled != empty

    one = drawing.render_panel(None, thermal, pred, metadata, trust=np.array([0.4, 0.8], np.float32))
    assert [(b.name, b.value) for b in one.trust] == [("RGB", None), ("thermal", pytest.approx(0.8))]
    assert one.trust[0].fill[2] == one.trust[0].fill[0]  # nothing filled for the missing camera
    with pytest.raises(ValueError, match=r"trust must be \[RGB, thermal\]"):
        drawing.render_panel(rgb, thermal, pred, metadata, trust=[0.5])


def test_overlay_base(demo):
    """"auto" brightens a dark RGB image under the masks; thermal without RGB; a flag forces one."""
    _, drawing, _ = demo
    rng = np.random.default_rng(3)
    night = (_rgb(rng) * 0.1).astype(np.uint8)
    day, thermal = _rgb(rng), _thermal(rng).astype(np.float32)
    pred = np.zeros((H, W), np.int64)
    metadata = Metadata(name="t", stuff_classes=CLASSES, stuff_colors=COLORS)

    def base(rgb, t, **kw):
        return drawing.render_panel(rgb, t, pred, metadata, **kw).overlay_on

    assert base(night, thermal) == "rgb-bright" and base(day, thermal) == "rgb"
    assert base(None, thermal) == "thermal" and base(night, None, overlay_on="thermal") == "rgb"
    assert base(night, thermal, overlay_on="rgb") == "rgb"
    assert base(day, thermal, overlay_on="thermal") == "thermal"
    bright = drawing.brighten(night)
    luma = np.array([0.299, 0.587, 0.114])
    assert np.median(bright @ luma) > 3 * np.median(night @ luma)
    assert np.array_equal(drawing.brighten(np.full((4, 4, 3), 200, np.uint8)), np.full((4, 4, 3), 200))
    dark = drawing.render_panel(night, thermal, pred, metadata)
    forced = drawing.render_panel(night, thermal, pred, metadata, overlay_on="rgb")
    h, w = drawing.drawing_size(H, W)
    top = dark.strip[1] - h
    assert dark.image[top:top + h, 2 * w:].mean() > 2 * forced.image[top:top + h, 2 * w:].mean()


# ---------------------------------------------------------------- end to end (tiny model)
def _tiny_config(tmp_path, dataset_name, min_size_test, fusion="average"):
    yaml = tmp_path / "tiny.yaml"
    yaml.write_text(
        f"""
_BASE_: ["{BASE_CONFIG}", "{TINY_MODEL}"]
MODEL:
  DEVICE: cpu
  SEM_SEG_HEAD: {{NUM_CLASSES: {len(CLASSES)}}}
  SARTM:
    FUSION: {fusion}
    FUSION_LANGUAGE: False
    LORA: {{RANK: 2}}
    AUX_HEAD: {{CONVS_DIM: 16}}
    DISTILL: {{ENABLED: False}}
DATASETS: {{TRAIN: ["{dataset_name}"], TEST: ["{dataset_name}"]}}
INPUT: {{MIN_SIZE_TEST: {min_size_test}, MAX_SIZE_TEST: 1000}}
"""
    )
    return str(yaml)


def test_demo_end_to_end(demo, layouts, tmp_path):
    inputs, drawing, cli = demo
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
    shapes = {cv2.imread(path, cv2.IMREAD_COLOR).shape for path in written}
    h, w = drawing.drawing_size(H, W)
    assert len(shapes) == 1 and shapes.pop()[1:] == (3 * w, 3)  # 64x96 inputs drawn upscaled

    # The predictor returns logits at the input's size; the overlay panel draws their argmax.
    predictor = RGBTPredictor(cfg_from(*opts))
    item = inputs.find_inputs([layouts["rgbt"][0]])[0]
    rgb, thermal = inputs.load_pair(item)
    result = predictor(rgb, thermal)
    logits = result["sem_seg"]
    assert logits.shape == (len(CLASSES), H, W) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    # The deployable model: LoRA merged (prepare_for_inference), not the training form.
    assert predictor.model.inference_only and not predictor.model.training
    merged = [m.merged for m in predictor.model.modules() if hasattr(m, "merged_weight")]
    assert merged and all(merged)
    panel = drawing.draw_panel(rgb, thermal, logits.argmax(0), predictor.metadata)
    np.testing.assert_array_equal(cv2.imread(os.path.join(out, "m0D.png"))[:, :, ::-1], panel)
    assert result["trust"] is None  # the "average" fusion estimates no trust
    with pytest.raises(ValueError, match=r"thermal must be H x W of the RGB image's size \(64, 96\)"):
        predictor(rgb, thermal[:, :-1])
    with pytest.raises(ValueError, match="rgb must be uint8 H x W x 3, got float32"):
        predictor(rgb.astype(np.float32), thermal)
    with pytest.raises(ValueError, match="The input setting 'rgbt' needs the thermal image, but it is None"):
        predictor(rgb, None)
    with pytest.raises(ValueError, match="Unknown input setting 'thermal-fog-2'"):  # fog is an RGB family
        predictor(rgb, thermal, "thermal-fog-2")
    # --overlay-on thermal: the masks over the grey thermal image.
    written = cli.main(["--config-file", config, "--input", layouts["rgbt"][0], "--output",
                        str(tmp_path / "on_thermal"), "--overlay-on", "thermal", *opts])
    on_thermal = drawing.draw_panel(rgb, thermal, logits.argmax(0), predictor.metadata, overlay_on="thermal")
    np.testing.assert_array_equal(cv2.imread(written[0])[:, :, ::-1], on_thermal)
    assert not np.array_equal(on_thermal, panel)


def test_demo_with_one_camera(demo, layouts, tmp_path, caplog):
    """--modality thermal / rgb: one camera's images alone, the missing panel grey and labelled, and the
    trust of a fusion that estimates one (the missing camera's is 0 and drawn as "missing")."""
    inputs, drawing, cli = demo
    name = f"test_demo_one_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(stuff_classes=CLASSES, stuff_colors=COLORS, ignore_label=255)
    config = _tiny_config(tmp_path, name, min_size_test=0, fusion="reliability")
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
    h, w = drawing.drawing_size(H, W)
    rows = slice(panel.shape[0] // 2 - h // 4, panel.shape[0] // 2 + h // 4)  # inside the image row
    rgb_panel = panel[rows, :w]
    assert (rgb_panel == 96).mean() > 0.9 and (rgb_panel != 96).any()  # grey, with "no RGB" written
    # The panel's prediction is the model's, run on the thermal stream alone.
    item = inputs.RGBTInput("p0", None, os.path.join(thermal_dir, "p0.png"))
    rgb, thermal = inputs.load_pair(item)
    assert rgb is None and thermal.shape == (H, W)
    predictor = RGBTPredictor(cli.setup_cfg(cli.get_parser().parse_args(
        ["--config-file", config, "--input", "x", "--output", "y", *opts])))
    out = predictor(None, thermal, "thermal")
    logits, trust = out["sem_seg"], out["trust"]
    assert trust.dtype == torch.float32 and trust.shape == (2,) and trust[0] == 0.0 and 0.0 < trust[1] <= 1.0
    any_rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    # An RGB image given under "thermal" is not computed either.
    torch.testing.assert_close(predictor(any_rgb, thermal, "thermal")["sem_seg"], logits)
    any_rgb = torch.rand(3, H, W) * 255  # not computed: whatever the RGB channels hold
    image = torch.cat([any_rgb, torch.from_numpy(thermal)[None]])
    with torch.no_grad():
        expected = predictor.model([{"image": image, "modalities": "thermal"}])[0]["sem_seg"]
    torch.testing.assert_close(logits, expected)
    layout = drawing.render_panel(None, thermal, logits.argmax(0), predictor.metadata, trust=trust)
    np.testing.assert_array_equal(panel[:, :, ::-1], layout.image)
    assert [b.value for b in layout.trust] == [None, pytest.approx(float(trust[1]))]

    rgb_dir = os.path.join(layouts["pst"], "rgb")
    written = cli.main(["--config-file", config, "--modality", "rgb", "--input", rgb_dir, "--output",
                        str(tmp_path / "rgb_only"), *opts])
    assert (cv2.imread(written[0])[rows, w:2 * w] == 96).mean() > 0.9  # the thermal panel is the grey one
    # A 4-channel RGBT image with one camera: its other stream is dropped, as the loader reads it.
    rgbt_item = inputs.find_inputs([layouts["rgbt"][0]], modality="thermal")[0]
    _, thermal_only = inputs.load_pair(rgbt_item)
    both = inputs.load_pair(inputs.find_inputs([layouts["rgbt"][0]])[0])
    np.testing.assert_array_equal(thermal_only, both[1])
    with pytest.raises(SystemExit):
        cli.main(["--config-file", config, "--modality", "thermal", "--video-input", thermal_dir,
                  "--output", "y", *opts])
