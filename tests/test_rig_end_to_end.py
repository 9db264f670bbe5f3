"""Your own rig end to end: RGB and thermal cameras that are not pixel-aligned (thermal of another size
and field of view, through a known rig) registered with a rig file by a --register module, trained with
INPUT.MODALITY_DROPOUT.PARTIAL_VIEW, evaluated (--eval-only), exported (tools/export_model.py) and
evaluated as a graph (tools/eval_onnx.py), run by both predictors with the rig and drawn (demo/demo.py
--rig, streams, the web page's work); bad rigs as a user of train_net and the demo meets them.

A few generated 64x96 scenes seen by a 48x80 thermal camera whose view covers part of the RGB image, and
a tiny model trained for 3 iterations: the numbers are meaningless, the equalities are the point.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_MODEL, capture_eval_logits, demo_cli, load_script, write_png

import sartm_d2  # noqa: F401  (compat patches before detectron2)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog

from sartm_d2 import get_sartm_cfg
from sartm_d2.data.datasets import SYNTHETIC_CLASSES
from sartm_d2.data.io import read_rgbt
from sartm_d2.data.rig import Rig, save_rig
from sartm_d2.data.synthetic_rig import random_rig_homography, render_rig_scene
from sartm_d2.engine import RGBTPredictor, argument_parser
from sartm_d2.engine import main as engine_main
from sartm_d2.export import OnnxRGBTPredictor, read_sidecar

RGB_SIZE, THERMAL_SIZE = (64, 96), (48, 80)
TRAIN, TEST = ("rig_e2e_train", "rig_e2e_test")
NAMES = {"train": ["s0", "s1", "s2", "s3"], "test": ["s4", "s5"]}
SINGULAR = {"homography": [[1, 2, 0], [2, 4, 0], [0, 0, 1]], "rgb_size": list(RGB_SIZE),
            "thermal_size": list(THERMAL_SIZE), "method": "manual"}


def _require_deploy():
    """The export tests need onnx and onnxruntime (the deploy extra); the others run without them."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")


def _view(rig: Rig) -> np.ndarray:
    """Where the thermal camera sees the RGB image, computed here from the homography: the pixel centre
    mapped back into the thermal image lands inside its pixel edges (an independent check of the warp)."""
    h, w = rig.rgb_size
    ys, xs = np.mgrid[0:h, 0:w]
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)])
    back = np.linalg.inv(rig.homography) @ pts
    x, y = back[0] / back[2], back[1] / back[2]
    th, tw = rig.thermal_size
    eps = 1e-6
    inside = (x >= -0.5 - eps) & (x <= tw - 0.5 + eps) & (y >= -0.5 - eps) & (y <= th - 0.5 + eps)
    return inside.reshape(h, w)


