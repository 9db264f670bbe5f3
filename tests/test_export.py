"""ONNX export (tools/export_model.py), its parity check, the onnxruntime predictor and demo, eval_onnx.py.

One tiny model on the session's 64x96 synthetic set is exported once per module; the parity check must
pass for it and fail for an export with a skipped normalisation.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import capture_eval_logits, demo_cli, load_script

import sartm_d2  # noqa: F401  (compat patches before detectron2)

# isort: split
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser

from sartm_d2 import get_sartm_cfg
from sartm_d2.data.datasets import SYNTHETIC_CLASSES
from sartm_d2.data.io import read_rgbt
from sartm_d2.engine import main as engine_main
from sartm_d2.export import (
    FP16_MIN_AGREEMENT,
    FP32_MIN_AGREEMENT,
    ExportableSARTM,
    InputSizeError,
    OnnxRGBTPredictor,
    build_export_module,
    check_parity,
    create_session,
    export_geometry,
    load_parity_samples,
    read_sidecar,
)
from sartm_d2.export.exporter import write_onnx, write_sidecar
from sartm_d2.export.runtime import require

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "quick_schedules", "synthetic_instant_test.yaml")
H, W = 64, 96


_load = load_script


@pytest.fixture(scope="module")
def setup(synthetic, tiny_checkpoint):
    """The session's 64x96 synthetic set (3 test images), tiny random weights, the config options."""
    return tiny_checkpoint(CONFIG)


@pytest.fixture(scope="module")
def exported(setup):
    """tools/export_model.py fp32 with its parity check on DATASETS.TEST (the 3 test images)."""
    tool = _load("tools/export_model.py", "export_model_tool")
    out = str(setup["work"] / "onnx")
    rc = tool.main(["--config-file", CONFIG, "--format", "onnx", "--output", out, *setup["opts"]])
    assert rc == 0
    return os.path.join(out, "model.onnx")


def test_export_graph_sidecar_and_parity(setup, exported):
    graph = onnx.load(exported)
    onnx.checker.check_model(graph, full_check=True)
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*graph.graph.input,
                                                                                  *graph.graph.output]}
    assert dims == {"image": [1, 4, H, W], "logits": [1, 5, H, W], "labels": [1, H, W]}
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # Prepared for inference: no auxiliary head (not averaged), LoRA merged (no separate A/B products).
    assert not any("aux_head" in n.name for n in graph.graph.node)
    assert not any("lora" in i.name.lower() for i in graph.graph.initializer)

    meta = read_sidecar(exported)
    assert meta["class_names"] == SYNTHETIC_CLASSES and len(meta["colors"]) == 5
    assert meta["input"]["shape"] == [1, 4, H, W] and meta["thermal_16bit_norm"] == "percentile"
    assert meta["dtype"] == "fp32" and meta["source"]["config_file"] == CONFIG
    assert meta["source"]["weights"] == setup["opts"][-1] and len(meta["source"]["weights_sha256"]) == 64
    assert "INFERENCE_DTYPE: float32" in meta["source"]["config"]
    parity = meta["parity"]
    assert parity["passed"] and parity["num_images"] == 3 and parity["miou_against"] == "ground truth"
    assert parity["pixel_agreement"] >= FP32_MIN_AGREEMENT and parity["max_abs_logit_diff"] < 1e-4
    assert parity["source"] == "DATASETS.TEST[0] synthetic_rgbt_test"


def test_parity_fails_when_the_graph_skips_normalisation(setup, tmp_path):
    cfg = get_sartm_cfg(CONFIG, setup["opts"])
    model, module = build_export_module(cfg, H, W)
    samples = load_parity_samples(DatasetCatalog.get("synthetic_rgbt_test"), "percentile", limit=2)
    path = str(tmp_path / "model.onnx")
    model.normalize = lambda x: x  # the injected mismatch, traced only: raw 0..255 values reach the network
    try:
        write_onnx(module, path)
    finally:
        del model.normalize  # the PyTorch reference normalises as usual
    write_sidecar(path, cfg, module.geometry, "fp32", num_classes=5)
    bad = check_parity(cfg, model, path, samples)
    assert not bad.passed and "argmax agreement" in bad.failures[0]
    assert bad.max_abs_logit_diff > 1.0 and bad.pixel_agreement < FP32_MIN_AGREEMENT


