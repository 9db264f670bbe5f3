#!/usr/bin/env python
"""Speed, memory and FLOPs of SARTM on the CPU or one CUDA card (issue 5).

Measures, for each Hiera size and resolution, with random weights and random RGB-T inputs (no
checkpoint or dataset needed):

* ``train``: one optimisation step (forward + backward + AdamW from ``sartm_d2.engine.build_optimizer``,
  bf16 via ``torch.autocast`` without a grad scaler), per step time, RGB-T pairs/s, peak memory;
* ``infer``: a copy of the model after ``prepare_for_inference()`` (LoRA merged; bf16: linear and
  convolution weights stored in bf16; the deployable path, see ``--no-prepare``) under
  ``torch.no_grad()``, median latency and pairs/s, and (eager) the aten ops dispatched per forward;
* ``flops``: forward FLOPs per RGB-T pair with ``torch.utils.flop_counter.FlopCounterMode``;
* ``data``: pairs/s of the real training loader (``RGBTDatasetMapper`` with the config's
  augmentations, ``sartm_d2.engine.build_resumable_train_loader``) reading PNGs from disk, with 0
  workers and with ``--workers``, projected to 16 workers and compared with the training rate.

Every measurement is recorded with its settings in a JSON file; one table is printed last. A
measurement that fails (CUDA out of memory, a compile error) is recorded as ``{"error": ...}`` and
the run goes on. The model is the paper's full SARTM by default: the language fusion and the
distillation run on random class-name embeddings written to a temporary ``TEACHER "file"``.

    python tools/benchmark.py --sizes t b+ --resolutions 480x640 --what train infer flops --device cpu
    python tools/benchmark.py --device cuda --sizes b+ --dtypes bf16 --modes eager compiled cudagraphs
    python tools/benchmark.py --official-compare   # issue 5's CPU comparison with the official release

See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import itertools
import json
import logging
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sartm_d2  # noqa: F401  (first: detectron2 compatibility fixes and registrations)

# isort: split
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from sartm_d2 import get_sartm_cfg
from sartm_d2.data import RGBTDatasetMapper, get_classes, register_all_rgbt
from sartm_d2.data.synthetic import generate_synthetic_rgbt
from sartm_d2.engine import build_optimizer, build_resumable_train_loader

logger = logging.getLogger("sartm_d2.tools.benchmark")

SCHEMA = "sartm-d2-benchmark/1"
SIZES = ("t", "s", "b+", "l", "custom")
DTYPES = {"fp32": None, "bf16": torch.bfloat16}
MODES = ("eager", "compiled", "cudagraphs")
WHAT = ("train", "infer", "data", "flops")
_CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# Settings that make a random-weight model build without files; applied before --opts.
_BENCH_OPTS = ["MODEL.SAM2.CHECKPOINT", "", "MODEL.SARTM.DISTILL.TEACHER", "file"]
# "custom" is a tiny Hiera for smoke tests: small FPN and heads too (--opts still override).
_SIZE_OPTS = {"custom": ["MODEL.SAM2.D_MODEL", 32, "MODEL.SARTM.AUX_HEAD.CONVS_DIM", 16]}
TEXT_DIM = 512  # CLIP ViT-B/32's text embedding width

# The paper's MFNet schedule: 500 epochs of the 784 training pairs.
PAPER_EPOCHS, MFNET_TRAIN_PAIRS = 500, 784
# Training FLOPs ~= 3 x forward FLOPs (backward ~= 2 x forward). With SARTM's frozen trunk the
# backward skips most weight gradients, so the rule over-states the work done: a generous figure.
TRAIN_FLOPS_FACTOR = 3
# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's H100 / H200 datasheets
# (half of the "with sparsity" figures). Matched against torch.cuda.get_device_name(), in order.
BF16_DENSE_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200", 989.0), ("H100", 989.0))
PEAK_SOURCE = "NVIDIA H100/H200 datasheets, BF16 Tensor Core dense (half the 'with sparsity' figure)"
# Issue 5: the official release on a 2-core CPU, Hiera-B+, one 1280x1280 pair, fp32, random weights.
OFFICIAL_REFERENCE = {
    "infer_b1_s": [23.0, 25.0],
    "train_step_b1_s": 94.0,
    "train_peak_rss_b1_gib": 16.7,
    "train_b2": "does not fit in 24 GiB",
}
# Issue 5's targets on one H100/H200, Hiera-B+ at 480x640.
TARGETS = {
    "train_bf16_pairs_s_min": 250.0,
    "train_bf16_b8_peak_gib_max": 12.0,
    "infer_b1_bf16_compiled_ms_max": 4.0,
    "infer_b1_eager_ms_max": 9.0,
    "mfnet_schedule_min_max": 30.0,
    "data_16_workers_over_train_min": 1.5,
}
_ERRORS = (torch.OutOfMemoryError, RuntimeError)
COMPILED_MIN_WARMUP = 3


# ------------------------------------------------------------------------------------------- helpers
def parse_resolution(text: str) -> tuple[int, int]:
    """Parse "480x640" into (480, 640)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution {text!r} must be HEIGHTxWIDTH, e.g. 480x640") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"resolution {text!r} must be at least 32x32")
    return h, w