def _register_module(path, root, rig_file, prefix: str = "rig_e2e") -> str:
    """A user's --register module, as datasets/own_dataset_example.py is one: ``<prefix>_train`` and
    ``<prefix>_test`` with the rig file."""
    lines = ["from sartm_d2.data import register_rgbt_sem_seg", f"CLASSES = {SYNTHETIC_CLASSES!r}"]
    for split in NAMES:
        lines.append(
            f"register_rgbt_sem_seg('{prefix}_{split}', {str(root / 'rgb')!r}, {str(root / 'thermal')!r}, "
            f"{str(root / 'labels')!r}, CLASSES, image_list={str(root / (split + '.txt'))!r}, "
            f"test_split={split == 'test'}, rig={str(rig_file)!r})"
        )
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def rig_set(tmp_path_factory):
    """The generated pairs, the rig file, the --register module, the config and a trained tiny model."""
    root = tmp_path_factory.mktemp("own_rig")
    rng = np.random.default_rng(5)
    # A thermal camera with a narrower field of view than the RGB one: part of the RGB image is unseen.
    homography = random_rig_homography(rng, THERMAL_SIZE, RGB_SIZE, max_shift=4, max_rotation_deg=2.0,
                                       scale=(0.8, 0.82))
    rig = Rig(homography, RGB_SIZE, THERMAL_SIZE, "manual")
    rig_file = save_rig(rig, str(root / "rig.json"))
    for i, name in enumerate(NAMES["train"] + NAMES["test"]):
        rgb, thermal, label = render_rig_scene(rng, homography, RGB_SIZE, THERMAL_SIZE, day=i % 2 == 0)
        write_png(root / "rgb" / f"{name}.png", rgb[:, :, ::-1])
        write_png(root / "thermal" / f"{name}.png", thermal)
        write_png(root / "labels" / f"{name}.png", label)
    for split, names in NAMES.items():
        (root / f"{split}.txt").write_text("\n".join(names) + "\n")
    module = _register_module(root / "register_own_rig.py", root, rig_file)
    emb = str(root / "text.pt")
    torch.save({"embeddings": torch.randn(len(SYNTHETIC_CLASSES), 16), "class_names": SYNTHETIC_CLASSES}, emb)
    config = root / "own_rig.yaml"
    config.write_text(
        f'_BASE_: ["{ROOT}/configs/Base-SARTM.yaml", "{TINY_MODEL}"]\n'
        f"DATASETS: {{TRAIN: [{TRAIN}], VAL: [], TEST: [{TEST}]}}\n"
        "MODEL: {DEVICE: cpu, SEM_SEG_HEAD: {NUM_CLASSES: 5}, SARTM: {DISTILL: {TEACHER: file, "
        f"EMBEDDINGS_FILE: {emb}}}}}}}\n"
        "INPUT: {MIN_SIZE_TRAIN: [0], MIN_SIZE_TEST: 0, CROP: {ENABLED: False}, "
        "MODALITY_DROPOUT: {PARTIAL_VIEW: 1.0}}\n"
        "SOLVER: {MAX_ITER: 3, IMS_PER_BATCH: 2, WARMUP_ITERS: 1, CHECKPOINT_PERIOD: 1000}\n"
        "TEST: {EVAL_PERIOD: 0}\nDATALOADER: {NUM_WORKERS: 0}\n"
    )
    out = root / "out"
    train = argument_parser().parse_args(["--register", module, "--config-file", str(config),
                                          "SEED", "1", "OUTPUT_DIR", str(out)])
    engine_main(train)
    weights = str(out / "model_final.pth")
    assert os.path.isfile(weights)
    yield {"root": root, "rig": rig, "rig_file": rig_file, "module": module, "config": str(config),
           "opts": ["MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(out)], "view": _view(rig)}
    for name in (TRAIN, TEST):
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.fixture(scope="module")
def evaluated(rig_set):
    """--eval-only on the rig's test split: its results and every image's logits."""
    with pytest.MonkeyPatch.context() as mp:
        seen = capture_eval_logits(mp)
        args = argument_parser().parse_args(["--register", rig_set["module"], "--config-file",
                                             rig_set["config"], "--eval-only", *rig_set["opts"]])
        results = engine_main(args)
    assert sorted(seen) == NAMES["test"]
    return results, seen


@pytest.fixture(scope="module")
def exported(rig_set):
    """tools/export_model.py on the rig's set: the parity images are its test pairs, warped (NaN outside)."""
    _require_deploy()
    tool = load_script("tools/export_model.py", "export_model_rig_e2e")
    out = str(rig_set["root"] / "onnx")
    rc = tool.main(["--register", rig_set["module"], "--config-file", rig_set["config"], "--output", out,
                    *rig_set["opts"]])
    assert rc == 0
    return os.path.join(out, "model.onnx")


def test_the_registered_set_warps_thermal_into_the_rgb_frame(rig_set):
    """Records name the rig; the loader gives thermal at the RGB size with NaN exactly outside the
    thermal camera's view (computed here from the homography)."""
    record = DatasetCatalog.get(TEST)[0]
    assert record["rig_file"] == rig_set["rig_file"]
    assert MetadataCatalog.get(TEST).rig_file == rig_set["rig_file"]
    rgb, thermal = read_rgbt(record)
    assert rgb.shape[:2] == thermal.shape == RGB_SIZE
    view = rig_set["view"]
    assert 0.2 < 1 - view.mean() < 0.6  # the test's premise: a good part of the RGB image is unseen
    np.testing.assert_array_equal(np.isfinite(thermal), view)


def test_eval_only_the_graph_and_both_predictors_agree_on_misaligned_pairs(rig_set, evaluated, exported,
                                                                            monkeypatch):
    """The export's parity ran on the warped pairs (NaN reached the graph) and passed; eval_onnx.py gives
    --eval-only's results; the torch predictor (its default rig: the test set's) gives --eval-only's
    logits for the raw pairs, and the ONNX predictor with the rig the same argmax and nearly the same
    logits, outside the thermal view too."""
    results, torch_logits = evaluated
    meta = read_sidecar(exported)
    assert meta["parity"]["passed"] and meta["parity"]["num_images"] == 2, meta["parity"]
    assert meta["parity"]["source"] == f"DATASETS.TEST[0] {TEST}"
    assert "warp_thermal" in meta["input"]["thermal_frame"]

    seen = capture_eval_logits(monkeypatch)
    tool = load_script("tools/eval_onnx.py", "eval_onnx_rig_e2e")
    onnx_results = tool.main(["--register", rig_set["module"], "--config-file", rig_set["config"], "--onnx",
                              exported, "--output", str(rig_set["root"] / "eval_onnx"), *rig_set["opts"]])
    assert json.dumps(onnx_results) == json.dumps(results)
    assert sorted(seen) == NAMES["test"]

    cfg = get_sartm_cfg(rig_set["config"], rig_set["opts"])
    predictor = RGBTPredictor(cfg)
    assert predictor.rig == rig_set["rig"]  # DATASETS.TEST[0]'s rig, by default
    onnx_predictor = OnnxRGBTPredictor(exported, rig=rig_set["rig_file"])
    outside = ~rig_set["view"]
    for record in DatasetCatalog.get(TEST):
        rgb, thermal = read_rgbt(record, rig=rig_set["rig"], warp=False)
        assert thermal.shape == THERMAL_SIZE  # as the thermal camera took it
        inputs = predictor.prepare(rgb, thermal)
        np.testing.assert_array_equal(torch.isfinite(inputs["image"][3]).numpy(), rig_set["view"])
        logits = predictor(rgb, thermal)["sem_seg"]
        assert logits.shape == (5, *RGB_SIZE)
        assert torch.equal(logits, torch_logits[record["image_id"]]), record["image_id"]
        graph = onnx_predictor(rgb, thermal)["sem_seg"]
        assert torch.equal(graph.argmax(0), logits.argmax(0)), record["image_id"]
        assert (graph - logits).abs().max() < 1e-3
        assert (graph - logits).abs()[:, torch.from_numpy(outside)].max() < 1e-3
        assert torch.isfinite(graph).all()
        # The pixels outside the view are "no thermal data", not a cold (zero) thermal image.
        zeros = np.where(np.isfinite(inputs["image"][3].numpy()), inputs["image"][3].numpy(), 0.0)
        cold = onnx_predictor.model([{"image": torch.cat([inputs["image"][:3],
                                                          torch.from_numpy(zeros)[None]])}])[0]["sem_seg"]
        assert not torch.allclose(cold, graph, atol=1e-3)
    with pytest.raises(ValueError, match=r"thermal image '<array> \(thermal\)' is 96x64 \(WxH\), but rig "
                       r"file '.*rig\.json' was made for thermal images of 80x48"):
        onnx_predictor(rgb, np.zeros(RGB_SIZE, np.float32))


def test_export_checks_parity_on_demo_style_inputs_through_their_rig(rig_set, tmp_path):
    """--parity-input (the set's folder of rgb/ + thermal/ pairs, of two sizes) with --rig: the parity
    images are warped by the rig (their thermal NaN outside its view) and the check passes; --rig
    without such inputs is refused (a registered set has its own rig)."""
    _require_deploy()
    tool = load_script("tools/export_model.py", "export_model_rig_e2e")
    common = ["--register", rig_set["module"], "--config-file", rig_set["config"], "--output", str(tmp_path)]
    rc = tool.main([*common, "--parity-input", str(rig_set["root"]), "--rig", rig_set["rig_file"],
                    "--parity-images", "3", *rig_set["opts"]])
    parity = read_sidecar(str(tmp_path / "model.onnx"))["parity"]
    assert rc == 0 and parity["passed"] and parity["source"] == "--parity-input"
    assert parity["images"] == ["s0", "s1", "s2"] and (parity["height"], parity["width"]) == RGB_SIZE
    records, _ = tool.parity_records(None, [str(rig_set["root"])], rig_set["rig_file"])
    _, thermal = read_rgbt(records[0])
    np.testing.assert_array_equal(np.isfinite(thermal), rig_set["view"])
    with pytest.raises(SystemExit, match="--rig belongs to --parity-input / --calibration-input"):
        tool.main([*common, "--rig", rig_set["rig_file"], *rig_set["opts"]])


def test_demo_draws_the_rig_pairs_in_the_rgb_frame_with_no_data_grey(rig_set, tmp_path, monkeypatch):
    """demo/demo.py --rig on raw pairs (two sizes): the panel is draw_panel of the predictor's prediction
    and the warped thermal image, at the RGB size; its thermal panel is the neutral grey exactly where the
    thermal camera does not see (not INFERNO's cold black), and the prediction covers the whole frame.
    Streams (two frame folders of two sizes) take --rig the same way."""
    cli = demo_cli(monkeypatch)
    drawing = sys.modules["drawing"]
    records = DatasetCatalog.get(TEST)
    rgbs, thermals = [r["file_name"] for r in records], [r["thermal_file_name"] for r in records]
    common = ["--register", rig_set["module"], "--config-file", rig_set["config"],
              "--rig", rig_set["rig_file"]]
    written = cli.main([*common, "--input", *rgbs, "--thermal", *thermals, "--output", str(tmp_path / "demo"),
                        "--opts", *rig_set["opts"]])
    assert [os.path.basename(p) for p in written] == [f"{n}.png" for n in NAMES["test"]]

    predictor = RGBTPredictor(get_sartm_cfg(rig_set["config"], rig_set["opts"]), rig=rig_set["rig_file"])
    rgb, raw = read_rgbt(records[0], rig=rig_set["rig"], warp=False)
    out = predictor(rgb, raw)
    _, warped = predictor.to_rgb_frame(rgb, raw)
    panel = drawing.render_panel(rgb, warped, out["sem_seg"].argmax(0), predictor.metadata)
    np.testing.assert_array_equal(cv2.imread(written[0])[:, :, ::-1], panel.image)

    h, w = drawing.drawing_size(*RGB_SIZE)
    top = panel.strip[1] - h
    thermal_panel = panel.image[top:top + h, w:2 * w].astype(int)
    view = cv2.resize(rig_set["view"].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    grey = (thermal_panel == drawing._MISSING_GREY).all(axis=2)
    # Unseen pixels are grey; the drawing's bilinear upscaling spreads a NaN by up to one input pixel.
    band = np.ones((2 * int(np.ceil(panel.scale)) + 1,) * 2, np.uint8)
    inner_unseen = cv2.erode((~view).astype(np.uint8), band).astype(bool)
    inner_seen = cv2.erode(view.astype(np.uint8), band).astype(bool)
    assert grey[inner_unseen].all() and not grey[inner_seen].any()
    assert panel.image.shape[1] == 3 * w  # the prediction panel spans the RGB frame
    assert cv2.imread(written[0]).shape == panel.image.shape

    frames = tmp_path / "frames"
    for sub, paths in (("rgb", rgbs), ("thermal", thermals)):
        (frames / sub).mkdir(parents=True)
        for i, p in enumerate(paths):
            os.symlink(p, frames / sub / f"{i:03d}.png")
    streams = ["--video-input", str(frames / "rgb"), "--thermal-video", str(frames / "thermal")]
    stream = cli.main([*common, *streams, "--output", str(tmp_path / "stream"), "--opts", *rig_set["opts"]])
    assert len(stream) == 2
    np.testing.assert_array_equal(cv2.imread(stream[0]), cv2.imread(written[0]))


def test_the_web_page_takes_two_sizes_with_a_rig_and_names_the_rig_without(rig_set, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "demo"))
    spec = importlib.util.spec_from_file_location("sartm_web_rig", os.path.join(ROOT, "demo", "web.py"))
    web = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "sartm_web_rig", web)
    spec.loader.exec_module(web)
    record = DatasetCatalog.get(TEST)[0]
    cfg = get_sartm_cfg(rig_set["config"], rig_set["opts"])
    with_rig = web.WebDemo(RGBTPredictor(cfg, rig=rig_set["rig_file"]), str(tmp_path / "a"))
    result = with_rig.segment_files(record["file_name"], record["thermal_file_name"])
    assert (result.height, result.width) == RGB_SIZE and result.pred.shape == RGB_SIZE

    # The same model named by an aligned test set (the embedded one's classes are the same): no rig.
    aligned = get_sartm_cfg(rig_set["config"],
                            [*rig_set["opts"], "DATASETS.TEST", "('synthetic_rgbt_test',)"])
    without = web.WebDemo(RGBTPredictor(aligned), str(tmp_path / "b"))
    assert without.rig is None
    with pytest.raises(web.InputError, match=r"sizes differ: 's4.png' is 96x64 and 's4.png' is 80x48 "
                       r"\(WxH\): the cameras are not pixel-aligned.*Restart it with --rig FILE"):
        without.segment_files(record["file_name"], record["thermal_file_name"])
    examples = web.write_examples(str(tmp_path / "ex"), [(32, 32)], rig=with_rig.rig)
    for _, (first, second) in examples:
        assert cv2.imread(first).shape[:2] == RGB_SIZE and cv2.imread(second, -1).shape == THERMAL_SIZE
        with_rig.segment_files(first, second)
    clip = web.write_example_clip(str(tmp_path / "ex"), 32, 32, frames=2, rig=with_rig.rig)
    result = with_rig.segment_clip(*clip)
    assert len(result.frames) == 2 and result.pred.shape == RGB_SIZE


# ----------------------------------------------------------------------------- what a user sees
def _bad_rigs(tmp_path):
    """A missing rig file, a singular one and one made for other image sizes."""
    missing = str(tmp_path / "no_such_rig.json")
    singular = tmp_path / "singular.json"
    singular.write_text(json.dumps(SINGULAR))
    other = Rig(random_rig_homography(np.random.default_rng(0), (96, 128), (128, 160)), (128, 160), (96, 128))
    return missing, str(singular), save_rig(other, str(tmp_path / "wrong_sizes.json"))


def test_train_net_names_a_missing_a_singular_and_a_wrong_sized_rig_file(rig_set, tmp_path):
    """What train_net.py --register shows: the registration names a missing or singular rig file; a rig
    made for other sizes fails at the first image, naming it and the rig file."""
    missing, singular, wrong = _bad_rigs(tmp_path)

    def run(case, rig_file):
        module = _register_module(tmp_path / f"register_{case}.py", rig_set["root"], rig_file, prefix=case)
        args = argument_parser().parse_args([
            "--register", module, "--config-file", rig_set["config"], "--eval-only", *rig_set["opts"],
            "DATASETS.TRAIN", f"('{case}_train',)", "DATASETS.TEST", f"('{case}_test',)"])
        engine_main(args)

    with pytest.raises(FileNotFoundError, match=rf"Dataset 'missing_train' \(rig=\): Rig file '{missing}' "
                       "not found. Estimate one with tools/calibrate_rig.py"):
        run("missing", missing)
    with pytest.raises(ValueError, match=rf"Dataset 'singular_train' \(rig=\): Rig file '{singular}': "
                       r"homography .* is singular or ill-conditioned"):
        run("singular", singular)
    rgb_file = str(rig_set["root"] / "rgb" / "s4.png")
    try:
        with pytest.raises(ValueError, match=rf"RGB image '{rgb_file}' is 96x64 \(WxH\), but rig file "
                           rf"'{wrong}' was made for RGB images of 160x128"):
            run("wrong", wrong)
    finally:
        for name in ("wrong_train", "wrong_test"):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_the_demo_names_a_missing_a_singular_and_a_wrong_sized_rig_file(rig_set, tmp_path, monkeypatch,
                                                                        capsys):
    """demo/demo.py --rig: a missing or singular file is a command-line error naming it (before any model
    is built); a rig made for other sizes fails at the input, naming the image and the rig file."""
    cli = demo_cli(monkeypatch)
    missing, singular, wrong = _bad_rigs(tmp_path)
    record = DatasetCatalog.get(TEST)[0]
    args = ["--config-file", rig_set["config"], "--register", rig_set["module"], "--input",
            record["file_name"], "--thermal", record["thermal_file_name"], "--output", str(tmp_path / "out")]
    for bad, message in ((missing, f"--rig: Rig file '{missing}' not found"),
                         (singular, f"--rig: Rig file '{singular}': homography")):
        with pytest.raises(SystemExit):
            cli.main([*args, "--rig", bad, "--opts", *rig_set["opts"]])
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match=rf"RGB image '{record['file_name']}' is 96x64 \(WxH\), but rig file "
                       rf"'{wrong}' was made for RGB images of 160x128"):
        cli.main([*args, "--rig", wrong, "--opts", *rig_set["opts"]])
