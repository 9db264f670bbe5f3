"""tools/benchmark.py and sartm_d2.benchmark: a smoke run in its smallest mode (schema and numbers, no
timing thresholds), the measuring helpers (error capture, FLOP and op counting, the one timing loop),
the robust-cost comparison, the reporting (derived figures, targets, the official release, the
comparison tables) and its data files under benchmarks/."""

import importlib.util
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from sartm_d2.benchmark import measure
from sartm_d2.benchmark import report as reporting
from sartm_d2.benchmark.report import BenchmarkDataError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "benchmark.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("sartm_benchmark_tool", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()


def _positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):  # its tests are marked slow: a subprocess that trains, exports and loads data
    """One run of the script as a user runs it: tiny custom Hiera, 64x96, 1 iteration, CPU, everything."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    cmd = [
        sys.executable, str(SCRIPT), "--sizes", "custom", "--resolutions", "64x96", "--batch-sizes", "2",
        "--infer-batch-sizes", "1", "--dtypes", "fp32", "--modes", "eager", "cudagraphs", "--device", "cpu",
        "--iters", "1", "--warmup", "1", "--workers", "1", "--data-batches", "1", "--json", str(out),
        "--opts", "SOLVER.IMS_PER_BATCH", "2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def _one(report, **match):
    rows = [m for m in report["measurements"] if all(m.get(k) == v for k, v in match.items())]
    seen = [(m["what"], m.get("mode"), m.get("workers")) for m in report["measurements"]]
    assert len(rows) == 1, (match, seen)
    return rows[0]


@pytest.mark.slow
def test_smoke_schema_and_machine(smoke):
    report, _ = smoke
    assert report["schema"] == bench.SCHEMA
    machine = report["machine"]
    assert machine["card"] == "cpu"
    assert machine["torch"] == torch.__version__
    assert machine["cpu_count"] >= 1 and machine["platform"] and machine["cpu_model"]
    assert report["settings"]["resolutions"] == ["64x96"] and report["settings"]["sizes"] == ["custom"]
    assert report["targets"] == []  # the GPU targets are not judged on a CPU run
    assert "FlopCounterMode" in report["notes"]["flops"]
    assert report["notes"]["official_reference"] is None  # only with --official-compare


@pytest.mark.slow
def test_smoke_train_infer_flops(smoke):
    report, _ = smoke
    flops = _one(report, what="flops")
    train = _one(report, what="train", mode="eager")
    infer = _one(report, what="infer", mode="eager")
    for row in (flops, train, infer):
        assert "error" not in row, row
        assert row["size"] == "custom" and row["resolution"] == row["padded_resolution"] == "64x96"
    assert _positive_finite(flops["gflops_per_pair"])
    assert set(flops["gflops_by_module"]) >= {"backbone", "fusion", "sem_seg_head"}
    # The backbone runs both modalities: the bulk of the forward FLOPs.
    assert flops["gflops_by_module"]["backbone"] > flops["gflops_by_module"]["sem_seg_head"]

    for row, batch in ((train, 2), (infer, 1)):
        assert row["batch"] == batch and row["dtype"] == "fp32" and row["iters"] == 1
        assert len(row["times_s"]) == 1 and row["median_s"] == row["times_s"][0]
        for key in ("median_s", "first_call_s", "pairs_per_s", "peak_mem_gib", "achieved_tflops"):
            assert _positive_finite(row[key]), (key, row[key])
        assert row["pairs_per_s"] == pytest.approx(batch / row["median_s"])
        assert row["achieved_tflops"] == pytest.approx(
            (3 if row["what"] == "train" else 1) * flops["gflops_per_pair"] * row["pairs_per_s"] / 1e3
        )
        assert "ru_maxrss" in row["peak_mem_kind"]
    assert set(train["losses"]) == {"loss_sem_seg", "loss_aux", "loss_distill"}  # the full model ran
    assert all(math.isfinite(v) for v in train["losses"].values())
    assert train["optimizer"] == "AdamW (foreach)"
    assert train["mfnet_500_epochs_min"] == pytest.approx(500 * 784 / train["pairs_per_s"] / 60)
    assert infer["output_shape"] == [9, 64, 96] and infer["output_finite"] and infer["prepared_for_inference"]
    assert isinstance(infer["aten_ops_per_forward"], int) and infer["aten_ops_per_forward"] > 100
    # CUDA graphs cannot run on the CPU: recorded as skipped, not as an error, and no training row.
    assert "CUDA" in _one(report, what="infer", mode="cudagraphs")["skipped"]
    assert not [m for m in report["measurements"] if m["what"] == "train" and m.get("mode") == "cudagraphs"]


@pytest.mark.slow
def test_smoke_data_pipeline(smoke):
    report, _ = smoke
    train = _one(report, what="train", mode="eager")
    rows = {w: _one(report, what="data", workers=w) for w in (0, 1)}
    for workers, row in rows.items():
        assert "error" not in row, row
        assert row["dataset"] == "synthetic_rgbt_train" and row["batch"] == 2 and row["batches"] == 3
        assert _positive_finite(row["pairs_per_s"])
        assert row["pairs_per_s"] == pytest.approx(row["batches"] * row["batch"] / row["elapsed_s"])
        assert row["pairs_per_s_per_worker"] == pytest.approx(row["pairs_per_s"] / max(workers, 1))
        assert row["projected_16_workers_pairs_per_s"] == pytest.approx(16 * row["pairs_per_s_per_worker"])
        assert row["vs_train"]["ratio_16_workers"] == pytest.approx(
            row["projected_16_workers_pairs_per_s"] / train["pairs_per_s"]
        )
        # The real mapper with the MFNet config crops the 64x96 PNGs (upscaled first) to at most 480x640.
        c, h, w = row["output_image_shape"]
        assert c == 4 and h <= 480 and w <= 640


@pytest.mark.slow
def test_smoke_table_is_printed_last(smoke):
    report, stdout = smoke
    lines = stdout.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| what"))
    # The title, then the CPU's flags (the ratios depend on them), then the table.
    assert lines[header - 2].startswith("SARTM benchmark on cpu")
    assert lines[header - 1].startswith("CPU flags: avx2 ")
    body = lines[header + 2 :]
    assert len(body) == len(report["measurements"]) and body[-1] == lines[-1]
    assert all(line.startswith("|") for line in body)


def test_guarded_records_runtime_errors_but_not_others():
    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    res = bench._guarded({"what": "train", "size": "l"}, oom)
    assert res["what"] == "train" and res["size"] == "l"
    assert res["error"].startswith("OutOfMemoryError: CUDA out of memory")

    def config_error():
        raise ValueError("MODEL.SAM2.SIZE wrong")

    with pytest.raises(ValueError, match="MODEL.SAM2.SIZE"):
        bench._guarded({"what": "train"}, config_error)


def test_count_flops_matches_the_convolution_formula():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 8, kernel_size=3, padding=1)

        def forward(self, batched_inputs):
            return self.conv(torch.stack([x["image"] for x in batched_inputs]))

    cfg = SimpleNamespace(MODEL=SimpleNamespace(SEM_SEG_HEAD=SimpleNamespace(NUM_CLASSES=3)))
    res = measure.count_flops(Toy(), cfg, hw=(32, 48), device=torch.device("cpu"))
    expected = 2 * 8 * 4 * 3 * 3 * 32 * 48  # multiply-add = 2 FLOPs
    assert res["gflops_per_pair"] * 1e9 == pytest.approx(expected)
    assert res["gflops_by_module"] == {"conv": pytest.approx(expected / 1e9)}


def test_helpers():
    assert bench.parse_resolution("720x1280") == (720, 1280)
    assert measure.padded((720, 1280), 32) == (736, 1280) and measure.padded((480, 640), 32) == (480, 640)
    assert measure.padded((70, 96), 16) == (80, 96)
    with pytest.raises(Exception, match="HEIGHTxWIDTH"):
        bench.parse_resolution("720by1280")
    assert reporting.bf16_peak_tflops("NVIDIA H200") == 989.0
    assert reporting.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert reporting.bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert reporting.bf16_peak_tflops("NVIDIA A10G") is None
    inputs = measure.make_inputs(2, (40, 70), 5, torch.device("cpu"), labels=True)
    assert [tuple(x["image"].shape) for x in inputs] == [(4, 40, 70)] * 2
    labels = torch.stack([x["sem_seg"] for x in inputs])
    valid = labels[labels != 255]
    assert labels.dtype == torch.int64 and valid.min() >= 0 and valid.max() < 5 and len(valid.unique()) > 1


def test_op_counter_counts_computing_ops_not_views():
    x, w = torch.randn(4, 6), torch.randn(5, 6)
    with measure.OpCounter() as counter:
        y = torch.relu(x @ w.t() + 1)  # t: a view; mm, add, relu: three kernels
        y.view(20).transpose(0, 0)  # views only
    assert counter.count == 3
    linear = nn.Linear(6, 5)
    with measure.OpCounter() as counter:
        linear(x).contiguous()  # addmm (the weight's t is a view; contiguous is a no-op)
    assert counter.count == 1


def test_official_compare_preset_and_reference_notes():
    args = bench.resolve_args(bench.get_parser().parse_args(["--official-compare"]))
    assert args.config_file.endswith("pst900.yaml") and args.sizes == ["b+"]
    assert args.resolutions == [(1280, 1280)] and args.batch_sizes == [1, 2] and args.dtypes == ["fp32"]
    assert args.isolate and args.device == "cpu"
    common = {"size": "b+", "resolution": "1280x1280", "dtype": "fp32"}
    rows = [
        {"what": "infer", "batch": 1, "median_s": 12.0, **common},
        {"what": "train", "batch": 1, "median_s": 47.0, "peak_mem_gib": 8.35, **common},
        {"what": "train", "batch": 2, "error": "x", **common},
    ]
    reporting.compare_official(rows)
    assert rows[0]["vs_official"]["ratio"] == pytest.approx(0.5)
    assert rows[1]["vs_official"]["ratio"] == pytest.approx(0.5)
    assert rows[1]["vs_official"]["peak_ratio"] == pytest.approx(0.5)
    assert rows[2]["vs_official"]["ours_fits"] is False


def test_time_budget_skips_and_still_writes_json(tmp_path, capsys):
    # In-process, so without "data" (it would re-point the global synthetic dataset registration).
    out = tmp_path / "b.json"
    report = bench.main([
        "--sizes", "custom", "--resolutions", "64x96", "--device", "cpu",
        "--what", "train", "infer", "--time-budget-s", "1e-9", "--json", str(out),
    ])  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["measurements"] == report["measurements"] and saved["finished"]
    whats = [m["what"] for m in saved["measurements"]]
    # Default batches (8 16 / 1 16) x dtypes (fp32 bf16) x modes (eager compiled): 8 of each, none run.
    assert whats.count("train") == 8 and whats.count("infer") == 8 and len(whats) == 16
    assert all("time budget" in m["skipped"] for m in saved["measurements"])
    # Order within a size: eager training, eager inference, compiled inference, compiled training last.
    order = [(m["what"], m["mode"]) for m in saved["measurements"]]
    assert order == [("train", "eager")] * 4 + [("infer", "eager")] * 4 + [("infer", "compiled")] * 4 + [
        ("train", "compiled")
    ] * 4
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("| train") and "compiled" in last and "time budget" in last


def test_derive_and_the_gpu_targets():
    common = {"size": "b+", "resolution": "480x640"}
    rows = [
        {"what": "flops", "gflops_per_pair": 369.0, **common},
        {"what": "train", "batch": 8, "dtype": "bf16", "mode": "eager", "pairs_per_s": 300.0,
         "peak_mem_gib": 11.0, **common},
        {"what": "infer", "batch": 1, "dtype": "bf16", "mode": "cudagraphs", "pairs_per_s": 250.0,
         "latency_ms_per_pair": 4.0, **common},
        {"what": "infer", "batch": 1, "dtype": "fp32", "mode": "eager", "pairs_per_s": 100.0,
         "latency_ms_per_pair": 10.0, **common},
        {"what": "data", "workers": 16, "pairs_per_s": 480.0, "pairs_per_s_per_worker": 30.0},
    ]  # fmt: skip
    reporting.derive(rows, {"bf16_dense_peak_tflops": 989.0})
    assert rows[1]["achieved_tflops"] == pytest.approx(3 * 369.0 * 300.0 / 1e3)
    assert rows[1]["fraction_of_bf16_peak"] == pytest.approx(3 * 369.0 * 300.0 / 1e3 / 989.0)
    assert rows[1]["mfnet_500_epochs_min"] == pytest.approx(500 * 784 / 300.0 / 60)
    assert rows[2]["achieved_tflops"] == pytest.approx(369.0 * 250.0 / 1e3)
    assert rows[4]["vs_train"]["ratio_16_workers"] == pytest.approx(480.0 / 300.0)
    targets = {t["target"]: t for t in reporting.check_targets(rows)}
    assert targets["train bf16 pairs/s"]["met"] and targets["MFNet 500 epochs (min)"]["met"]
    assert targets["train bf16 b8 peak GiB"]["met"] and targets["infer b1 bf16 compiled ms"]["met"]
    assert targets["data 16 workers / B+ train"]["value"] == pytest.approx(1.6)
    assert not targets["infer b1 eager ms"]["met"]  # 10 ms > 9 ms


# ------------------------------------------------------------------------------ data files (benchmarks/)
def _write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_data_files_load_and_give_every_figure_a_source():
    targets = reporting.load_targets()
    assert set(targets["targets"]) == set(reporting.TARGET_NAMES)
    assert targets["setting"] == {"size": "b+", "resolution": "480x640"}
    official = reporting.load_official_release()
    reference = reporting.load_reference()
    entries = [*targets["targets"].values(), *official["figures"].values(),
               *reference["paper_schedule"].values(), reference["bf16_dense_peak_tflops"]]
    assert all(e["source"].strip() for e in entries)
    # The result JSON's notes carry the official figures as plain values, as before the data files.
    notes = reporting.method_notes(reference, official)
    assert notes["official_reference"] == {
        "infer_b1_s": [23.0, 25.0], "train_step_b1_s": 94.0, "train_peak_rss_b1_gib": 16.7,
        "train_b2": "does not fit in 24 GiB",
    }  # fmt: skip
    assert notes["schedule"].startswith("500 epochs x 784 MFNet pairs")


def _target_rows(latency_ms: float, pairs_per_s: float) -> list[dict]:
    common = {"size": "b+", "resolution": "480x640"}
    return [
        {"what": "infer", "batch": 1, "dtype": "fp32", "mode": "eager", "pairs_per_s": 1e3 / latency_ms,
         "latency_ms_per_pair": latency_ms, **common},
        {"what": "train", "batch": 16, "dtype": "bf16", "mode": "eager", "pairs_per_s": pairs_per_s,
         "mfnet_500_epochs_min": 10.0, "peak_mem_gib": 20.0, **common},
    ]  # fmt: skip


def test_targets_are_judged_against_the_data_file_at_the_boundary():
    bounds = reporting.load_targets()["targets"]
    eager_max, train_min = bounds["infer_b1_eager_ms"]["max"], bounds["train_bf16_pairs_per_s"]["min"]

    def verdicts(latency_ms, pairs_per_s, targets=None):
        rows = _target_rows(latency_ms, pairs_per_s)
        return {t["target"]: (t["met"], t["limit"]) for t in reporting.check_targets(rows, targets)}

    at_limit = verdicts(eager_max, train_min)  # a value exactly at the limit meets it
    assert at_limit["infer b1 eager ms"] == (True, eager_max)
    assert at_limit["train bf16 pairs/s"] == (True, train_min)
    past = verdicts(eager_max * 1.001, train_min * 0.999)
    assert not past["infer b1 eager ms"][0] and not past["train bf16 pairs/s"][0]
    assert "train bf16 b8 peak GiB" not in past  # no batch-8 row: that target is not judged

    # Another targets file changes the verdicts: the limits come from the file, not from code.
    data = reporting.load_targets()
    data["targets"]["infer_b1_eager_ms"] = {"max": eager_max * 2, "source": "test"}
    data["targets"]["train_bf16_pairs_per_s"] = {"min": train_min * 2, "source": "test"}
    moved = verdicts(eager_max * 1.001, train_min, data)
    assert moved["infer b1 eager ms"] == (True, eager_max * 2)
    assert moved["train bf16 pairs/s"] == (False, train_min * 2)


def test_official_compare_uses_the_data_file(tmp_path):
    data = reporting.load_official_release()
    data["figures"]["infer_b1_s"]["value"] = [10.0, 14.0]
    path = _write_json(tmp_path / "official.json", data)
    rows = [{"what": "infer", "batch": 1, "median_s": 6.0, "size": "b+", "resolution": "1280x1280",
             "dtype": "fp32"}]  # fmt: skip
    reporting.compare_official(rows, reporting.load_official_release(path))
    assert rows[0]["vs_official"] == {"official": "10-14 s", "ratio": pytest.approx(0.5)}


def test_peaks_and_schedule_come_from_the_reference_file(tmp_path):
    data = reporting.load_reference()
    data["bf16_dense_peak_tflops"]["cards"] = [{"name": "A10G", "tflops": 70.0}]
    data["paper_schedule"]["epochs"]["value"] = 100
    reference = reporting.load_reference(_write_json(tmp_path / "reference.json", data))
    assert reporting.bf16_peak_tflops("NVIDIA A10G", reference) == 70.0
    assert reporting.bf16_peak_tflops("NVIDIA H200", reference) is None
    rows = [{"what": "train", "size": "t", "resolution": "64x96", "pairs_per_s": 10.0}]
    reporting.derive(rows, {}, reference)
    assert rows[0]["mfnet_500_epochs_min"] == pytest.approx(100 * 784 / 10.0 / 60)


@pytest.mark.parametrize(
    "loader, edit, message",
    [
        (reporting.load_targets, lambda d: d["targets"].pop("infer_b1_eager_ms"), "must have exactly"),
        (reporting.load_targets, lambda d: d["targets"]["infer_b1_eager_ms"].pop("source"), "'source'"),
        (reporting.load_targets, lambda d: d["targets"]["infer_b1_eager_ms"].update(min=1.0), "exactly one"),
        (reporting.load_targets, lambda d: d.pop("setting"), "missing 'setting'"),
        (reporting.load_official_release, lambda d: d["figures"]["infer_b1_s"].update(value=[25, 23]),
         "range"),
        (reporting.load_reference, lambda d: d["paper_schedule"]["epochs"].update(value="500"), "positive"),
    ],
)  # fmt: skip
def test_a_malformed_data_file_is_an_error_naming_it(tmp_path, loader, edit, message):
    data = loader()
    edit(data)
    path = _write_json(tmp_path / "broken.json", data)
    with pytest.raises(BenchmarkDataError, match=message) as info:
        loader(path)
    assert str(info.value).startswith(str(path))


def test_a_missing_or_unreadable_data_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "targets.json"
    with pytest.raises(BenchmarkDataError, match="not found") as info:
        reporting.load_targets(missing)
    assert str(missing) in str(info.value)
    bad = tmp_path / "reference.json"
    bad.write_text("{not json")
    with pytest.raises(BenchmarkDataError, match="as JSON") as info:
        reporting.load_reference(bad)
    assert str(bad) in str(info.value)


def test_the_cli_reads_its_data_files_before_measuring(tmp_path, monkeypatch):
    missing = tmp_path / "no-reference.json"
    monkeypatch.setattr(reporting, "REFERENCE_FILE", missing)
    out = tmp_path / "b.json"
    with pytest.raises(BenchmarkDataError, match="not found") as info:
        bench.main(["--sizes", "custom", "--resolutions", "64x96", "--device", "cpu", "--what", "flops",
                    "--json", str(out)])
    assert str(missing) in str(info.value) and not out.exists()


# ------------------------------------------------------------------------------ the reusable measuring
def test_measure_infer_takes_any_callable():
    calls = []
    x, w = torch.randn(4, 6), torch.randn(5, 6)

    def forward():
        calls.append(1)
        return [torch.relu(x @ w.t())]  # mm, relu: two computing ops (t is a view)

    res = measure.measure_infer(forward, batch=2, iters=4, warmup=3, count_ops=True)
    assert len(calls) == 1 + 2 + 4  # first call, warmup - 1 more, iters timed
    assert len(res["times_s"]) == 4 and res["median_s"] == pytest.approx(statistics.median(res["times_s"]))
    assert len(res["cpu_times_s"]) == 4
    assert res["pairs_per_s"] == pytest.approx(2 / res["median_s"])
    assert res["latency_ms_per_pair"] == pytest.approx(500 * res["median_s"])
    assert res["aten_ops_per_forward"] == 2  # counted during the first call only
    assert res["output_shape"] == [4, 5] and res["output_finite"] and "ru_maxrss" in res["peak_mem_kind"]

    # A non-PyTorch callable (an onnxruntime session returns a list of arrays): no ops counted.
    res = measure.measure_infer(lambda: [np.full((1, 3), np.nan)], batch=1, iters=1, warmup=0)
    assert res["output_shape"] == [1, 3] and res["output_finite"] is False
    assert "aten_ops_per_forward" not in res


def test_time_calls_interleaves_rounds_rotating_the_order(monkeypatch):
    """First calls apart, warm-up rounds, then timed rounds whose order rotates; on a CUDA device each
    timed call is followed by a synchronisation (recorded here in place of torch.cuda's)."""
    events = []
    monkeypatch.setattr(measure, "sync", lambda device: events.append(("sync", device)))
    fns = {name: (lambda n=name: events.append(n)) for name in "abc"}
    first_b = {"b": lambda: events.append("B")}
    res = measure.time_calls(fns, iters=3, warmup=2, device="cuda", first_fns=first_b)
    rounds = ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert [e for e in events if isinstance(e, str)] == ["a", "B", "c"] + ["a", "b", "c"] + rounds
    timed = events[-18:]  # the 3 timed rounds: each call, then its sync
    assert timed[0::2] == rounds
    assert timed[1::2] == [("sync", "cuda")] * 9
    for name in "abc":
        r = res[name]
        assert len(r["times_s"]) == len(r["cpu_times_s"]) == 3 and r["first_call_s"] >= 0
        assert r["median_s"] == statistics.median(r["times_s"]) and r["min_s"] == min(r["times_s"])
        assert r["median_cpu_s"] == statistics.median(r["cpu_times_s"])
    with pytest.raises(ValueError, match="iters"):
        measure.time_calls(fns, iters=0, warmup=1)
    with pytest.raises(ValueError, match="nothing to time"):
        measure.time_calls({}, iters=1, warmup=1)


def test_time_calls_separates_cpu_time_from_wall_clock():
    """Process CPU time counts work, not waiting: a sleep costs wall clock only, a busy loop both."""

    def busy():
        t0 = time.process_time()
        while time.process_time() - t0 < 0.02:
            pass

    res = measure.time_calls({"sleep": lambda: time.sleep(0.02), "busy": busy}, iters=2, warmup=0)
    assert res["sleep"]["median_s"] >= 0.02 and res["sleep"]["median_cpu_s"] < 0.01
    busy_cpu = res["busy"]["median_cpu_s"]
    assert busy_cpu >= 0.02 and res["busy"]["median_s"] >= 0.9 * busy_cpu
    wall, cpu = measure.ratios_over(res, "busy")
    assert wall == {"sleep": res["sleep"]["median_s"] / res["busy"]["median_s"]}
    assert cpu == {"sleep": res["sleep"]["median_cpu_s"] / res["busy"]["median_cpu_s"]}


def test_robust_mode_times_the_three_variants_together(tmp_path, monkeypatch, capsys):
    """--what robust in-process: each variant is built with its own options, the three are timed in the
    same rounds, the ratios are their medians over the first's, and its table is printed. The padded
    resolution is the built model's (INPUT.SIZE_DIVISIBILITY 16 is raised to the backbone's)."""
    built = []
    build = measure.build_benchmark_model

    def recording_build(cfg):
        built.append((cfg.MODEL.SARTM.FUSION, cfg.INPUT.THERMAL_NORM, cfg.MODEL.SARTM.ROBUST.STANDIN))
        return build(cfg)

    monkeypatch.setattr(measure, "build_benchmark_model", recording_build)
    out = tmp_path / "robust.json"
    bench.main(["--sizes", "custom", "--resolutions", "80x96", "--device", "cpu", "--what", "robust",
                "--iters", "2", "--warmup", "1", "--json", str(out),
                "--opts", "INPUT.SIZE_DIVISIBILITY", "16"])
    assert built == [("paper", "none", "embedding"), ("paper", "stretch", "embedding"),
                     ("reliability", "none", "hallucinate")]
    (row,) = json.loads(out.read_text())["measurements"]
    assert row["what"] == "robust" and row["padded_resolution"] == "96x96"
    names = list(measure.ROBUST_VARIANTS)
    assert list(row["timings"]) == names and row["base"] == names[0]
    assert row["variants"] == {n: [*o] for n, o in measure.ROBUST_VARIANTS.items()}
    medians = {n: statistics.median(t["times_s"]) for n, t in row["timings"].items()}
    cpu = {n: statistics.median(t["cpu_times_s"]) for n, t in row["timings"].items()}
    assert row["ratios"] == {n: pytest.approx(medians[n] / medians[names[0]]) for n in names}
    assert row["cpu_ratios"] == {n: pytest.approx(cpu[n] / cpu[names[0]]) for n in names}
    assert all(len(t["times_s"]) == 2 for t in row["timings"].values())
    lines = capsys.readouterr().out.strip().splitlines()
    header = lines.index(f"| model | ms (median) | vs {names[0]} |")
    assert lines[header - 1] == "Hiera-custom, 80x96, batch 1, fp32, eager, prepared; 2 interleaved rounds"
    body = lines[header + 2:]
    assert [line.split(" | ")[0][2:] for line in body] == names
    assert body[2] == f"| {names[2]} | {1000 * medians[names[2]]:.1f} | {row['ratios'][names[2]]:.3f}x |"


def test_backends_table_has_the_ratio_agreement_and_size_columns():
    timings = {"pytorch_fp32": {"median_s": 2.0}, "onnxruntime_fp32": {"median_s": 1.5},
               "onnxruntime_int8": {"median_s": 1.0}}
    ratios = {"over_pytorch_fp32": {"onnxruntime_fp32": 0.75, "onnxruntime_int8": 0.5},
              "cpu_over_pytorch_fp32": {"onnxruntime_fp32": 0.7, "onnxruntime_int8": 0.45},
              "over_onnxruntime_fp32": {"pytorch_fp32": 4 / 3, "onnxruntime_int8": 2 / 3},
              "cpu_over_onnxruntime_fp32": {"pytorch_fp32": 1.4, "onnxruntime_int8": 0.6}}
    parity = {name: {"argmax_agreement_vs_pytorch_fp32": a} for name, a in
              (("pytorch_fp32", 1.0), ("onnxruntime_fp32", 1.0), ("onnxruntime_int8", 0.9876))}
    row = {"what": "backends", "size": "t", "resolution": "480x640", "timings": timings, "ratios": ratios,
           "parity_random_input": parity, "onnx_mb": {"onnxruntime_fp32": 164.1, "onnxruntime_int8": 51.9},
           "onnxruntime_threads": 2}
    machine = {"load_average_before": [0.5, 0, 0], "load_average_after": [1.5, 0, 0]}
    lines = reporting.format_backends_table([row], machine).splitlines()
    assert lines[0].startswith("backends at 480x640, load 0.5 -> 1.5: threads 2;")
    assert lines[1].split() == ["size", "backend", "median", "s", "/", "PT", "fp32", "/", "ORT", "fp32",
                                "agree", "%", "MB"]
    cells = {line.split()[1]: line.split()[2:] for line in lines[2:]}
    assert cells["pytorch_fp32"] == ["2.000", "-", "1.33", "(1.40)", "100.00"]
    assert cells["onnxruntime_fp32"] == ["1.500", "0.75", "(0.70)", "-", "100.00", "164"]
    assert cells["onnxruntime_int8"] == ["1.000", "0.50", "(0.45)", "0.67", "(0.60)", "98.76", "52"]
    assert reporting.format_backends_table([{"what": "infer"}]) == ""


@pytest.mark.slow
def test_importing_the_package_does_not_import_the_benchmark():
    code = "import sys, sartm_d2; assert not any(m.startswith('sartm_d2.benchmark') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