def padded(hw: tuple[int, int], divisibility: int = 32) -> tuple[int, int]:
    """The size the model runs at: each side rounded up to a multiple of ``divisibility``."""
    return tuple(int(math.ceil(v / divisibility) * divisibility) for v in hw)


def bf16_peak_tflops(card: str) -> float | None:
    """The card's dense bf16 peak (TFLOP/s) for the cards in ``BF16_DENSE_PEAK_TFLOPS``, else None."""
    for key, peak in BF16_DENSE_PEAK_TFLOPS:
        if key.lower() in card.lower():
            return peak
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: torch.device) -> dict:
    """Platform, CPU, core count, library versions and the card (or "cpu")."""
    import detectron2
    import sam2

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "detectron2": detectron2.__version__,
        "sam2": getattr(sam2, "__version__", "unknown"),
        "card": "cpu",
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            card=torch.cuda.get_device_name(device),
            card_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            bf16_dense_peak_tflops=bf16_peak_tflops(torch.cuda.get_device_name(device)),
            peak_source=PEAK_SOURCE,
        )
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {
            "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "peak_mem_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30,
            "peak_mem_kind": "torch.cuda.max_memory_allocated (since the measurement started)",
        }
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return {
        "peak_mem_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30,
        "peak_mem_kind": "process peak RSS (ru_maxrss; since the process started, so it includes earlier "
        "measurements of the same process unless --isolate)",
    }


def _timed_calls(fn, *, iters: int, warmup: int, device: torch.device, first_fn=None) -> dict:
    """Call ``first_fn`` (default ``fn``) once, timed apart (compilation, allocator warm-up), then
    ``fn`` warmup - 1 more times, then iters timed."""
    t0 = time.perf_counter()
    (first_fn or fn)()
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {
        "first_call_s": first,
        "times_s": times,
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "min_s": min(times),
    }


def _autocast(device: torch.device, dtype: str):
    """bf16: ``torch.autocast`` (no grad scaler: bf16 has fp32's range); fp32: no autocast at all."""
    if DTYPES[dtype] is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def _compile(model, mode: str):
    """eager: the model; compiled: ``torch.compile``; cudagraphs: its mode "reduce-overhead" (CUDA graphs)."""
    if mode == "eager":
        return model
    torch.compiler.reset()  # no cache (and no automatic dynamic shapes) carried over between settings
    return torch.compile(model, mode="reduce-overhead" if mode == "cudagraphs" else None, dynamic=False)


# ---------------------------------------------------------------------------------------- the model
def write_random_text_embeddings(
    path: str, class_names: list[str], dim: int = TEXT_DIM, seed: int = 0
) -> str:
    """A ``TEACHER "file"`` embeddings file of random (seeded) vectors, so that the language fusion and
    the distillation run without CLIP weights (their cost does not depend on the values)."""
    g = torch.Generator().manual_seed(seed)
    torch.save(
        {"embeddings": torch.randn(len(class_names), dim, generator=g), "class_names": list(class_names)},
        path,
    )
    return path


def build_cfg(config_file: str, *, size: str, device: str, embeddings_dir: str, opts: list[str]):
    """Config file, then the benchmark's random-weight settings and size defaults, then ``opts``."""
    cfg = get_sartm_cfg(config_file, _BENCH_OPTS + _SIZE_OPTS.get(size, []) + list(opts))
    cfg.MODEL.SAM2.SIZE = size
    cfg.MODEL.DEVICE = device
    if cfg.MODEL.SARTM.DISTILL.TEACHER == "file" and not cfg.MODEL.SARTM.DISTILL.EMBEDDINGS_FILE:
        datasets = cfg.DATASETS.TRAIN if len(cfg.DATASETS.TRAIN) else cfg.DATASETS.TEST
        names, _ = get_classes(datasets[0], cfg.DATASETS.BACKGROUND_AS_IGNORE)
        path = os.path.join(embeddings_dir, f"text_embeddings_{len(names)}.pt")
        if not os.path.isfile(path):
            write_random_text_embeddings(path, names)
        cfg.MODEL.SARTM.DISTILL.EMBEDDINGS_FILE = path
    cfg.freeze()
    return cfg


def make_inputs(
    batch: int, hw: tuple[int, int], num_classes: int, device: torch.device, *, labels: bool, seed: int = 0
) -> list[dict]:
    """Random mapper-style dicts already on ``device`` (the loader is measured apart, by ``data``).

    Labels are random 32x32-pixel blocks of class ids with 5% ignore, so that several classes are
    present (the distillation then has prototypes to compare).
    """
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    out = []
    for _ in range(batch):
        d = {"image": (torch.rand(4, h, w, generator=g) * 255).to(device), "height": h, "width": w}
        if labels:
            cells = torch.randint(0, num_classes, (math.ceil(h / 32), math.ceil(w / 32)), generator=g)
            sem = cells.repeat_interleave(32, 0).repeat_interleave(32, 1)[:h, :w].clone()
            sem[torch.rand(h, w, generator=g) < 0.05] = 255
            d["sem_seg"] = sem.to(device)
        out.append(d)
    return out