def test_export_geometry_is_the_models_padding(setup):
    """INPUT.SIZE_DIVISIBILITY 16: the model pads to its backbone's multiple anyway, and the export
    follows the model (computed from the config, 70 rows would pad to 80, which Hiera cannot run); a
    geometry the backbone cannot run is refused, naming the config key."""
    cfg = get_sartm_cfg(CONFIG, [*setup["opts"], "INPUT.SIZE_DIVISIBILITY", "16"])
    model, module = build_export_module(cfg, 70, 96)
    g = module.geometry
    need = model.backbone.size_divisibility
    assert model.size_divisibility == need > 16
    assert (g.size_divisibility, g.padded_height, g.padded_width) == (need, 96, 96)
    by_config = export_geometry(70, 96, min_size_test=0, max_size_test=1000, size_divisibility=16)
    assert (by_config.padded_height, by_config.padded_width) == (80, 96)
    with pytest.raises(ValueError, match=rf"padded to 80x96 .*needs multiples of {need}.*INPUT.SIZE_DIVISIB"):
        ExportableSARTM(model, by_config)


def test_fp16_export_and_in_graph_resize(setup, tmp_path):
    """fp16 (converted graph, fp32 I/O) meets its bound; MIN_SIZE_TEST's resize is inside the graph."""
    tool = _load("tools/export_model.py", "export_model_tool")
    out = str(tmp_path / "onnx")
    opts = [*setup["opts"], "INPUT.MIN_SIZE_TEST", "32", "INPUT.MAX_SIZE_TEST", "1000"]
    rc = tool.main(["--config-file", CONFIG, "--output", out, "--dtype", "fp16", "--parity-images", "2",
                    *opts])
    assert rc == 0
    path = os.path.join(out, "model_fp16.onnx")
    graph = onnx.load(path)
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.graph.initializer)
    meta = read_sidecar(path)
    assert meta["dtype"] == "fp16" and meta["parity"]["pixel_agreement"] >= FP16_MIN_AGREEMENT
    g = meta["geometry"]
    sizes = (g["resized_height"], g["resized_width"], g["padded_height"], g["padded_width"])
    assert sizes == (32, 48, 32, 64)


def test_export_errors(setup, exported, monkeypatch, capsys):
    tool = _load("tools/export_model.py", "export_model_tool")
    with pytest.raises(ValueError, match="bf16 export is not supported.*unsupported type: tensor"):
        tool.main(["--config-file", CONFIG, "--output", "x", "--dtype", "bf16", *setup["opts"]])
    with pytest.raises(SystemExit, match="both --height and --width"):
        tool.main(["--config-file", CONFIG, "--output", "x", "--height", "64", *setup["opts"]])
    g = export_geometry(480, 640, min_size_test=240, max_size_test=1000, size_divisibility=32)
    assert (g.resized_height, g.resized_width, g.padded_height, g.padded_width) == (240, 320, 256, 320)
    with pytest.raises(ValueError, match="No parity image of the export size 32x32"):
        load_parity_samples(DatasetCatalog.get("synthetic_rgbt_test"), "percentile", 2, size=(32, 32))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'sartm-d2\[deploy\]'"):
        require("onnxruntime")
    with pytest.raises(ImportError, match="onnxruntime"):
        create_session(exported)


