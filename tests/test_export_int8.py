"""INT8 and one-camera graphs: tools/export_model.py --dtype int8 / --modality, their gates, and the
tools downstream (demo, eval_onnx, benchmark) on the new files.

One tiny random model with the trust-estimating "reliability" fusion and the in-graph thermal stretch, on
the session's 64x96 synthetic set (4 training images for calibration, 3 test images for parity). The
exports are the slow part (onnxruntime's quantizer): the INT8 and one-camera graphs are made once per
module and shared; only the broken-calibration test quantizes again, on one image. The tests that export
are marked slow.
"""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import torch
from conftest import demo_cli, load_script

import sartm_d2  # noqa: F401  (compat patches before detectron2)

# isort: split
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser

from sartm_d2 import get_sartm_cfg
from sartm_d2.data import RGBTDatasetMapper, read_label, read_rgbt
from sartm_d2.engine import build_inference_model
from sartm_d2.engine import main as engine_main
from sartm_d2.export import (
    INT8_MAX_MIOU_DIFF,
    INT8_MIN_AGREEMENT,
    OnnxRGBTPredictor,
    OnnxSegmenter,
    load_calibration_images,
    read_sidecar,
)
from sartm_d2.export.int8_graph import layer_name, quantizable_layers
from sartm_d2.export.sensitivity import search_fp32_layers

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "quick_schedules", "synthetic_instant_test.yaml")
H, W = 64, 96
ROBUST = ["MODEL.SARTM.FUSION", "reliability", "INPUT.THERMAL_NORM", "stretch"]


_load = load_script


@pytest.fixture(scope="module")
def setup(synthetic, tiny_checkpoint):
    """The session's 64x96 synthetic set (4 train, 3 test images), a tiny random robust model."""
    return tiny_checkpoint(CONFIG, *ROBUST)


def _export(setup, out, *args) -> int:
    tool = _load("tools/export_model.py", "export_model_tool")
    return tool.main(["--config-file", CONFIG, "--output", str(out), *args, *setup["opts"]])


@pytest.fixture(scope="module")
def int8(setup):
    """tools/export_model.py --dtype int8 (static QDQ, min-max on the 4 training images)."""
    out = setup["work"] / "onnx_int8"
    rc = _export(setup, out, "--dtype", "int8", "--calibration-images", "4")
    return rc, str(out / "model_int8.onnx")


