#!/usr/bin/env python
"""onnxruntime fp32 against PyTorch eager fp32 and bf16 (prepared models), in one process, on the CPU.

    python tools/measure_onnx.py --sizes t b+ --height 480 --width 640 --runs 5 \\
        --json benchmarks/results/cpu_onnx_480x640.json

Per Hiera size: the paper config (configs/mfnet.yaml) with random weights and random class-name
embeddings, saved and loaded back as MODEL.WEIGHTS; exported by ``sartm_d2.export`` (fp32, opset 18);
then the same raw (1, 4, H, W) image through three backends doing the same work (normalise, pad,
SARTM, crop, argmax): onnxruntime fp32, PyTorch eager fp32 and PyTorch eager bf16
(INFERENCE_DTYPE bfloat16, both ``prepare_for_inference``-ed), interleaved run by run so that the
load of a shared machine falls on all three alike. Prints a table and writes every time to JSON.
``--profile`` adds onnxruntime's per-op-type time of one run (its built-in profiler).
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
from sartm_d2.benchmark.measure import machine_info
from sartm_d2.engine import build_inference_model
from sartm_d2.export import ExportableSARTM, build_export_module, create_session
from sartm_d2.export.exporter import write_onnx
from sartm_d2.export.runtime import cpu_threads

logger = logging.getLogger("sartm_d2.tools.measure_onnx")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
                 profile: bool, threads: int) -> dict:
    opts = random_weights(config, size, folder)
    cfg = get_sartm_cfg(config, opts)
    t0 = time.perf_counter()
    fp32_model, module = build_export_module(cfg, height, width)  # INFERENCE_DTYPE forced to float32
    onnx_path = os.path.join(folder, f"sartm_{size}.onnx")
    write_onnx(module, onnx_path)
    export_s = time.perf_counter() - t0

    bf16_cfg = get_sartm_cfg(config, [*opts, "MODEL.SARTM.INFERENCE_DTYPE", "bfloat16"])
    bf16_module = ExportableSARTM(build_inference_model(bf16_cfg), module.geometry).eval()
    session = create_session(onnx_path, threads=threads)
    image = np.random.default_rng(0).integers(0, 256, size=(1, 4, height, width)).astype(np.float32)
    x = torch.from_numpy(image)

    def torch_fn(m):
        def run():
            with torch.no_grad():
                return m(x)
        return run

    backends = {
        "onnxruntime_fp32": lambda: session.run(None, {"image": image}),
        "pytorch_fp32": torch_fn(module),
        "pytorch_bf16": torch_fn(bf16_module),
    }
    outputs = {name: fn() for name, fn in backends.items()}  # first call, also the parity sample
    for _ in range(max(warmup - 1, 0)):
        for fn in backends.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in backends}
    cpu_times: dict[str, list[float]] = {name: [] for name in backends}
    names = list(backends)
    for r in range(runs):  # interleaved, rotating the order, so machine load hits all backends alike
        for name in names[r % len(names):] + names[: r % len(names)]:
            start, cpu_start = time.perf_counter(), time.process_time()
            backends[name]()
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - cpu_start)  # all threads of this process
    median = {name: statistics.median(t) for name, t in times.items()}
    median_cpu = {name: statistics.median(t) for name, t in cpu_times.items()}
    ort_logits, ort_labels = outputs["onnxruntime_fp32"]
    ref_logits, ref_labels = (t.numpy() for t in outputs["pytorch_fp32"])
    bf16_labels = outputs["pytorch_bf16"][1].numpy()
    result = {
        "size": size,
        "height": height,
        "width": width,
        "export_s": export_s,
        "onnx_mb": os.path.getsize(onnx_path) / 1e6,
        "median_s": median,
        "times_s": times,
        "median_cpu_s": median_cpu,
        "cpu_times_s": cpu_times,
        "ratio_onnx_over_pytorch_fp32": median["onnxruntime_fp32"] / median["pytorch_fp32"],
        "ratio_onnx_over_pytorch_bf16": median["onnxruntime_fp32"] / median["pytorch_bf16"],
        "cpu_ratio_onnx_over_pytorch_fp32": median_cpu["onnxruntime_fp32"] / median_cpu["pytorch_fp32"],
        "cpu_ratio_onnx_over_pytorch_bf16": median_cpu["onnxruntime_fp32"] / median_cpu["pytorch_bf16"],
        "parity_random_input": {
            "max_abs_logit_diff_onnx_vs_fp32": float(np.abs(ort_logits - ref_logits).max()),
            "argmax_agreement_onnx_vs_fp32": float((ort_labels == ref_labels).mean()),
            "argmax_agreement_bf16_vs_fp32": float((bf16_labels == ref_labels).mean()),
        },
    }
    if profile:
        result["onnxruntime_profile"] = ort_op_profile(onnx_path, image, folder, threads)
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "mfnet.yaml"))
    p.add_argument("--sizes", nargs="+", default=["t", "b+"], help="Hiera sizes (t, s, b+, l)")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--runs", type=int, default=5, help="timed runs per backend (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per backend first")
    p.add_argument("--profile", action="store_true", help="add onnxruntime's per-op-type times")
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
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(), "onnxruntime_threads": args.threads,
            "load_average_before": load_before,
        },
        "versions": {"torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
                     "onnx": __import__("onnx").__version__},
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "what": "raw (1,4,H,W) image -> logits + argmax; random weights; median of interleaved runs; "
                "cpu_s = process CPU time (all threads), robust to other processes' load",
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            logger.info("Hiera-%s at %dx%d", size, args.height, args.width)
            results["rows"].append(
                measure_size(args.config, size, args.height, args.width, args.runs, args.warmup, folder,
                             args.profile, args.threads)
            )
    results["machine"]["load_average_after"] = os.getloadavg()
    lines = [f"CPU {results['machine']['cpu_model']} x{results['machine']['cpus']}, "
             f"load {load_before[0]:.1f} -> {results['machine']['load_average_after'][0]:.1f}",
             f"threads {args.threads}; wall-clock medians (CPU-time ratios in brackets)",
             "size   HxW       ORT fp32 s  PT fp32 s  PT bf16 s  ORT/PT32      ORT/PTbf16     agree  export s"
             "  MB"]
    for r in results["rows"]:
        m = r["median_s"]
        lines.append(
            f"{r['size']:<6} {r['height']}x{r['width']:<5} {m['onnxruntime_fp32']:>10.3f} "
            f"{m['pytorch_fp32']:>10.3f} "
            f"{m['pytorch_bf16']:>10.3f} {r['ratio_onnx_over_pytorch_fp32']:>6.2f} "
            f"({r['cpu_ratio_onnx_over_pytorch_fp32']:.2f}) {r['ratio_onnx_over_pytorch_bf16']:>7.2f} "
            f"({r['cpu_ratio_onnx_over_pytorch_bf16']:.2f}) "
            f"{100 * r['parity_random_input']['argmax_agreement_onnx_vs_fp32']:>6.2f} {r['export_s']:>9.1f} "
            f"{r['onnx_mb']:>4.0f}"
        )
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