@pytest.mark.slow
def test_package_imports_without_onnx():
    """The core package and sartm_d2.export import with onnx/onnxruntime absent (imported on use)."""
    code = ("import sys; sys.modules['onnx'] = sys.modules['onnxruntime'] = None\n"
            "import sartm_d2, sartm_d2.export, sartm_d2.engine\n"
            "try:\n    sartm_d2.export.create_session('x.onnx')\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert "pip install 'sartm-d2[deploy]'" in out.stdout


def test_demo_on_onnx(setup, exported, tmp_path, monkeypatch):
    cli = demo_cli(monkeypatch)
    records = DatasetCatalog.get("synthetic_rgbt_test")[:2]
    images = [r["file_name"] for r in records]  # 4-channel RGBT PNGs
    torch_out = cli.main(["--config-file", CONFIG, "--input", *images, "--output", str(tmp_path / "pt"),
                          "--opts", *setup["opts"]])

    def no_model(*args, **kwargs):
        raise AssertionError("--onnx must not build a PyTorch model")

    monkeypatch.setattr(sys.modules["sartm_d2.engine.predictor"], "build_inference_model", no_model)
    onnx_out = cli.main(["--onnx", exported, "--input", *images, "--output", str(tmp_path / "onnx")])
    assert [os.path.basename(p) for p in onnx_out] == [os.path.basename(p) for p in torch_out]
    for a, b in zip(torch_out, onnx_out):  # same argmax, same panels
        np.testing.assert_array_equal(cv2.imread(a), cv2.imread(b))

    # Streams: a folder of RGBT frames, one PNG panel per frame.
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, path in enumerate(images):
        os.symlink(path, frames / f"{i:03d}.png")
    written = cli.main(["--onnx", exported, "--video-input", str(frames), "--output", str(tmp_path / "v")])
    assert len(written) == 2 and all(cv2.imread(p).shape == cv2.imread(torch_out[0]).shape for p in written)

    small = tmp_path / "small.png"
    cv2.imwrite(str(small), cv2.imread(images[0], cv2.IMREAD_UNCHANGED)[:, :90])
    with pytest.raises(InputSizeError, match=r"small\.png.*64x90 \(HxW\), but .*model\.onnx.*for 64x96"):
        cli.main(["--onnx", exported, "--input", str(small), "--output", str(tmp_path / "err")])
    with pytest.raises(SystemExit):
        cli.parse_args(["--onnx", exported, "--config-file", CONFIG, "--input", images[0], "--output", "x"])


def test_onnx_predictor_gives_eval_onnx_logits(setup, exported, monkeypatch):
    """OnnxRGBTPredictor on an image read as the loader reads it gives tools/eval_onnx.py's logits for it
    (the same mapper path and graph), for "rgbt" and a degraded setting seeded by the image id; a
    setting or size the graph cannot run is one clear error."""
    tool = _load("tools/eval_onnx.py", "eval_onnx_tool")
    predictor = OnnxRGBTPredictor(exported)
    assert predictor.metadata.stuff_classes == SYNTHETIC_CLASSES and predictor.modality == "rgbt"
    records = DatasetCatalog.get("synthetic_rgbt_test")
    seen = capture_eval_logits(monkeypatch)
    for setting in ("rgbt", "thermal-noise-2"):
        seen.clear()
        out_dir = str(setup["work"] / f"pred_{setting}")
        tool.main(["--config-file", CONFIG, "--onnx", exported, "--output", out_dir, *setup["opts"],
                   "TEST.MODALITIES", f"('{setting}',)"])
        assert sorted(seen) == sorted(r["image_id"] for r in records)
        for record in records:
            rgb, thermal = read_rgbt(record, predictor.thermal_16bit_norm)
            out = predictor(rgb, thermal, setting, image_id=record["image_id"])
            assert out["sem_seg"].dtype == torch.float32 and out["sem_seg"].shape == (5, H, W)
            assert torch.equal(out["sem_seg"], seen[record["image_id"]]), (setting, record["image_id"])
            assert out["trust"] is None  # this model's fusion ("paper") estimates no trust
    assert not torch.equal(out["sem_seg"], predictor(rgb, thermal)["sem_seg"])  # the noise reached the graph
    assert {"rgbt", "rgb-fog-3"} <= set(predictor.settings) and "rgb" not in predictor.settings
    with pytest.raises(ValueError, match=r"takes both cameras, so it cannot run the input setting 'rgb'"):
        predictor(rgb, thermal, "rgb")
    with pytest.raises(ValueError, match="The input setting 'rgbt' needs the RGB image, but it is None"):
        predictor(None, thermal)
    with pytest.raises(ValueError, match="Unknown input setting 'rgb-stripe-1'"):  # stripe is thermal-only
        predictor(rgb, thermal, "rgb-stripe-1")
    with pytest.raises(InputSizeError, match=r"64x90 \(HxW\), but .*model\.onnx.*for 64x96"):
        predictor(rgb[:, :90].copy(), thermal[:, :90].copy())


class _Tables(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        if "Semantic segmentation results" in record.getMessage():
            self.messages.append(record.getMessage())


def test_eval_onnx_gives_the_eval_only_table(setup, exported):
    tables = _Tables()
    evaluation_logger = logging.getLogger("sartm_d2.evaluation.sem_seg_evaluation")
    evaluation_logger.addHandler(tables)
    level = evaluation_logger.level
    evaluation_logger.setLevel(logging.INFO)
    try:
        work = setup["work"]
        opts = [*setup["opts"], "OUTPUT_DIR", str(work / "eval_pt")]
        args = default_argument_parser().parse_args(["--config-file", CONFIG, "--eval-only", *opts])
        torch_results = engine_main(args)
        tool = _load("tools/eval_onnx.py", "eval_onnx_tool")
        onnx_results = tool.main(["--config-file", CONFIG, "--onnx", exported,
                                  "--output", str(work / "eval_onnx"), *setup["opts"]])
    finally:
        evaluation_logger.removeHandler(tables)
        evaluation_logger.setLevel(level)
    assert json.dumps(onnx_results) == json.dumps(torch_results)
    assert len(tables.messages) == 2 and tables.messages[0] == tables.messages[1]
    name = "synthetic_rgbt_test"
    a = json.loads((work / "eval_pt" / "inference" / name / "sem_seg_results.json").read_text())
    b = json.loads((work / "eval_onnx" / name / "sem_seg_results.json").read_text())
    assert a == b


def test_eval_onnx_runs_the_degraded_settings_like_eval_only(setup, exported):
    """TEST.MODALITIES with degraded settings: the two-camera graph runs each of them through the same
    loader (which degrades the image) and gives --eval-only's numbers; a camera-missing setting is
    skipped (it needs a one-camera graph)."""
    work = setup["work"]
    settings = ["TEST.MODALITIES", "('rgbt', 'rgb', 'thermal-noise-2', 'rgb-fog-3')"]
    pt_args = ["--config-file", CONFIG, "--eval-only", *setup["opts"], *settings,
               "OUTPUT_DIR", str(work / "set_pt")]
    args = default_argument_parser().parse_args(pt_args)
    torch_results = engine_main(args)
    tool = _load("tools/eval_onnx.py", "eval_onnx_tool")
    onnx_results = tool.main(["--config-file", CONFIG, "--onnx", exported, "--output", str(work / "set_onnx"),
                              *setup["opts"], *settings])
    name = "synthetic_rgbt_test"
    assert sorted(onnx_results) == sorted(f"{name}/{s}" for s in ("rgbt", "thermal-noise-2", "rgb-fog-3"))
    assert f"{name}/rgb" in torch_results
    for key, result in onnx_results.items():
        for metric in ("mIoU_all", "pACC"):
            difference = abs(result["sem_seg"][metric] - torch_results[key]["sem_seg"][metric])
            assert difference <= 0.1, (key, metric, difference)
    table = json.loads((work / "set_onnx" / name / "settings.json").read_text())
    assert "thermal-noise-2" in json.dumps(table) and "rgb-fog-3" in json.dumps(table)