def build_benchmark_model(cfg) -> torch.nn.Module:
    """``build_model`` with a fixed seed; cuDNN autotuning follows the config's CUDNN_BENCHMARK."""
    torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK)
    torch.manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)
    return build_model(cfg)


def _count_params(model) -> dict:
    params = list(model.parameters())
    return {
        "params_m": sum(p.numel() for p in params) / 1e6,
        "trainable_params_m": sum(p.numel() for p in params if p.requires_grad) / 1e6,
    }


# ---------------------------------------------------------------------------------------- measurements
def measure_train(model, cfg, *, hw, batch, dtype, mode, iters, warmup, device) -> dict:
    """Time forward + backward + optimizer step; pairs/s = batch / median step time."""
    model.train()
    _free(device)
    _reset_peak(device)
    optimizer = build_optimizer(cfg, model)
    runner = _compile(model, mode)
    inputs = make_inputs(batch, hw, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, device, labels=True)
    losses = {}

    def step():
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, dtype):
            loss_dict = runner(inputs)
        total = sum(loss_dict.values())
        total.backward()
        optimizer.step()
        losses["last"] = loss_dict

    try:
        res = _timed_calls(step, iters=iters, warmup=warmup, device=device)
        res.update(_peak_memory(device))
        res["losses"] = {k: float(v.detach()) for k, v in losses["last"].items()}
        impl = [k for k in ("fused", "foreach") if optimizer.defaults.get(k)] or ["for-loop"]
        res["optimizer"] = f"{type(optimizer).__name__} ({impl[0]})"
    finally:
        optimizer.zero_grad(set_to_none=True)
        losses.clear()
    res["pairs_per_s"] = batch / res["median_s"]
    return res


