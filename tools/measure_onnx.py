#!/usr/bin/env python
"""onnxruntime fp32 and INT8 against PyTorch eager fp32 and bf16 (prepared models), on the CPU, one process.

    python tools/measure_onnx.py --sizes t b+ --height 480 --width 640 --runs 5 \\
        --json benchmarks/results/cpu_onnx_int8_480x640.json

Per Hiera size: the paper config (configs/mfnet.yaml) with random weights and random class-name
embeddings, saved and loaded back as MODEL.WEIGHTS; exported by ``sartm_d2.export`` (fp32, opset 18);
then the same raw image through the backends of ``--backends``, doing the same work (normalise, pad,
SARTM, crop, argmax), interleaved run by run (the order rotating) so that the load of a shared
machine falls on all alike:

* ``onnxruntime_fp32``: the fp32 graph; ``onnxruntime_int8``: static QDQ INT8 as
  ``export_model.py --dtype int8`` makes it (calibrated on ``--calibration-images`` random images;
  no gate, random weights have no accuracy to keep); ``onnxruntime_int8_dynamic``: its
  ``--quantization dynamic``; ``onnxruntime_fp32_rgb``: the one-camera graph (``--modality rgb``,
  input (1, 3, H, W)), which computes one stream;
* ``pytorch_fp32`` / ``pytorch_bf16``: PyTorch eager (INFERENCE_DTYPE float32 / bfloat16, both
  ``prepare_for_inference``-ed) on the same (1, 4, H, W) image.

Prints the CPU's flags (AVX2, AVX-512 VNNI, AVX-512 BF16, AMX: the INT8 and bf16 ratios depend on
them) and a table, and writes every time to JSON. ``--profile`` adds onnxruntime's per-op-type time
of one run (its built-in profiler) for each onnxruntime backend.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time

import sartm_d2  # noqa: F401  (first: detectron2 compatibility fixes and registrations)

# isort: split
import numpy as np
import torch
from detectron2.modeling import build_model

from sartm_d2 import get_sartm_cfg
from sartm_d2.benchmark.measure import cpu_flags, machine_info
from sartm_d2.benchmark.report import describe_cpu_flags
from sartm_d2.engine import build_inference_model
from sartm_d2.export import ExportableSARTM, QuantizationSettings, build_export_module, create_session
from sartm_d2.export.exporter import write_onnx
from sartm_d2.export.quantize import quantize_graph
from sartm_d2.export.runtime import cpu_threads

logger = logging.getLogger("sartm_d2.tools.measure_onnx")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("onnxruntime_fp32", "onnxruntime_int8", "onnxruntime_int8_dynamic", "onnxruntime_fp32_rgb",
            "pytorch_fp32", "pytorch_bf16")


def random_weights(config: str, size: str, folder: str) -> list[str]:
    """Config options of the paper model at ``size`` with random weights saved as MODEL.WEIGHTS."""
    opts = ["MODEL.SAM2.SIZE", size, "MODEL.SAM2.CHECKPOINT", "", "MODEL.DEVICE", "cpu"]
    cfg = get_sartm_cfg(config, opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    if model.text_embeddings is not None:
        embeddings = torch.randn(model.text_embeddings.shape)
        model.set_text_embeddings(torch.nn.functional.normalize(embeddings, dim=-1))
    path = os.path.join(folder, f"random_{size}.pth")
    torch.save({"model": model.state_dict()}, path)
    return [*opts, "MODEL.WEIGHTS", path]


def ort_op_profile(onnx_path: str, image: np.ndarray, folder: str, threads: int) -> dict:
    """Milliseconds per ONNX op type in one profiled run (after one warm-up), largest first."""
    session = create_session(onnx_path, threads=threads, enable_profiling=True,
                             profile_file_prefix=os.path.join(folder, "ort_profile"))
    session.run(None, {"image": image})
    session.run(None, {"image": image})
    trace_path = session.end_profiling()
    with open(trace_path) as f:
        events = json.load(f)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    last_start = runs[-1]["ts"] if runs else 0
    per_op: dict[str, float] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= last_start:
            per_op[e["args"]["op_name"]] += e["dur"] / 1000.0
    total = sum(per_op.values())
    return {"total_kernel_ms": total, "ms_per_op_type": dict(sorted(per_op.items(), key=lambda kv: -kv[1]))}


def measure_size(config: str, size: str, height: int, width: int, runs: int, warmup: int, folder: str,
                 profile: bool, threads: int, backends: list[str], calibration_images: int) -> dict:
    opts = random_weights(config, size, folder)
    cfg = get_sartm_cfg(config, opts)
    t0 = time.perf_counter()
    fp32_model, module = build_export_module(cfg, height, width)  # INFERENCE_DTYPE forced to float32
    onnx_path = os.path.join(folder, f"sartm_{size}.onnx")
    write_onnx(module, onnx_path)
    export_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(1, 4, height, width)).astype(np.float32)
    x = torch.from_numpy(image)
    files = {"onnxruntime_fp32": onnx_path}
    prepare: dict[str, dict] = {}
    if "onnxruntime_fp32_rgb" in backends:
        rgb_module = ExportableSARTM(fp32_model, module.geometry, "rgb").eval()
        files["onnxruntime_fp32_rgb"] = os.path.join(folder, f"sartm_{size}_rgb.onnx")
        write_onnx(rgb_module, files["onnxruntime_fp32_rgb"])
    for name, mode in (("onnxruntime_int8", "static"), ("onnxruntime_int8_dynamic", "dynamic")):
        if name in backends:
            files[name] = os.path.join(folder, f"sartm_{size}_{name}.onnx")
            calibration = [rng.integers(0, 256, size=(4, height, width)).astype(np.float32)
                           for _ in range(calibration_images if mode == "static" else 0)]
            settings = QuantizationSettings(mode=mode)
            prepare[name] = quantize_graph(onnx_path, files[name], settings, calibration)

    def ort_fn(path, feed):
        session = create_session(path, threads=threads)
        return lambda: session.run(None, {"image": feed})

    def torch_fn(m):
        def run():
            with torch.no_grad():
                return m(x)
        return run

    def bf16_module():
        bf16_cfg = get_sartm_cfg(config, [*opts, "MODEL.SARTM.INFERENCE_DTYPE", "bfloat16"])
        return ExportableSARTM(build_inference_model(bf16_cfg), module.geometry).eval()

    rgb_image = np.ascontiguousarray(image[:, :3])
    available = {
        "onnxruntime_fp32": lambda: ort_fn(onnx_path, image),
        "onnxruntime_int8": lambda: ort_fn(files["onnxruntime_int8"], image),
        "onnxruntime_int8_dynamic": lambda: ort_fn(files["onnxruntime_int8_dynamic"], image),
        "onnxruntime_fp32_rgb": lambda: ort_fn(files["onnxruntime_fp32_rgb"], rgb_image),
        "pytorch_fp32": lambda: torch_fn(module),
        "pytorch_bf16": lambda: torch_fn(bf16_module()),
    }
    fns = {name: available[name]() for name in backends}
    outputs = {name: fn() for name, fn in fns.items()}  # first call, also the parity sample
    for _ in range(max(warmup - 1, 0)):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpu_times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(runs):  # interleaved, rotating the order, so machine load hits all backends alike
        for name in names[r % len(names):] + names[: r % len(names)]:
            start, cpu_start = time.perf_counter(), time.process_time()
            fns[name]()
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - cpu_start)  # all threads of this process
    median = {name: statistics.median(t) for name, t in times.items()}
    median_cpu = {name: statistics.median(t) for name, t in cpu_times.items()}
    with torch.no_grad():  # the references: PyTorch fp32 with both streams, and with RGB alone
        ref = [t.numpy() for t in module(x)[:2]]
        rgb_reference = ExportableSARTM(fp32_model, module.geometry, "rgb").eval()
        ref_rgb = [t.numpy() for t in rgb_reference(x[:, :3])[:2]]
    parity = {}
    for name, out in outputs.items():
        logits, labels = (np.asarray(v.float() if isinstance(v, torch.Tensor) else v) for v in out[:2])
        want_logits, want_labels = ref_rgb if name.endswith("_rgb") else ref
        parity[name] = {"max_abs_logit_diff_vs_pytorch_fp32": float(np.abs(logits - want_logits).max()),
                        "argmax_agreement_vs_pytorch_fp32": float((labels == want_labels).mean())}
    ratios = {}
    for base in ("pytorch_fp32", "onnxruntime_fp32", "pytorch_bf16"):
        if base in median:
            ratios[f"over_{base}"] = {n: median[n] / median[base] for n in median if n != base}
            ratios[f"cpu_over_{base}"] = {n: median_cpu[n] / median_cpu[base] for n in median if n != base}
    result = {
        "size": size,
        "height": height,
        "width": width,
        "export_s": export_s,
        "onnx_mb": {name: os.path.getsize(path) / 1e6 for name, path in files.items()},
        "quantization": prepare,
        "median_s": median,
        "times_s": times,
        "median_cpu_s": median_cpu,
        "cpu_times_s": cpu_times,
        "ratios": ratios,
        "parity_random_input": parity,
    }
    if profile:
        result["onnxruntime_profile"] = {
            name: ort_op_profile(path, rgb_image if name.endswith("_rgb") else image, folder, threads)
            for name, path in files.items() if name in fns
        }
    return result


def _ratio_cell(ratios: dict, base: str, name: str) -> str:
    if name == base or f"over_{base}" not in ratios:
        return "-".center(13)
    return f"{ratios[f'over_{base}'][name]:.2f} ({ratios[f'cpu_over_{base}'][name]:.2f})".ljust(13)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "mfnet.yaml"))
    p.add_argument("--sizes", nargs="+", default=["t", "b+"], help="Hiera sizes (t, s, b+, l)")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--runs", type=int, default=5, help="timed runs per backend (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per backend first")
    p.add_argument("--profile", action="store_true", help="add onnxruntime's per-op-type times")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                   help="what to time (default: all)")
    p.add_argument("--calibration-images", type=int, default=4,
                   help="random calibration images of the static INT8 graph (default 4)")
    p.add_argument("--threads", type=int, default=cpu_threads(),
                   help="threads of both runtimes (torch.set_num_threads, onnxruntime intra-op)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    results = {
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT), *(sys.argv[1:] if argv is None else argv)]),
        "machine": {
            "cpu_model": machine_info(torch.device("cpu"))["cpu_model"], "cpus": cpu_threads(),
            "cpu_flags": cpu_flags(),
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(), "onnxruntime_threads": args.threads,
            "load_average_before": load_before,
        },
        "versions": {"torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
                     "onnx": __import__("onnx").__version__},
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "what": "raw (1,4,H,W) image -> logits + argmax ((1,3,H,W) for the rgb graph); random weights; "
                "median of interleaved runs; cpu_s = process CPU time (all threads), robust to other "
                "processes' load",
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            logger.info("Hiera-%s at %dx%d", size, args.height, args.width)
            results["rows"].append(
                measure_size(args.config, size, args.height, args.width, args.runs, args.warmup, folder,
                             args.profile, args.threads, args.backends, args.calibration_images)
            )
    results["machine"]["load_average_after"] = os.getloadavg()
    lines = [f"CPU {results['machine']['cpu_model']} x{results['machine']['cpus']}, "
             f"load {load_before[0]:.1f} -> {results['machine']['load_average_after'][0]:.1f}",
             describe_cpu_flags(results["machine"]["cpu_flags"]),
             f"threads {args.threads}; wall-clock medians; ratios within this run (CPU-time ratios in ())",
             "size   backend                    median s  / PT fp32      / ORT fp32     agree %     MB"]
    for r in results["rows"]:
        for name, m in r["median_s"].items():
            cells = [_ratio_cell(r["ratios"], base, name) for base in ("pytorch_fp32", "onnxruntime_fp32")]
            agree = r["parity_random_input"][name]["argmax_agreement_vs_pytorch_fp32"]
            mb = r["onnx_mb"].get(name)
            lines.append(f"{r['size']:<6} {name:<26} {m:>8.3f}  {cells[0]}  {cells[1]}  {100 * agree:>7.2f} "
                         f"{'' if mb is None else f'{mb:>6.0f}'}")
    print("\n".join(lines))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    main()