@pytest.mark.slow
def test_int8_export_is_qdq_with_its_settings_in_the_sidecar(setup, int8):
    rc, path = int8
    assert rc == 0
    graph = onnx.load(path)
    onnx.checker.check_model(graph)
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    producers = {o: n.op_type for n in graph.graph.node for o in n.output}
    initializers = {i.name for i in graph.graph.initializer}
    weights = {n.output[0] for n in graph.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in initializers}
    products = [n for n in graph.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    # A weight is an initializer behind a DequantizeLinear, on either side of the product (the mask
    # decoder's token queries are constants after folding, so they are a MatMul's first input there).
    with_weight = [n for n in products if weights & set(n.input[:2])]
    attention = [n for n in products if n.op_type == "MatMul" and not weights & set(n.input[:2])]
    # Every product with a weight reads quantized activations; products of two activations stay fp32.
    assert with_weight
    assert all(producers.get(i) == "DequantizeLinear" for n in with_weight for i in n.input[:2])
    assert attention and not any(producers.get(i) == "DequantizeLinear" for n in attention for i in n.input)
    int8_weights = [i for i in graph.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert sum(onnx.numpy_helper.to_array(i).size for i in int8_weights) > 1000
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.graph.output}
    assert dims == {"logits": [1, 5, H, W], "labels": [1, H, W], "trust": [1, 2]}

    meta = read_sidecar(path)
    q = meta["quantization"]
    assert meta["dtype"] == "int8" and meta["modality"] == "rgbt" and meta["thermal_norm"] == "stretch"
    assert q["mode"] == "static" and q["format"] == "QDQ" and q["calibration_method"] == "minmax"
    assert q["products_of_activations"] == f"fp32 ({len(attention)} MatMul nodes: attention)"
    train = [str(r.get("image_id", r["file_name"])) for r in DatasetCatalog.get("synthetic_rgbt_train")]
    assert q["calibration_images"] == train
    assert q["calibration_source"] == "DATASETS.TRAIN[0] synthetic_rgbt_train"
    assert q["reduce_range"] and q["layers_quantized"] == q["layers_total"] > 50 and q["fp32_layers"] == []
    assert q["int8_mb"] < q["fp32_mb"] and q["search"][0]["passed"]
    assert meta["parity"]["passed"] and meta["parity"]["dtype"] == "int8"


def _miou_all(preds, gts, k: int, ignore: int = 255) -> float:
    """mIoU over all k classes, a class absent from prediction and label counting 0 (the papers')."""
    inter, union = np.zeros(k), np.zeros(k)
    for p, g in zip(preds, gts):
        valid = g != ignore
        for c in range(k):
            inter[c] += np.sum((p == c) & (g == c) & valid)
            union[c] += np.sum(((p == c) | (g == c)) & valid)
    return 100 * float(np.sum(np.divide(inter, union, out=np.zeros(k), where=union > 0)) / k)


@pytest.mark.slow
def test_int8_parity_report_is_honest(setup, int8):
    """The sidecar's numbers, recomputed here without sartm_d2.export: PyTorch on the test mapper,
    onnxruntime on the raw images, agreement, logit and trust differences, mIoU_all both ways."""
    _, path = int8
    parity = read_sidecar(path)["parity"]
    cfg = get_sartm_cfg(CONFIG, setup["opts"])
    model = build_inference_model(cfg)
    mapper = RGBTDatasetMapper(cfg, is_train=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    records = DatasetCatalog.get("synthetic_rgbt_test")
    agree = max_diff = trust_diff = 0.0
    ref_labels, onnx_labels, gts = [], [], []
    for record in records:
        with torch.no_grad():
            out = model([mapper(record)])[0]
        rgb, thermal = read_rgbt(record, "percentile")
        image = np.concatenate([rgb, thermal[..., None]], axis=2).transpose(2, 0, 1)[None].astype(np.float32)
        logits, labels, trust = session.run(["logits", "labels", "trust"], {"image": image})
        ref = out["sem_seg"].numpy()
        max_diff = max(max_diff, float(np.abs(logits[0] - ref).max()))
        trust_diff = max(trust_diff, float(np.abs(trust[0] - out["trust"].numpy()).max()))
        agree += float((labels[0] == ref.argmax(0)).sum())
        ref_labels.append(ref.argmax(0))
        onnx_labels.append(labels[0])
        gts.append(read_label(record["sem_seg_file_name"]))
    assert parity["num_images"] == len(records) and parity["miou_against"] == "ground truth"
    assert parity["pixel_agreement"] == pytest.approx(agree / (len(records) * H * W), abs=1e-12)
    assert parity["max_abs_logit_diff"] == pytest.approx(max_diff, rel=1e-4)
    assert parity["max_abs_trust_diff"] == pytest.approx(trust_diff, rel=1e-4, abs=1e-7)
    assert parity["miou_torch"]["mIoU_all"] == pytest.approx(_miou_all(ref_labels, gts, 5), abs=1e-9)
    assert parity["miou_onnx"]["mIoU_all"] == pytest.approx(_miou_all(onnx_labels, gts, 5), abs=1e-9)
    assert parity["pixel_agreement"] >= INT8_MIN_AGREEMENT and parity["max_miou_diff"] == INT8_MAX_MIOU_DIFF
    assert 0 < max_diff < 1  # quantized (not bit-exact), yet close


@pytest.mark.slow
def test_int8_gate_fails_on_a_broken_calibration_and_names_the_sensitive_layers(setup, tmp_path, monkeypatch,
                                                                                capsys):
    """Calibrated ranges forced 1000x too small clip every activation: the export exits 1 (no layer may stay
    in fp32: --max-fp32-layers 0) and names the most sensitive layers, each measured alone (on the one
    parity image)."""
    calibrate = pytest.importorskip("onnxruntime.quantization.calibrate")
    compute = calibrate.MinMaxCalibrater.compute_data

    def tiny_ranges(self):
        data = compute(self)
        for value in data.values():
            value.lowest, value.highest = value.lowest * 1e-3, value.highest * 1e-3
        return data

    monkeypatch.setattr(calibrate.MinMaxCalibrater, "compute_data", tiny_ranges)
    rc = _export(setup, tmp_path, "--dtype", "int8", "--calibration-images", "1", "--parity-images", "1",
                 "--max-fp32-layers", "0")
    assert rc == 1
    printed = capsys.readouterr().out
    meta = read_sidecar(str(tmp_path / "model_int8.onnx"))
    parity, q = meta["parity"], meta["quantization"]
    assert not parity["passed"] and parity["pixel_agreement"] < INT8_MIN_AGREEMENT
    ranked = q["sensitivity"]
    assert len(ranked) == q["layers_total"] and [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1))
    assert [r["agreement"] for r in ranked] == sorted(r["agreement"] for r in ranked)
    assert ranked[0]["agreement"] < 1.0  # with these ranges one layer alone already moves pixels
    assert q["fp32_layers"] == [] and q["layers_quantized"] == len(ranked) and q["max_fp32_layers"] == 0
    assert q["sensitivity_images"] == 1 and parity["num_images"] == 1
    named = parity["failures"][-1]
    assert "most sensitive layers" in named and all(r["layer"] in named for r in ranked[:3])
    assert ranked[0]["layer"] in printed and "FAILED" in printed
    graph = onnx.load(str(tmp_path / "model_int8.onnx"))
    graph_layers = quantizable_layers(graph, ("MatMul", "Gemm", "Conv"))
    assert ranked[0]["layer"] in graph_layers  # a layer of the graph


@pytest.mark.parametrize("modality", ["rgbt", "rgb", "thermal"])
def test_calibration_images_are_the_graphs_input_of_its_camera(setup, modality):
    """Calibration reads records spread over the set (2 of 4: the first and the last) through the test
    mapper, as the raw input of the graph of ``modality``: its cameras' channels, 0..255."""
    cfg = get_sartm_cfg(CONFIG, setup["opts"])
    records = DatasetCatalog.get("synthetic_rgbt_train")
    images = load_calibration_images(cfg, records, 2, (H, W), modality)
    assert [c.name for c in images] == [str(records[i].get("image_id", records[i]["file_name"]))
                                        for i in (0, 3)]
    for c, i in zip(images, (0, 3)):
        rgb, thermal = read_rgbt(records[i], cfg.INPUT.THERMAL_16BIT_NORM)
        planes = {"rgbt": [*rgb.transpose(2, 0, 1), thermal], "rgb": [*rgb.transpose(2, 0, 1)],
                  "thermal": [thermal]}[modality]
        assert c.image.dtype == np.float32 and c.image.flags.c_contiguous
        np.testing.assert_allclose(c.image, np.stack(planes).astype(np.float32), atol=1e-4)


class _Report:
    def __init__(self, passed: bool):
        self.passed = passed


def test_search_keeps_the_fewest_most_sensitive_layers_in_fp32():
    """The search on a stand-in evaluator: layers a, b, c move 20, 10 and 5 of 200 pixels (the gate allows
    2), so the estimate asks for 3 layers in fp32; the real check (standing for int8 kernels that err
    more than the simulation) needs d too: the next real try doubles to 6. With a cap of 2 it fails at 2."""
    rng = np.random.default_rng(0)
    reference = [rng.normal(size=(3, 10, 10)).astype(np.float32) for _ in range(2)]
    damage = {"a": 20, "b": 10, "c": 5}
    order = ["a", "b", "c", "d", "e", "f", "g", "h"]

    def evaluator(enabled, count=None):
        out = [r.copy() for r in reference]
        start = 0
        for layer, pixels in damage.items():
            if layer in enabled:
                flat = out[0].reshape(3, -1)
                for p in range(start, start + pixels):
                    flat[:, p] = 0
                    flat[(reference[0].reshape(3, -1)[:, p].argmax() + 1) % 3, p] = 10
            start += pixels
        return out[:count]

    builds = []

    def build(excluded):
        builds.append(len(excluded))
        return _Report({"a", "b", "c", "d"} <= set(excluded))

    gts = [r.argmax(0) for r in reference]
    search = []
    classes = ["x", "y", "z"]
    kept, report = search_fp32_layers(evaluator, order, reference, gts, classes, 255, 8, build, search)
    assert report.passed and kept == order[:6] and builds == [3, 6]
    estimated = [s["fp32_layers"] for s in search if s["real"] is False]
    assert estimated[:3] == [1, 2, 4]  # doubling, then bisection
    builds.clear()
    kept, report = search_fp32_layers(evaluator, order, reference, gts, classes, 255, 2, build, [])
    assert not report.passed and kept == order[:2] and builds == [2]


def test_layer_names():
    assert layer_name("/backbone/trunk/blocks.3/attn/MatMul_1") == "/backbone/trunk/blocks.3/attn"
    assert layer_name("/backbone/trunk/blocks.0/mlp/layers.0/MatMul/MatMulAddFusion") == (
        "/backbone/trunk/blocks.0/mlp/layers.0")
    assert layer_name("Conv_7") == "Conv_7"


def _patch_embed_batch(path: str) -> int:
    """Images the backbone's patch embedding convolves (run with its input as an extra graph output)."""
    graph = onnx.load(path)
    conv = next(n for n in graph.graph.node if n.op_type == "Conv" and "patch_embed" in n.name)
    graph.graph.output.append(onnx.helper.make_tensor_value_info(conv.input[0], onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    shape = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    return session.run([conv.input[0]], {"image": np.zeros(shape, np.float32)})[0].shape[0]


@pytest.fixture(scope="module")
def one_camera(setup):
    """fp32 one-camera graphs for RGB and thermal."""
    paths = {}
    for modality in ("rgb", "thermal"):
        out = setup["work"] / f"onnx_{modality}"
        assert _export(setup, out, "--modality", modality, "--parity-images", "2") == 0
        paths[modality] = str(out / f"model_{modality}.onnx")
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["rgb", "thermal"])
def test_one_camera_graph_matches_pytorch_single_stream(setup, int8, one_camera, modality):
    path = one_camera[modality]
    channels = 3 if modality == "rgb" else 1
    graph = onnx.load(path)
    assert [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim] == [1, channels, H, W]
    meta = read_sidecar(path)
    assert meta["modality"] == modality
    assert meta["input"]["channels"] == (["R", "G", "B"] if channels == 3 else ["T"])
    assert meta["parity"]["passed"] and meta["parity"]["modality"] == modality
    assert meta["parity"]["max_abs_logit_diff"] < 1e-4 and meta["parity"]["max_abs_trust_diff"] < 1e-4
    # Single-stream cost: the backbone convolves one image, the two-stream graph (the INT8 one) two.
    assert _patch_embed_batch(path) == 1 and _patch_embed_batch(int8[1]) == 2

    cfg = get_sartm_cfg(CONFIG, setup["opts"])
    model = build_inference_model(cfg)
    mapper = RGBTDatasetMapper(cfg, is_train=False, setting=modality)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for record in DatasetCatalog.get("synthetic_rgbt_test"):
        inputs = mapper(record)
        assert inputs["modalities"] == modality
        with torch.no_grad():
            out = model([inputs])[0]
        rgb, thermal = read_rgbt(record, "percentile")
        image = rgb.transpose(2, 0, 1) if modality == "rgb" else thermal[None]
        logits, trust = session.run(["logits", "trust"], {"image": image[None].astype(np.float32)})
        np.testing.assert_allclose(logits[0], out["sem_seg"].numpy(), atol=1e-4)
        missing = 1 if modality == "rgb" else 0
        assert trust[0, missing] == 0.0 and out["trust"][missing] == 0.0
        np.testing.assert_allclose(trust[0], out["trust"].numpy(), atol=1e-5)


@pytest.mark.slow
def test_one_camera_int8(setup, tmp_path):
    """One-camera INT8 (dynamic: the quick one; static shares every step with the two-stream graph)."""
    rc = _export(setup, tmp_path / "int8", "--modality", "rgb", "--dtype", "int8", "--quantization",
                 "dynamic", "--parity-images", "2")
    assert rc == 0
    path = str(tmp_path / "int8" / "model_rgb_int8.onnx")
    meta = read_sidecar(path)
    assert meta["modality"] == "rgb" and meta["input"]["shape"] == [1, 3, H, W]
    assert meta["quantization"]["mode"] == "dynamic" and meta["quantization"]["calibration_images"] == []
    assert meta["parity"]["passed"] and meta["parity"]["modality"] == "rgb"
    assert "MatMulInteger" in {n.op_type for n in onnx.load(path).graph.node}


@pytest.mark.slow
def test_demo_takes_int8_and_one_camera_graphs(setup, int8, one_camera, tmp_path, monkeypatch):
    cli = demo_cli(monkeypatch)
    records = DatasetCatalog.get("synthetic_rgbt_test")[:2]
    images = [r["file_name"] for r in records]  # 4-channel RGBT PNGs
    written = cli.main(["--onnx", int8[1], "--input", *images, "--output", str(tmp_path / "int8"),
                        "--threads", "1"])
    assert len(written) == 2 and all(cv2.imread(p) is not None for p in written)
    predictor = cli.build_predictor(cli.parse_args(["--onnx", int8[1], "--input", "x", "--output", "y",
                                                    "--threads", "1"]), None)
    assert predictor.segmenter.session.get_session_options().intra_op_num_threads == 1

    # Thermal images alone through the thermal graph; the same RGBT PNGs through the RGB graph.
    thermal_dir = tmp_path / "ir"
    thermal_dir.mkdir()
    for r in records:
        thermal_channel = cv2.imread(r["file_name"], cv2.IMREAD_UNCHANGED)[:, :, 3]
        cv2.imwrite(str(thermal_dir / os.path.basename(r["file_name"])), thermal_channel)
    out = cli.main(["--onnx", one_camera["thermal"], "--modality", "thermal", "--input", str(thermal_dir),
                    "--output", str(tmp_path / "t")])
    assert len(out) == 2
    segmenter = OnnxSegmenter(one_camera["rgb"])
    rgb, thermal = read_rgbt(records[0], segmenter.thermal_16bit_norm)
    expected = segmenter(rgb, None)
    rgb_graph = OnnxRGBTPredictor(one_camera["rgb"])
    out = rgb_graph(rgb, thermal)  # by default the graph's setting: its camera, read from the pair
    np.testing.assert_array_equal(out["sem_seg"].numpy(), expected)
    np.testing.assert_array_equal(rgb_graph(rgb, None, "rgb")["sem_seg"].numpy(), expected)
    assert rgb_graph.settings == ("rgb",) and out["trust"].shape == (2,) and out["trust"][1] == 0.0
    with pytest.raises(ValueError, match="one-camera graph for rgb images, so it cannot run the input"):
        rgb_graph(rgb, thermal, "rgbt")
    with pytest.raises(ValueError, match="one-camera graph for rgb images, but no rgb image"):
        segmenter(None, thermal)
    # A stream (frame folder of RGBT PNGs) through the RGB graph.
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, path in enumerate(images):
        os.symlink(path, frames / f"{i:03d}.png")
    written = cli.main(["--onnx", one_camera["rgb"], "--video-input", str(frames),
                        "--output", str(tmp_path / "v")])
    assert len(written) == 2


@pytest.mark.slow
def test_eval_onnx_on_int8_and_one_camera_graphs(setup, int8, one_camera):
    """eval_onnx.py takes the new files: the INT8 graph within the gate's 0.5 point of --eval-only, the RGB
    graph exactly --eval-only with TEST.MODALITIES ("rgb",); --threads sets onnxruntime's threads."""
    tool = _load("tools/eval_onnx.py", "eval_onnx_tool")
    parser = tool.get_parser()
    assert parser.parse_args(["--config-file", CONFIG, "--onnx", "x", "--threads", "1"]).threads == 1
    work = setup["work"]
    name = "synthetic_rgbt_test"

    def eval_only(folder, *extra):
        args = default_argument_parser().parse_args(
            ["--config-file", CONFIG, "--eval-only", *setup["opts"], "OUTPUT_DIR", str(work / folder),
             *extra])
        return engine_main(args)

    torch_results = eval_only("eval_pt")  # one dataset: detectron2 returns its results unkeyed
    int8_results = tool.main(["--config-file", CONFIG, "--onnx", int8[1], "--output", str(work / "eval_int8"),
                              "--threads", "1", *setup["opts"]])
    a, b = torch_results["sem_seg"]["mIoU_all"], int8_results["sem_seg"]["mIoU_all"]
    assert abs(a - b) <= INT8_MAX_MIOU_DIFF

    rgb_results = eval_only("eval_pt_rgb", "TEST.MODALITIES", "('rgb',)")[f"{name}/rgb"]
    onnx_rgb = tool.main(["--config-file", CONFIG, "--onnx", one_camera["rgb"],
                          "--output", str(work / "eval_rgb"), *setup["opts"]])[f"{name}/rgb"]  # its setting
    assert json.dumps(onnx_rgb["sem_seg"]) == json.dumps(rgb_results["sem_seg"])
    want_file = work / "eval_pt_rgb" / "inference" / name / "rgb" / "sem_seg_results.json"
    want = json.loads(want_file.read_text())
    got = json.loads((work / "eval_rgb" / name / "rgb" / "sem_seg_results.json").read_text())
    assert got == want


@pytest.mark.slow
def test_benchmark_int8_rows_threads_and_cpu_flags(setup, tmp_path):
    """The benchmark's "onnx" rows: a dynamic INT8 one-camera graph beside the two-stream fp32 graph, with
    onnxruntime's threads, and their ratio to the fp32 graph."""
    from sartm_d2.benchmark import measure
    from sartm_d2.benchmark.report import derive, describe_cpu_flags, format_table

    flags = measure.cpu_flags()
    assert set(flags) == set(measure.CPU_FLAGS) and all(isinstance(v, bool) for v in flags.values())
    assert "avx512_vnni" in describe_cpu_flags(flags)
    cfg = get_sartm_cfg(CONFIG, setup["opts"])
    model = measure.build_benchmark_model(cfg)
    rows = []
    for dtype, modalities in (("fp32", "rgbt"), ("int8-dynamic", "thermal")):
        res = measure.measure_onnx_infer(model, cfg, hw=(H, W), iters=1, warmup=1, workdir=str(tmp_path),
                                         dtype=dtype, threads=1, modalities=modalities)
        assert res["onnxruntime_threads"] == 1 and res["output_shape"] == [1, 5, H, W]
        rows.append({"what": "onnx", "size": "custom", "resolution": f"{H}x{W}", "batch": 1, "dtype": dtype,
                     "mode": "onnxruntime", "modalities": modalities, **res})
    assert rows[1]["quantization"]["mode"] == "dynamic" and rows[1]["onnx_mb"] < rows[1]["fp32_onnx_mb"]
    machine = {"card": "cpu", "cpu_model": "test", "cpu_count": 2, "torch": torch.__version__,
               "platform": "x", "cpu_flags": flags}
    schedule = {"epochs": {"value": 1}, "mfnet_train_pairs": {"value": 1}}
    derive(rows, machine, reference={"paper_schedule": schedule})
    assert rows[1]["latency_vs_onnx_fp32"] == pytest.approx(rows[1]["median_s"] / rows[0]["median_s"])
    assert "latency_vs_onnx_fp32" not in rows[0]
    assert "CPU flags: avx2" in format_table(rows, machine)


@pytest.mark.slow
def test_benchmark_backends_time_graphs_and_pytorch_together(setup, tmp_path):
    """The benchmark's "backends": the one-camera graph and PyTorch eager fp32 and bf16 in the same
    rounds, with the threads set for both runtimes (and restored), their ratios from the timings, and
    each one's agreement with PyTorch fp32 with the same camera (fp32 against itself: exact)."""
    from sartm_d2.benchmark import measure

    cfg = get_sartm_cfg(CONFIG, setup["opts"])
    model = measure.build_benchmark_model(cfg)
    threads = torch.get_num_threads()
    backends = ["onnxruntime_fp32_rgb", "pytorch_fp32", "pytorch_bf16"]
    res = measure.measure_backends(model, cfg, hw=(H, W), iters=2, warmup=1, workdir=str(tmp_path),
                                   backends=backends, threads=threads + 1, profile=True)
    assert torch.get_num_threads() == threads
    assert res["torch_threads"] == res["onnxruntime_threads"] == threads + 1
    assert list(res["timings"]) == backends and all(len(t["times_s"]) == 2 for t in res["timings"].values())
    t = res["timings"]
    assert res["ratios"]["over_pytorch_fp32"] == {
        n: pytest.approx(t[n]["median_s"] / t["pytorch_fp32"]["median_s"]) for n in backends[::2]}
    assert res["ratios"]["cpu_over_pytorch_bf16"]["pytorch_fp32"] == pytest.approx(
        t["pytorch_fp32"]["median_cpu_s"] / t["pytorch_bf16"]["median_cpu_s"])
    assert "over_onnxruntime_fp32" not in res["ratios"]  # not timed in this run
    parity = res["parity_random_input"]
    assert parity["pytorch_fp32"] == {"max_abs_logit_diff_vs_pytorch_fp32": 0.0,
                                      "argmax_agreement_vs_pytorch_fp32": 1.0}
    assert parity["onnxruntime_fp32_rgb"]["max_abs_logit_diff_vs_pytorch_fp32"] < 1e-4
    assert 0.9 < parity["pytorch_bf16"]["argmax_agreement_vs_pytorch_fp32"] <= 1.0
    assert set(res["onnx_mb"]) == set(res["onnxruntime_profile"]) == {"onnxruntime_fp32_rgb"}
    profile = res["onnxruntime_profile"]["onnxruntime_fp32_rgb"]
    assert profile["total_kernel_ms"] == pytest.approx(sum(profile["ms_per_op_type"].values()))
    assert "Conv" in profile["ms_per_op_type"]
    with pytest.raises(ValueError, match="backends must be some of"):
        measure.measure_backends(model, cfg, hw=(H, W), iters=1, warmup=1, workdir=str(tmp_path),
                                 backends=["tensorrt"])