class OpCounter(TorchDispatchMode):
    """Counts the aten ops that compute (views excluded): each is a CPU kernel or, on CUDA, about one
    kernel launch, the host-side cost that bounds eager batch-1 latency on a GPU."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.count += 1
        return func(*args, **(kwargs or {}))


def measure_infer(model, cfg, *, hw, batch, dtype, mode, iters, warmup, device, prepare) -> dict:
    """Time the eval forward (postprocessing to the input size included) under no_grad.

    ``prepare``: run a copy after ``prepare_for_inference()`` with INFERENCE_DTYPE = ``dtype`` (the
    deployable model; irreversible, hence the copy); else the model as trained, only ``.eval()``. The
    training-form model waits on the CPU meanwhile, so CUDA peak memory counts one model.
    """
    model.eval()
    inputs = make_inputs(batch, hw, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, device, labels=False)
    out = {}
    counter = OpCounter() if mode == "eager" else None  # a dispatch mode would break compilation
    runner = runner_model = model

    def forward():
        out.clear()  # no output of an earlier call alive (CUDA graphs reuse their output memory)
        if mode == "cudagraphs":
            torch.compiler.cudagraph_mark_step_begin()
        with torch.no_grad(), _autocast(device, dtype):
            out["last"] = runner(inputs)

    def counted_forward():
        with counter:
            forward()

    try:
        if prepare:
            model.to("cpu")
            runner_model = copy.deepcopy(model).to(device)
            runner_model.inference_dtype = DTYPES[dtype]
            runner_model.prepare_for_inference()
        _free(device)
        _reset_peak(device)
        runner = _compile(runner_model, mode)
        # Eager: the untimed first call also counts the ops.
        first_fn = counted_forward if counter is not None else forward
        res = _timed_calls(forward, iters=iters, warmup=warmup, device=device, first_fn=first_fn)
        res.update(_peak_memory(device))
        logits = out["last"][0]["sem_seg"]
        res["output_shape"] = list(logits.shape)
        res["output_finite"] = bool(torch.isfinite(logits).all())
    finally:
        out.clear()
        runner = runner_model = None  # the prepared copy goes before the model comes back
        if prepare:
            model.to(device)
        _free(device)
    if counter is not None:
        res["aten_ops_per_forward"] = counter.count
    res["prepared_for_inference"] = bool(prepare)
    res["pairs_per_s"] = batch / res["median_s"]
    res["latency_ms_per_pair"] = 1000 * res["median_s"] / batch
    return res


def count_flops(model, cfg, *, hw, device) -> dict:
    """Forward FLOPs of one RGB-T pair (eval forward, fp32, LoRA unmerged) with FlopCounterMode.

    FlopCounterMode counts a multiply-add as 2 FLOPs (matmuls, convolutions, attention); element-wise
    ops are not counted.
    """
    model.eval()
    inputs = make_inputs(1, hw, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, device, labels=False)
    counter = FlopCounterMode(display=False, depth=1)
    with torch.no_grad(), counter:
        model(inputs)
    total = counter.get_total_flops()
    by_module = {}
    for name, counts in counter.get_flop_counts().items():
        parts = name.split(".")
        if len(parts) == 2:  # "SARTM.backbone", "SARTM.fusion", ...
            by_module[parts[1]] = sum(counts.values()) / 1e9
    _free(device)
    return {
        "gflops_per_pair": total / 1e9,
        "gflops_by_module": by_module,
        "method": "torch.utils.flop_counter.FlopCounterMode (multiply-add = 2 FLOPs)",
    }


def prepare_data(
    cfg, data_root: str | None, hw: tuple[int, int], workdir: str
) -> tuple[str, list[dict], dict]:
    """The training records of the data-pipeline measurement.

    With ``--data-root``: ``cfg.DATASETS.TRAIN[0]`` registered under that root (an absent dataset
    fails here, before any measurement). Without: a synthetic set at ``hw`` (MFNet layout, so the
    same loader and mapper read it) is generated in a temporary folder.
    """
    if data_root:
        register_all_rgbt(data_root)
        name = cfg.DATASETS.TRAIN[0]
        info = {"source": "data-root", "root": os.path.abspath(data_root)}
    else:
        root = os.path.join(workdir, "data")
        t0 = time.perf_counter()
        generate_synthetic_rgbt(root, seed=0, num_train=32, num_val=1, num_test=1, height=hw[0], width=hw[1])
        register_all_rgbt(root, only=["synthetic"])
        name = "synthetic_rgbt_train"
        info = {
            "source": "synthetic (sartm_d2.data.synthetic)",
            "root": root,
            "image_size": list(hw),
            "generate_s": time.perf_counter() - t0,
        }
    records = DatasetCatalog.get(name)
    info.update(dataset=name, num_records=len(records))
    return name, records, info


def measure_data(cfg, records: list[dict], *, workers: int, batches: int, device: torch.device) -> dict:
    """Pairs/s of the training loader (real mapper, PNGs from disk) with ``workers`` loader workers."""
    batch = cfg.SOLVER.IMS_PER_BATCH
    mapper = RGBTDatasetMapper(cfg, is_train=True)
    loader = build_resumable_train_loader(
        records, mapper, total_batch_size=batch, seed=0, num_workers=workers, pin_memory=device.type == "cuda"
    )
    it = iter(loader)
    warmup = max(1, workers)  # every worker has delivered its first batch: start-up excluded
    t0 = time.perf_counter()
    for _ in range(warmup):
        next(it)
    startup = time.perf_counter() - t0
    n = batches
    t0 = time.perf_counter()
    for _ in range(n):
        sample = next(it)
    elapsed = time.perf_counter() - t0
    shape = list(sample[0]["image"].shape)
    del it, loader
    rate = n * batch / elapsed
    return {
        "workers": workers,
        "batch": batch,
        "batches": n,
        "startup_s": startup,
        "elapsed_s": elapsed,
        "pairs_per_s": rate,
        "pairs_per_s_per_worker": rate / max(workers, 1),
        "output_image_shape": shape,
        "pin_memory": device.type == "cuda",
    }


# ---------------------------------------------------------------------------------------- orchestration
def _guarded(spec: dict, fn) -> dict:
    """Run one measurement; an OOM or runtime/compile error is recorded instead of ending the run."""
    t0 = time.perf_counter()
    try:
        res = fn()
    except _ERRORS as e:
        logger.error(
            "%s failed: %s: %s", _describe(spec), type(e).__name__, str(e).splitlines()[0] if str(e) else ""
        )
        res = {"error": f"{type(e).__name__}: {e}"[:4000]}
    res = {**spec, **res, "wall_s": time.perf_counter() - t0}
    if "error" not in res:
        logger.info("%s: %s", _describe(spec), _short(res))
    return res


def _describe(spec: dict) -> str:
    keys = ("what", "size", "resolution", "batch", "dtype", "mode", "workers")
    return " ".join(f"{k}={spec[k]}" for k in keys if spec.get(k) is not None)


def _short(res: dict) -> str:
    if "median_s" in res:
        ms, rate, mem = 1000 * res["median_s"], res["pairs_per_s"], res["peak_mem_gib"]
        return f"median {ms:.1f} ms, {rate:.2f} pairs/s, peak {mem:.2f} GiB"
    if "gflops_per_pair" in res:
        return f"{res['gflops_per_pair']:.1f} GFLOPs per pair"
    if "pairs_per_s" in res:
        return f"{res['pairs_per_s']:.1f} pairs/s"
    return ""


def plan(args) -> list[dict]:
    """The model measurements of this run, in order.

    Sizes outermost (one model build per size). Within a size and resolution: FLOPs, eager training,
    eager inference, compiled inference, compiled training, so that a run cut short by
    ``--time-budget-s`` loses the slowest-to-prepare measurements (compiling a training step) first.
    """
    specs = []
    for size, hw in itertools.product(args.sizes, args.resolutions):
        res = f"{hw[0]}x{hw[1]}"
        group = []
        if "flops" in args.what:
            group.append({"what": "flops", "size": size, "resolution": res, "batch": 1})
        runs = []
        if "train" in args.what:
            # CUDA graphs: fixed-size inference only.
            modes = [m for m in args.modes if m != "cudagraphs"]
            runs += itertools.product(["train"], args.batch_sizes, args.dtypes, modes)
        if "infer" in args.what:
            runs += itertools.product(["infer"], args.infer_batch_sizes, args.dtypes, args.modes)
        for what, batch, dtype, mode in runs:
            group.append({"what": what, "size": size, "resolution": res, "batch": batch, "dtype": dtype,
                          "mode": mode})
        rank = {("flops", None): 0, ("train", "eager"): 1, ("infer", "eager"): 2}
        group.sort(key=lambda s: rank.get((s["what"], s.get("mode")), 3 if s["what"] == "infer" else 4))
        specs += group
    return specs


def run_spec(spec: dict, model, cfg, args, device) -> dict:
    hw = parse_resolution(spec["resolution"])
    common = {"padded_resolution": "x".join(map(str, padded(hw, cfg.INPUT.SIZE_DIVISIBILITY)))}
    if spec.get("mode") == "cudagraphs" and device.type != "cuda":
        return {**spec, **common, "skipped": "CUDA graphs need a CUDA device"}
    if spec["what"] == "flops":
        return _guarded({**spec, **common}, lambda: count_flops(model, cfg, hw=hw, device=device))
    # The first call (compilation, allocator warm-up) is never timed. Compiled models recompile once
    # more on the second call (sam2's PositionEmbeddingSine fills a cache dict that dynamo guards on).
    warmup = max(args.warmup, 1 if spec["mode"] == "eager" else COMPILED_MIN_WARMUP)
    kwargs = {"hw": hw, "batch": spec["batch"], "dtype": spec["dtype"], "mode": spec["mode"],
              "iters": args.iters, "warmup": warmup, "device": device}
    spec = {**spec, **common, "iters": args.iters, "warmup": warmup}
    if spec["what"] == "train":
        res = _guarded(spec, lambda: measure_train(model, cfg, **kwargs))
    else:
        res = _guarded(spec, lambda: measure_infer(model, cfg, prepare=args.prepare, **kwargs))
    _free(device)  # the optimizer state and activations of this measurement
    return res


def run_isolated(spec: dict, args) -> dict:
    """Run one measurement in a fresh process (``--single``), so its peak RSS is its own."""
    with tempfile.TemporaryDirectory(prefix="sartm_bench_") as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--config-file", args.config_file,
               "--device", args.device, "--iters", str(args.iters), "--warmup", str(args.warmup),
               "--prepare" if args.prepare else "--no-prepare",
               "--single", json.dumps(spec), "--single-out", out]
        if args.opts:
            cmd += ["--opts", *args.opts]
        logger.info("Running %s in a fresh process.", _describe(spec))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=False)
        if proc.returncode == 0 and os.path.isfile(out):
            with open(out) as f:
                return json.load(f)
        code = proc.returncode
        how = f"signal {-code} (9: killed, e.g. out of memory)" if code < 0 else f"exit status {code}"
        logger.error("%s: the measuring process ended with %s.", _describe(spec), how)
        return {**spec, "error": f"subprocess ended with {how}", "wall_s": time.perf_counter() - t0}


def run_single(args) -> None:
    """``--single``: one measurement in this process, result written to ``--single-out``."""
    spec = json.loads(args.single)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="sartm_bench_") as tmp:
        cfg = build_cfg(args.config_file, size=spec["size"], device=args.device, embeddings_dir=tmp,
                        opts=args.opts)
        model = build_benchmark_model(cfg)
        res = run_spec(spec, model, cfg, args, device)
        res.update(_count_params(model))
    with open(args.single_out, "w") as f:
        json.dump(res, f)


class Recorder:
    """Collects the results, rewrites the JSON after each one (a run killed by a time limit keeps what
    it measured) and skips what would start after ``--time-budget-s``."""

    def __init__(self, report: dict, path: str, budget_s: float | None):
        self.report, self.path, self.results = report, path, []
        self.deadline = None if budget_s is None else time.perf_counter() + budget_s

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def add(self, res: dict) -> None:
        self.results.append(res)
        self.save()

    def skip(self, spec: dict) -> None:
        self.add({**spec, "skipped": "time budget (--time-budget-s) used up"})

    def save(self) -> None:
        self.report["measurements"] = self.results
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.report, f, indent=1)
        os.replace(tmp, self.path)


def run_models(args, device, workdir: str, rec: Recorder) -> None:
    by_size: dict[str, list[dict]] = {}
    for spec in plan(args):
        by_size.setdefault(spec["size"], []).append(spec)
    for size, size_specs in by_size.items():
        if rec.out_of_time():
            for spec in size_specs:
                rec.skip(spec)
            continue
        if args.isolate:
            for spec in size_specs:
                if rec.out_of_time():
                    rec.skip(spec)
                else:
                    rec.add(run_isolated(spec, args))
            continue
        cfg = build_cfg(args.config_file, size=size, device=args.device, embeddings_dir=workdir,
                        opts=args.opts)
        try:
            model = build_benchmark_model(cfg)
        except _ERRORS as e:
            logger.error("Building Hiera-%s failed: %s", size, e)
            for spec in size_specs:
                rec.add({**spec, "error": f"model build: {type(e).__name__}: {e}"[:4000]})
            continue
        params = _count_params(model)
        logger.info("Hiera-%s: %.2f M parameters, %.2f M trainable.", size, params["params_m"],
                    params["trainable_params_m"])
        for spec in size_specs:
            if rec.out_of_time():
                rec.skip(spec)
            else:
                rec.add({**run_spec(spec, model, cfg, args, device), **params})
        del model
        torch.compiler.reset()
        _free(device)


def run_data(args, device, workdir: str, rec: Recorder) -> None:
    size = args.sizes[0] if args.sizes else "b+"
    cfg = build_cfg(args.config_file, size=size, device=args.device, embeddings_dir=workdir, opts=args.opts)
    name, records, info = prepare_data(cfg, args.data_root, args.resolutions[0], workdir)
    batches = max(args.data_batches, 3 * args.workers)  # the same batches with and without workers
    for workers in dict.fromkeys([0, args.workers]):
        spec = {"what": "data", "workers": workers, "dataset": name, "data": info,
                "crop": list(cfg.INPUT.CROP.SIZE) if cfg.INPUT.CROP.ENABLED else None}
        if rec.out_of_time():
            rec.skip(spec)
            continue
        rec.add(_guarded(spec, lambda w=workers: measure_data(cfg, records, workers=w, batches=batches,
                                                              device=device)))


def derive(results: list[dict], device: torch.device, machine: dict) -> dict:
    """Add TFLOP/s, fraction of peak, the MFNet-schedule estimate and the data projection in place."""
    flops = {
        (r["size"], r["resolution"]): r["gflops_per_pair"]
        for r in results
        if r["what"] == "flops" and "gflops_per_pair" in r
    }
    peak = machine.get("bf16_dense_peak_tflops")
    for r in results:
        if r["what"] not in ("train", "infer") or "pairs_per_s" not in r:
            continue
        if r["what"] == "train":
            r["mfnet_500_epochs_min"] = PAPER_EPOCHS * MFNET_TRAIN_PAIRS / r["pairs_per_s"] / 60
        gf = flops.get((r["size"], r["resolution"]))
        if gf is not None:
            factor = TRAIN_FLOPS_FACTOR if r["what"] == "train" else 1
            r["achieved_tflops"] = factor * gf * r["pairs_per_s"] / 1e3
            if device.type == "cuda" and peak:
                r["fraction_of_bf16_peak"] = r["achieved_tflops"] / peak
    train = [r for r in results if r["what"] == "train" and "pairs_per_s" in r]
    best = max(train, key=lambda r: r["pairs_per_s"], default=None)
    for r in results:
        if r["what"] != "data" or "pairs_per_s" not in r:
            continue
        r["projected_16_workers_pairs_per_s"] = 16 * r["pairs_per_s_per_worker"]
        if best is not None:
            r["vs_train"] = {
                "train": _describe(best),
                "train_pairs_per_s": best["pairs_per_s"],
                "ratio_16_workers": r["projected_16_workers_pairs_per_s"] / best["pairs_per_s"],
            }
    return {"best_train": _describe(best) if best else None}


def compare_official(results: list[dict]) -> None:
    """Add ``vs_official`` (issue 5's figures for the official release) to the matching CPU rows."""
    ref = OFFICIAL_REFERENCE
    for r in results:
        if r.get("size") != "b+" or r.get("resolution") != "1280x1280" or r.get("dtype") != "fp32":
            continue
        if "median_s" not in r and r.get("what") != "train":
            continue
        if r["what"] == "infer" and r["batch"] == 1:
            mid = sum(ref["infer_b1_s"]) / 2
            r["vs_official"] = {"official": "23-25 s", "ratio": r["median_s"] / mid}
        elif r["what"] == "train" and r["batch"] == 1 and "median_s" in r:
            r["vs_official"] = {
                "official": f"{ref['train_step_b1_s']:g} s, {ref['train_peak_rss_b1_gib']:g} GiB",
                "ratio": r["median_s"] / ref["train_step_b1_s"],
                "peak_ratio": r["peak_mem_gib"] / ref["train_peak_rss_b1_gib"],
            }
        elif r["what"] == "train" and r["batch"] == 2:
            r["vs_official"] = {"official": ref["train_b2"], "ours_fits": "median_s" in r}


def check_targets(results: list[dict]) -> list[dict]:
    """Issue 5's GPU targets (Hiera-B+, 480x640), for those this run measured."""
    rows = [r for r in results
            if r.get("size") == "b+" and r.get("resolution") == "480x640" and "pairs_per_s" in r]
    train = [r for r in rows if r["what"] == "train" and r["dtype"] == "bf16"]
    infer = [r for r in rows if r["what"] == "infer" and r["batch"] == 1]
    data = [r for r in results if r["what"] == "data" and "projected_16_workers_pairs_per_s" in r]
    out = []

    def add(name: str, value: float, limit: float, at_most: bool) -> None:
        met = value <= limit if at_most else value >= limit
        out.append({"target": name, "value": value, "limit": limit, "met": bool(met)})

    if train:
        best = max(train, key=lambda r: r["pairs_per_s"])
        add("train bf16 pairs/s", best["pairs_per_s"], TARGETS["train_bf16_pairs_s_min"], False)
        add("MFNet 500 epochs (min)", best["mfnet_500_epochs_min"], TARGETS["mfnet_schedule_min_max"], True)
        if data:
            ratio = max(r["projected_16_workers_pairs_per_s"] for r in data) / best["pairs_per_s"]
            add("data 16 workers / B+ train", ratio, TARGETS["data_16_workers_over_train_min"], False)
    b8 = [r["peak_mem_gib"] for r in train if r["batch"] == 8]
    if b8:  # "under 12 GiB"
        add("train bf16 b8 peak GiB", min(b8), TARGETS["train_bf16_b8_peak_gib_max"], True)
    compiled = [r["latency_ms_per_pair"] for r in infer if r["dtype"] == "bf16" and r["mode"] != "eager"]
    if compiled:
        add("infer b1 bf16 compiled ms", min(compiled), TARGETS["infer_b1_bf16_compiled_ms_max"], True)
    eager = [r["latency_ms_per_pair"] for r in infer if r["mode"] == "eager"]
    if eager:
        add("infer b1 eager ms", min(eager), TARGETS["infer_b1_eager_ms_max"], True)
    return out


def _fmt(v, digits=1):
    return "" if v is None else f"{v:.{digits}f}"


def format_table(results: list[dict], machine: dict) -> str:
    """One row per measurement; the machine in the title line."""
    from tabulate import tabulate

    headers = {
        "what": "what", "size": "Hiera", "res": "HxW", "batch": "batch", "dtype": "dtype", "mode": "mode",
        "ms": "ms (median)", "rate": "pairs/s", "mem": "peak GiB", "gflops": "GFLOPs/pair",
        "tflops": "TFLOP/s (% peak)", "schedule": "500 ep (min)", "notes": "notes",
    }
    rows = []
    for r in results:
        row = {"what": r["what"], "size": r.get("size", ""), "res": r.get("resolution", ""),
               "batch": r.get("batch", ""), "dtype": r.get("dtype", ""), "mode": r.get("mode", "")}
        note = r.get("error") or r.get("skipped") or ""
        note = note if len(note) <= 60 else note[:57] + "..."
        if r["what"] == "data":
            row.update(res="x".join(map(str, r.get("crop") or [])), mode=f"{r['workers']} workers")
            if "pairs_per_s" in r:
                per, proj = r["pairs_per_s_per_worker"], r["projected_16_workers_pairs_per_s"]
                note = f"{per:.1f}/worker -> 16 workers {proj:.0f}"
                if r.get("vs_train"):
                    note += f" = {r['vs_train']['ratio_16_workers']:.2f}x best train"
        elif r["what"] == "flops":
            row.update(dtype="fp32", gflops=_fmt(r.get("gflops_per_pair")))
        elif "median_s" in r:
            if "aten_ops_per_forward" in r:
                note = f"{r['aten_ops_per_forward']} aten ops/forward"
            tflops = _fmt(r.get("achieved_tflops"), 2)
            if "fraction_of_bf16_peak" in r:
                tflops += f" ({100 * r['fraction_of_bf16_peak']:.1f}%)"
            row.update(ms=_fmt(1000 * r["median_s"], 2), mem=_fmt(r["peak_mem_gib"], 2), tflops=tflops,
                       schedule=_fmt(r.get("mfnet_500_epochs_min")))
        ref = r.get("vs_official")
        if ref and "ratio" in ref:
            note = f"official {ref['official']}: time x{ref['ratio']:.2f}"
            if "peak_ratio" in ref:
                note += f", peak x{ref['peak_ratio']:.2f}"
        elif ref:
            note = f"official: {ref['official']}" + (f"; {note}" if note else "")
        row.update(rate=_fmt(r.get("pairs_per_s"), 2), notes=note)
        rows.append([row.get(k, "") for k in headers])
    title = (
        f"SARTM benchmark on {machine['card']} | CPU {machine['cpu_model']} x{machine['cpu_count']} | "
        f"torch {machine['torch']} | {machine['platform']}"
    )
    return title + "\n" + tabulate(rows, headers=list(headers.values()), tablefmt="github")


# ---------------------------------------------------------------------------------------- CLI
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--config-file", help="base config (default: configs/mfnet.yaml; --official-compare: pst900.yaml)")
    add("--sizes", nargs="+", choices=SIZES, help="Hiera sizes; custom = tiny (default: t s b+ l)")
    add("--resolutions", nargs="+", type=parse_resolution,
        help="input HxW, padded to a multiple of 32 by the model (default: 480x640 720x1280)")
    add("--batch-sizes", nargs="+", type=int, help="training batch sizes (default: 8 16)")
    add("--infer-batch-sizes", nargs="+", type=int, help="inference batch sizes (default: 1 16)")
    add("--dtypes", nargs="+", choices=list(DTYPES), help="fp32 and/or bf16 autocast (default: both)")
    add("--modes", nargs="+", choices=MODES,
        help="eager; compiled (torch.compile); cudagraphs (torch.compile mode reduce-overhead: CUDA, "
             "inference only) (default: eager compiled)")
    add("--device", help="cpu or cuda (default: cuda when available)")
    add("--iters", type=int, help="timed iterations (default: 10)")
    add("--warmup", type=int, help="untimed iterations first (default: 3; at least 1, 3 when compiled)")
    add("--what", nargs="+", choices=WHAT, help="measurements (default: all)")
    add("--json", help="write every measurement here (default: benchmark-<date>-<time>.json)")
    add("--data-root", help="dataset root holding the config's DATASETS.TRAIN[0] (default: a synthetic "
                            "set at the first resolution, generated in a temporary folder)")
    add("--workers", type=int, help="loader workers for 'data', besides 0 (default: min(16, cores))")
    add("--data-batches", type=int, default=8, help="timed batches for 'data' (at least 3 x workers)")
    add("--time-budget-s", type=float,
        help="start no measurement after this many seconds (the rest is recorded as skipped)")
    add("--prepare", action=argparse.BooleanOptionalAction, default=True,
        help="infer with model.prepare_for_inference() (LoRA merged; bf16: linear/conv weights stored "
             "in bf16 instead of cast by autocast on every call) (default: on)")
    add("--isolate", action="store_true",
        help="run each model measurement in a fresh process (peak RSS per configuration)")
    add("--official-compare", action="store_true",
        help="issue 5's CPU comparison with the official release: PST900 config (K=5), Hiera-B+, one "
             "1280x1280 pair, fp32, eager; inference at batch 1, training at batch 1 and 2, isolated")
    add("--single", help=argparse.SUPPRESS)  # internal: one measurement (a JSON spec), see run_isolated
    add("--single-out", help=argparse.SUPPRESS)
    add("--opts", nargs=argparse.REMAINDER, default=[],
        help="config overrides KEY VALUE ... (last), e.g. MODEL.SARTM.DISTILL.ENABLED False")
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults (those of --official-compare when given) and check the combination."""
    if args.official_compare:
        preset = {"config_file": str(_CONFIGS / "pst900.yaml"), "sizes": ["b+"],
                  "resolutions": [(1280, 1280)], "batch_sizes": [1, 2], "infer_batch_sizes": [1],
                  "dtypes": ["fp32"], "modes": ["eager"], "device": "cpu",
                  "what": ["flops", "infer", "train"], "iters": 1, "warmup": 1}
        for key, value in preset.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        args.isolate = True
    defaults = {"config_file": str(_CONFIGS / "mfnet.yaml"), "sizes": ["t", "s", "b+", "l"],
                "resolutions": [(480, 640), (720, 1280)], "batch_sizes": [8, 16],
                "infer_batch_sizes": [1, 16], "dtypes": ["fp32", "bf16"], "modes": ["eager", "compiled"],
                "device": "cuda" if torch.cuda.is_available() else "cpu", "iters": 10, "warmup": 3,
                "what": list(WHAT), "workers": min(16, os.cpu_count() or 1)}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available here; use --device cpu.")
    if args.iters < 1 or args.warmup < 0 or args.workers < 0 or args.data_batches < 1:
        raise ValueError("--iters and --data-batches must be >= 1, --warmup and --workers >= 0.")
    if min(args.batch_sizes + args.infer_batch_sizes) < 1:
        raise ValueError("--batch-sizes and --infer-batch-sizes must be >= 1.")
    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"--config-file {args.config_file!r} does not exist.")
    if args.single and not args.single_out:
        raise ValueError("--single needs --single-out.")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = resolve_args(get_parser().parse_args(argv))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.single:
        run_single(args)
        return {}
    device = torch.device(args.device)
    machine = machine_info(device)
    settings = {k: v for k, v in vars(args).items() if k not in ("single", "single_out")}
    settings["resolutions"] = [f"{h}x{w}" for h, w in args.resolutions]
    report = {
        "schema": SCHEMA,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine,
        "settings": settings,
        "notes": {
            "inputs": "random images and 32x32-block labels, already on the device (the loader is 'data')",
            "flops": "torch.utils.flop_counter.FlopCounterMode, eval forward of one RGB-T pair, fp32; a "
            "multiply-add counts 2 FLOPs; element-wise ops not counted",
            "train_tflops": f"{TRAIN_FLOPS_FACTOR} x forward FLOPs x pairs/s (backward ~ 2 x forward; "
            "an over-estimate with SARTM's frozen trunk)",
            "fraction_of_peak": f"of the card's bf16 dense peak, {PEAK_SOURCE}",
            "schedule": f"{PAPER_EPOCHS} epochs x {MFNET_TRAIN_PAIRS} MFNet pairs / train pairs/s",
            "data_projection": "16 x the measured pairs/s per worker; needs 16 free cores",
            "official_reference": OFFICIAL_REFERENCE if args.official_compare else None,
        },
    }
    path = args.json or f"benchmark-{time.strftime('%Y%m%d-%H%M%S')}.json"
    rec = Recorder(report, path, args.time_budget_s)
    with tempfile.TemporaryDirectory(prefix="sartm_bench_") as workdir:
        if "data" in args.what:  # first: quick, and independent of the model measurements
            run_data(args, device, workdir, rec)
        run_models(args, device, workdir, rec)
    results = rec.results
    report["summary"] = derive(results, device, machine)
    if args.official_compare:
        compare_official(results)
    report["targets"] = check_targets(results) if device.type == "cuda" else []
    for t in report["targets"]:
        verdict = "met" if t["met"] else "NOT met"
        logger.info("Target %-28s %.3g (limit %g): %s", t["target"], t["value"], t["limit"], verdict)
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rec.save()
    logger.info("Wrote %s.", rec.path)
    print(format_table(results, machine))
    return report


if __name__ == "__main__":
    main()
