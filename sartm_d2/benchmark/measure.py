"""Measuring: the benchmark's config, model and inputs, and the timing, memory, FLOP and op counts.

Nothing here judges or formats a figure (that is ``report``) or parses a command line (that is
``tools/benchmark.py``). The generic pieces take any zero-argument callable, so a new benchmark
row (another backend, another input) reuses the same method:

* ``time_calls({name: fn, ...}, iters=, warmup=, device=)``: the one timing loop: first calls timed
  apart, warm-up, then interleaved timed rounds (the order rotating), wall-clock and CPU time per call;
* ``measure_infer(forward, batch=, iters=, warmup=, device=, count_ops=)``: ``time_calls`` of one
  callable plus peak memory, the output's shape, pairs/s and latency, optionally the aten ops per call;
* ``measure_model_infer`` / ``measure_train`` / ``count_flops`` / ``measure_data``: the SARTM rows;
  ``measure_onnx_infer``: an exported graph in onnxruntime;
* ``measure_backends`` (onnxruntime graphs beside PyTorch eager) and ``measure_robust_cost`` (the
  robust model's additions): several callables timed together by ``time_calls``.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from sartm_d2 import get_sartm_cfg
from sartm_d2.data import RGBTDatasetMapper, get_classes, register_all_rgbt
from sartm_d2.data.synthetic import generate_synthetic_rgbt
from sartm_d2.engine import RGBTCheckpointer, build_optimizer, build_resumable_train_loader
from sartm_d2.modalities import CHANNELS
from sartm_d2.modeling import load_text_embeddings

DTYPES = {"fp32": None, "bf16": torch.bfloat16}
MODES = ("eager", "compiled", "cudagraphs")
_CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# Settings that make a random-weight model build without files (unless MODEL.WEIGHTS is given);
# applied before the caller's opts.
_BENCH_OPTS = ["MODEL.SARTM.DISTILL.TEACHER", "file"]
# "custom" is the tiny model of configs/quick_schedules/tiny-model.yaml (smoke tests; opts still override).
TINY_MODEL = _CONFIGS / "quick_schedules" / "tiny-model.yaml"
TEXT_DIM = 512  # CLIP ViT-B/32's text embedding width
LABEL_BLOCK = 32  # side of the random labels' constant blocks (pixels), so that regions span several pixels

Device = torch.device | str | None


# ---------------------------------------------------------------------------------- machine, memory
def padded(hw: tuple[int, int], divisibility: int) -> tuple[int, int]:
    """The size the model runs at: each side rounded up to a multiple of ``divisibility``, the built
    model's ``size_divisibility`` (``ImageList.from_tensors``)."""
    d = max(int(divisibility), 1)
    return tuple(int(math.ceil(v / d) * d) for v in hw)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# The CPU flags that decide the INT8 and bf16 ratios (names as /proc/cpuinfo spells them): int8 dot
# products (avx512_vnni, avx_vnni: without them onnxruntime's int8 kernels use 16-bit intermediate sums),
# bf16 arithmetic (avx512_bf16, amx_bf16) and the AMX tiles.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_flags() -> dict[str, bool]:
    """Which of ``CPU_FLAGS`` the CPU has (from /proc/cpuinfo; all False where it cannot be read)."""
    found: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    found = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {flag: flag in found for flag in CPU_FLAGS}


def machine_info(device: torch.device) -> dict:
    """Platform, CPU, core count, library versions and the card (or "cpu").

    The card's bf16 peak is reference data, added by the caller (``report.bf16_peak_tflops``).
    """
    import detectron2
    import sam2

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_flags": cpu_flags(),
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
        )
    return info


def _is_cuda(device: Device) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def sync(device: Device) -> None:
    """Wait for the card's queued work (a no-op on the CPU or with ``device=None``)."""
    if _is_cuda(device):
        torch.cuda.synchronize(device)


def free_memory(device: Device) -> None:
    gc.collect()
    if _is_cuda(device):
        torch.cuda.empty_cache()


def reset_peak_memory(device: Device) -> None:
    if _is_cuda(device):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: Device) -> dict:
    """CUDA: peak allocated since ``reset_peak_memory``; otherwise the process's peak RSS."""
    if _is_cuda(device):
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


# ---------------------------------------------------------------------------------------- timing
def time_calls(
    fns: Mapping[str, Callable[[], object]],
    *,
    iters: int,
    warmup: int,
    device: Device = None,
    first_fns: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, dict]:
    """Time zero-argument callables in interleaved rounds, so that a shared machine's load falls on all
    alike; one callable is the same with one entry (``time_calls({"f": f}, ...)["f"]``).

    Each callable's first call (``first_fns[name]``, default the callable) is timed apart (compilation,
    allocator warm-up, session start-up); then ``warmup - 1`` untimed rounds; then ``iters`` timed
    rounds, each calling every callable once, the order rotating by one per round so that none always
    runs after the same one. On a CUDA ``device`` each timed call ends with a synchronisation, so queued
    kernels count; ``device=None`` suits callables that return only when done (onnxruntime, the CPU).

    Returns, per name: ``first_call_s``, ``times_s`` (wall clock), ``cpu_times_s`` (this process's CPU
    time, all threads: unlike the wall clock, not lengthened by other processes), ``median_s``,
    ``mean_s``, ``min_s`` and ``median_cpu_s``.
    """
    if iters < 1:
        raise ValueError(f"time_calls: iters must be >= 1, got {iters}")
    if not fns:
        raise ValueError("time_calls: nothing to time")
    names = list(fns)
    first_fns = first_fns or {}
    first = {}
    for name in names:
        t0 = time.perf_counter()
        first_fns.get(name, fns[name])()
        sync(device)
        first[name] = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        for name in names:
            fns[name]()
    sync(device)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(iters):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            fns[name]()
            sync(device)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {
        name: {
            "first_call_s": first[name],
            "times_s": wall[name],
            "cpu_times_s": cpu[name],
            "median_s": statistics.median(wall[name]),
            "mean_s": statistics.fmean(wall[name]),
            "min_s": min(wall[name]),
            "median_cpu_s": statistics.median(cpu[name]),
        }
        for name in names
    }


def ratios_over(timings: dict[str, dict], base: str) -> tuple[dict[str, float], dict[str, float]]:
    """Each entry's median wall-clock and CPU time over ``base``'s, from one ``time_calls`` result."""
    ref = timings[base]
    wall = {n: t["median_s"] / ref["median_s"] for n, t in timings.items() if n != base}
    cpu = {n: t["median_cpu_s"] / ref["median_cpu_s"] for n, t in timings.items() if n != base}
    return wall, cpu


def autocast(device: torch.device, dtype: str):
    """bf16: ``torch.autocast`` (no grad scaler: bf16 has fp32's range); fp32: no autocast at all."""
    if DTYPES[dtype] is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def compile_model(model, mode: str):
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
    """Config file, then the benchmark's random-weight settings and size defaults, then ``opts``.

    With MODEL.WEIGHTS (in the file or ``opts``) the model is the trained one: its text embeddings
    come from the checkpoint, so the config's teacher is kept (and never built).
    """
    trained = bool(get_sartm_cfg(config_file, list(opts)).MODEL.WEIGHTS)
    cfg = get_sartm_cfg(config_file, [] if trained else _BENCH_OPTS)
    if size == "custom":
        cfg.merge_from_file(str(TINY_MODEL))
    cfg.merge_from_list(list(opts))
    cfg.MODEL.SAM2.SIZE = size
    cfg.MODEL.DEVICE = device
    distill = cfg.MODEL.SARTM.DISTILL
    if not trained and distill.TEACHER == "file" and not distill.EMBEDDINGS_FILE:
        datasets = cfg.DATASETS.TRAIN if len(cfg.DATASETS.TRAIN) else cfg.DATASETS.TEST
        names, _ = get_classes(datasets[0], cfg.DATASETS.BACKGROUND_AS_IGNORE)
        path = os.path.join(embeddings_dir, f"text_embeddings_{len(names)}.pt")
        if not os.path.isfile(path):
            write_random_text_embeddings(path, names)
        cfg.MODEL.SARTM.DISTILL.EMBEDDINGS_FILE = path
    cfg.freeze()
    return cfg


def make_inputs(
    batch: int, hw: tuple[int, int], num_classes: int, device: torch.device, *, labels: bool, seed: int = 0,
    modalities: str = "rgbt",
) -> list[dict]:
    """Random mapper-style dicts already on ``device`` (the loader is measured apart, by ``data``).

    Labels are random ``LABEL_BLOCK`` x ``LABEL_BLOCK``-pixel blocks of class ids with 5% ignore, so
    that several classes are present (the distillation then has prototypes to compare).
    ``modalities`` ("rgbt", "rgb", "thermal") says which streams the model gets (the others are not
    computed).
    """
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    out = []
    for _ in range(batch):
        d = {"image": (torch.rand(4, h, w, generator=g) * 255).to(device), "height": h, "width": w}
        if modalities != "rgbt":
            d["modalities"] = modalities
        if labels:
            b = LABEL_BLOCK
            cells = torch.randint(0, num_classes, (math.ceil(h / b), math.ceil(w / b)), generator=g)
            sem = cells.repeat_interleave(b, 0).repeat_interleave(b, 1)[:h, :w].clone()
            sem[torch.rand(h, w, generator=g) < 0.05] = 255
            d["sem_seg"] = sem.to(device)
        out.append(d)
    return out


def build_benchmark_model(cfg) -> torch.nn.Module:
    """``build_model`` with a fixed seed, then MODEL.WEIGHTS (strictly) or the random embeddings.

    The model stays as trained (not prepared): ``infer`` prepares a copy. cuDNN autotuning follows
    the config's CUDNN_BENCHMARK.
    """
    torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK)
    torch.manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        RGBTCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    else:
        load_text_embeddings(model, cfg)  # the random TEACHER "file" embeddings
    return model


def count_params(model) -> dict:
    params = list(model.parameters())
    return {
        "params_m": sum(p.numel() for p in params) / 1e6,
        "trainable_params_m": sum(p.numel() for p in params if p.requires_grad) / 1e6,
    }


# ---------------------------------------------------------------------------------------- measurements
def measure_train(model, cfg, *, hw, batch, dtype, mode, iters, warmup, device) -> dict:
    """Time forward + backward + optimizer step; pairs/s = batch / median step time."""
    model.train()
    free_memory(device)
    reset_peak_memory(device)
    optimizer = build_optimizer(cfg, model)
    runner = compile_model(model, mode)
    inputs = make_inputs(batch, hw, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, device, labels=True)
    losses = {}

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss_dict = runner(inputs)
        total = sum(loss_dict.values())
        total.backward()
        optimizer.step()
        losses["last"] = loss_dict

    try:
        res = time_calls({"step": step}, iters=iters, warmup=warmup, device=device)["step"]
        res.update(peak_memory(device))
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


def _output_summary(output) -> dict:
    """Shape and finiteness of the first output: SARTM's ``[{"sem_seg": logits}, ...]``, a tensor,
    or an array (onnxruntime returns a list of them); ``{}`` for anything else."""
    if isinstance(output, (list, tuple)) and output:
        output = output[0]
    if isinstance(output, dict) and "sem_seg" in output:
        output = output["sem_seg"]
    if isinstance(output, torch.Tensor):
        return {"output_shape": list(output.shape), "output_finite": bool(torch.isfinite(output).all())}
    if isinstance(output, np.ndarray):
        return {"output_shape": list(output.shape), "output_finite": bool(np.isfinite(output).all())}
    return {}


def measure_infer(
    forward: Callable[[], object],
    *,
    batch: int,
    iters: int,
    warmup: int,
    device: Device = None,
    count_ops: bool = False,
    reset_memory: bool = True,
) -> dict:
    """Time any inference callable that runs ``batch`` pairs per call and returns its output.

    Peak memory counts from here (``reset_memory``: garbage collected, peak reset) or, with
    ``reset_memory=False``, from the caller's own reset, so that what it set up on the device in
    between counts. The last output is released before each call (CUDA graphs reuse their output
    memory) and before returning. ``count_ops``: the untimed first call also counts the aten ops
    dispatched (``OpCounter``; eager PyTorch only, a dispatch mode breaks compilation).

    Returns ``time_calls``'s figures, ``peak_memory``'s, ``output_shape``/``output_finite`` (see
    ``_output_summary``), ``pairs_per_s``, ``latency_ms_per_pair`` and, with ``count_ops``,
    ``aten_ops_per_forward``.
    """
    out = {}
    counter = OpCounter() if count_ops else None

    def call():
        out.clear()
        out["last"] = forward()

    def counted_call():
        with counter:
            call()

    try:
        if reset_memory:
            free_memory(device)
            reset_peak_memory(device)
        first_fns = {"forward": counted_call} if counter is not None else None
        res = time_calls({"forward": call}, iters=iters, warmup=warmup, device=device,
                         first_fns=first_fns)["forward"]
        res.update(peak_memory(device))
        res.update(_output_summary(out["last"]))
    finally:
        out.clear()
    if counter is not None:
        res["aten_ops_per_forward"] = counter.count
    res["pairs_per_s"] = batch / res["median_s"]
    res["latency_ms_per_pair"] = 1000 * res["median_s"] / batch
    return res


def measure_model_infer(model, cfg, *, hw, batch, dtype, mode, iters, warmup, device, prepare,
                        modalities: str = "rgbt") -> dict:
    """SARTM's eval forward (postprocessing to the input size included) under no_grad, timed by
    ``measure_infer`` on random inputs of ``hw`` with ``modalities``; aten ops counted in eager mode.

    ``prepare``: run a copy after ``prepare_for_inference()`` with INFERENCE_DTYPE = ``dtype`` (the
    deployable model; irreversible, hence the copy); else the model as trained, only ``.eval()``. The
    training-form model waits on the CPU meanwhile, so CUDA peak memory counts one model.
    """
    model.eval()
    inputs = make_inputs(batch, hw, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, device, labels=False,
                         modalities=modalities)
    runner = runner_model = model

    def forward():
        if mode == "cudagraphs":
            torch.compiler.cudagraph_mark_step_begin()
        with torch.no_grad(), autocast(device, dtype):
            return runner(inputs)

    try:
        if prepare:
            model.to("cpu")
            runner_model = copy.deepcopy(model).to(device)
            runner_model.inference_dtype = DTYPES[dtype]
            runner_model.prepare_for_inference()
        free_memory(device)
        reset_peak_memory(device)
        runner = compile_model(runner_model, mode)
        res = measure_infer(forward, batch=batch, iters=iters, warmup=warmup, device=device,
                            count_ops=mode == "eager", reset_memory=False)
    finally:
        runner = runner_model = None  # the prepared copy goes before the model comes back
        if prepare:
            model.to(device)
        free_memory(device)
    res["prepared_for_inference"] = bool(prepare)
    return res


ONNX_DTYPES = ("fp32", "int8", "int8-dynamic")
# What ``measure_backends`` compares: onnxruntime graphs (fp32, static QDQ INT8, dynamic INT8, the
# one-camera RGB graph) and PyTorch eager (prepared, fp32 and bf16), all on the same raw image.
BACKENDS = ("onnxruntime_fp32", "onnxruntime_int8", "onnxruntime_int8_dynamic", "onnxruntime_fp32_rgb",
            "pytorch_fp32", "pytorch_bf16")
# The backends the others are compared with, each in this run (``measure_backends``'s ``ratios``).
BACKEND_BASES = ("pytorch_fp32", "onnxruntime_fp32", "pytorch_bf16")


def _prepared_copy(model, dtype: str):
    """A copy of ``model`` on the CPU after ``prepare_for_inference()`` with INFERENCE_DTYPE ``dtype``
    (irreversible, hence the copy)."""
    prepared = copy.deepcopy(model).to("cpu").eval()
    prepared.inference_dtype = DTYPES[dtype]
    return prepared.prepare_for_inference()


def _export_module(prepared, cfg, hw: tuple[int, int], modalities: str = "rgbt"):
    """``ExportableSARTM`` of a prepared model at ``hw``, padded to the model's own size divisibility."""
    from ..export import ExportableSARTM, export_geometry

    g = export_geometry(*hw, min_size_test=cfg.INPUT.MIN_SIZE_TEST, max_size_test=cfg.INPUT.MAX_SIZE_TEST,
                        size_divisibility=prepared.size_divisibility)
    return ExportableSARTM(prepared, g, modalities).eval()


def _random_int8(fp32_path: str, dst: str, dtype: str, channels: int, hw: tuple[int, int],
                 calibration_images: int, rng: np.random.Generator) -> dict:
    """``fp32_path`` quantized into ``dst`` as ``export_model.py --dtype int8`` does ("int8": static QDQ
    calibrated on ``calibration_images`` random images; "int8-dynamic": ``--quantization dynamic``),
    without the gate: random weights have no accuracy to keep."""
    from ..export import QuantizationSettings
    from ..export.int8_graph import quantize_graph

    settings = QuantizationSettings(mode="dynamic" if dtype == "int8-dynamic" else "static")
    count = calibration_images if settings.mode == "static" else 0
    calibration = [rng.integers(0, 256, size=(channels, *hw)).astype(np.float32) for _ in range(count)]
    return quantize_graph(fp32_path, dst, settings, calibration)


def measure_onnx_infer(model, cfg, *, hw, iters, warmup, workdir: str, dtype: str = "fp32",
                       threads: int | None = None, modalities: str = "rgbt",
                       calibration_images: int = 2) -> dict:
    """onnxruntime on the CPU: the prepared fp32 model exported as ``tools/export_model.py`` does
    (raw (1, 4, H, W) image in; normalisation, padding, resize and argmax in the graph), timed by
    ``measure_infer`` on one random image; the export time and file size too.

    ``dtype`` "int8" / "int8-dynamic": the graph quantized as ``_random_int8`` says. ``modalities``
    "rgb" / "thermal": a one-camera graph. ``threads``: onnxruntime's intra-op threads (default: all
    cores).
    """
    from ..export import create_session
    from ..export.exporter import write_onnx

    if dtype not in ONNX_DTYPES:
        raise ValueError(f"onnx dtype must be one of {ONNX_DTYPES}, got {dtype!r}.")
    path = os.path.join(workdir, "benchmark.onnx")
    t0 = time.perf_counter()
    write_onnx(_export_module(_prepared_copy(model, "fp32"), cfg, hw, modalities), path)
    export_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    channels = len(CHANNELS[modalities])
    extra = {"fp32_onnx_mb": os.path.getsize(path) / 1e6}
    if dtype != "fp32":
        quantized = os.path.join(workdir, "benchmark_int8.onnx")
        extra["quantization"] = _random_int8(path, quantized, dtype, channels, hw, calibration_images, rng)
        path = quantized
    session = create_session(path, threads=threads)
    image = rng.integers(0, 256, size=(1, channels, *hw)).astype(np.float32)
    res = measure_infer(lambda: session.run(None, {"image": image}), batch=1, iters=iters, warmup=warmup)
    res.update(export_s=export_s, onnx_mb=os.path.getsize(path) / 1e6, providers=session.get_providers(),
               onnxruntime=__import__("onnxruntime").__version__,
               onnxruntime_threads=session.get_session_options().intra_op_num_threads, **extra)
    return res


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """PyTorch's intra-op threads set to ``threads`` inside (None: unchanged), restored after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure_backends(model, cfg, *, hw, iters, warmup, workdir: str, backends: Sequence[str] = BACKENDS,
                     threads: int | None = None, calibration_images: int = 4, profile: bool = False) -> dict:
    """The same random raw image through ``backends`` (of ``BACKENDS``), on the CPU, timed together by
    ``time_calls`` (interleaved rounds: a shared machine's load falls on all alike).

    Every backend does the same work: normalise, pad, SARTM, crop, argmax (``ExportableSARTM``, the
    module that is exported; the RGB graph gets the image's RGB channels). The onnxruntime graphs are
    made as ``measure_onnx_infer`` makes them; PyTorch runs prepared copies of ``model`` in eager mode.
    ``threads`` (default: all CPUs) is both runtimes' intra-op threads.

    Returns ``timings`` (``time_calls``'s figures per backend), ``ratios`` (``over_<base>`` and
    ``cpu_over_<base>`` for each base of ``BACKEND_BASES`` timed), ``parity_random_input`` (argmax
    agreement and max |logit difference| of the timed outputs against PyTorch fp32 with the same
    cameras), ``onnx_mb``, ``export_s`` (fp32 graphs) and ``quantization`` (INT8 graphs) per graph
    and, with ``profile``, ``onnxruntime_profile`` (``ort_op_profile`` per graph).
    """
    from ..export import create_session
    from ..export.exporter import write_onnx
    from ..export.runtime import cpu_threads

    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise ValueError(f"backends must be some of {list(BACKENDS)}, got {list(backends)}.")
    threads = int(threads or cpu_threads())
    fp32 = _export_module(_prepared_copy(model, "fp32"), cfg, hw)
    rgb = _export_module(fp32.model, cfg, hw, "rgb")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(1, 4, *hw)).astype(np.float32)
    inputs = {"rgbt": image, "rgb": np.ascontiguousarray(image[:, :3])}
    files, export_s, quantization = {}, {}, {}
    int8 = {"onnxruntime_int8": "int8", "onnxruntime_int8_dynamic": "int8-dynamic"}
    graphs = {"onnxruntime_fp32": fp32, "onnxruntime_fp32_rgb": rgb}
    for name, module in graphs.items():  # the fp32 graph also when only its INT8 forms are timed
        if name in backends or (name == "onnxruntime_fp32" and set(int8) & set(backends)):
            files[name] = os.path.join(workdir, f"backend_{name}.onnx")
            t0 = time.perf_counter()
            write_onnx(module, files[name])
            export_s[name] = time.perf_counter() - t0
    for name, dtype in int8.items():
        if name in backends:
            files[name] = os.path.join(workdir, f"backend_{name}.onnx")
            quantization[name] = _random_int8(files["onnxruntime_fp32"], files[name], dtype, 4, hw,
                                              calibration_images, rng)
    x = torch.from_numpy(image)
    cameras = {name: "rgb" if name.endswith("_rgb") else "rgbt" for name in backends}
    outputs: dict[str, list] = {}

    def onnx_call(name):
        session = create_session(files[name], threads=threads)
        feed = {"image": inputs[cameras[name]]}

        def run():
            outputs[name] = session.run(None, feed)
        return run

    def torch_call(name, module):
        def run():
            with torch.no_grad():
                outputs[name] = module(x)
        return run

    with torch_threads(threads):
        fns = {}
        for name in backends:
            if name == "pytorch_fp32":
                fns[name] = torch_call(name, fp32)
            elif name == "pytorch_bf16":
                fns[name] = torch_call(name, _export_module(_prepared_copy(model, "bf16"), cfg, hw))
            else:
                fns[name] = onnx_call(name)
        timings = time_calls(fns, iters=iters, warmup=warmup)
        with torch.no_grad():  # the references: PyTorch fp32 with both streams, and with RGB alone
            refs = {"rgbt": [t.numpy() for t in fp32(x)[:2]], "rgb": [t.numpy() for t in rgb(x[:, :3])[:2]]}
    parity = {}
    for name, out in outputs.items():
        logits, labels = (v.float().numpy() if isinstance(v, torch.Tensor) else v for v in out[:2])
        want_logits, want_labels = refs[cameras[name]]
        parity[name] = {"max_abs_logit_diff_vs_pytorch_fp32": float(np.abs(logits - want_logits).max()),
                        "argmax_agreement_vs_pytorch_fp32": float((labels == want_labels).mean())}
    ratios = {}
    for base in BACKEND_BASES:
        if base in timings:
            ratios[f"over_{base}"], ratios[f"cpu_over_{base}"] = ratios_over(timings, base)
    res = {
        "export_s": export_s,
        "onnx_mb": {name: os.path.getsize(path) / 1e6 for name, path in files.items() if name in backends},
        "quantization": quantization,
        "timings": timings,
        "ratios": ratios,
        "parity_random_input": parity,
        "torch_threads": threads,
        "onnxruntime_threads": threads,
        "onnxruntime": __import__("onnxruntime").__version__,
        "onnx": __import__("onnx").__version__,
    }
    if profile:
        res["onnxruntime_profile"] = {
            name: ort_op_profile(path, inputs[cameras[name]], workdir, threads)
            for name, path in files.items() if name in backends
        }
    return res


def ort_op_profile(onnx_path: str, image: np.ndarray, workdir: str, threads: int | None = None) -> dict:
    """Milliseconds per ONNX op type in one run profiled by onnxruntime (after one warm-up run),
    largest first, and their total."""
    from ..export import create_session

    session = create_session(onnx_path, threads=threads, enable_profiling=True,
                             profile_file_prefix=os.path.join(workdir, "ort_profile"))
    session.run(None, {"image": image})
    session.run(None, {"image": image})
    with open(session.end_profiling()) as f:
        events = json.load(f)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    last_start = runs[-1]["ts"] if runs else 0
    per_op: dict[str, float] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= last_start:
            per_op[e["args"]["op_name"]] += e["dur"] / 1000.0
    return {"total_kernel_ms": sum(per_op.values()),
            "ms_per_op_type": dict(sorted(per_op.items(), key=lambda kv: -kv[1]))}


# What ``measure_robust_cost`` compares: the plain model (the paper's fusion, fixed thermal
# normalisation), the same with the per-image thermal stretch, and the robust any-modality model of
# configs/*-anymodal.yaml (reliability fusion: trust gates with saturation cues, hallucinating stand-ins;
# the learned thermal gain correction).
ROBUST_VARIANTS = {
    "plain": ["MODEL.SARTM.FUSION", "paper", "INPUT.THERMAL_NORM", "none"],
    "plain, thermal stretch": ["MODEL.SARTM.FUSION", "paper", "INPUT.THERMAL_NORM", "stretch"],
    "robust (reliability, hallucinating stand-ins, gain correction)": [
        "MODEL.SARTM.FUSION", "reliability", "MODEL.SARTM.ROBUST.STANDIN", "hallucinate",
        "MODEL.SARTM.ROBUST.THERMAL_GAIN_CORRECTION", "True", "INPUT.THERMAL_NORM", "none",
    ],
}


def measure_robust_cost(config_file: str, *, size: str, hw, iters, warmup, device, embeddings_dir: str,
                        opts: Sequence[str] = ()) -> dict:
    """What the robust model's additions cost at inference: the models of ``ROBUST_VARIANTS`` (each
    ``build_cfg`` with ``opts`` then the variant's options; random weights, prepared for inference
    like ``--eval-only``, fp32, eager) timed together by ``time_calls`` on one random input.

    Returns ``timings`` (per variant), ``variants`` (their options), ``base`` (the first variant),
    ``ratios`` and ``cpu_ratios`` (median wall-clock and CPU time over the base's).
    """
    device = torch.device(device)
    models, cfg = {}, None
    for name, variant in ROBUST_VARIANTS.items():
        cfg = build_cfg(config_file, size=size, device=str(device), embeddings_dir=embeddings_dir,
                        opts=[*opts, *variant])
        models[name] = build_benchmark_model(cfg).prepare_for_inference()
    inputs = make_inputs(1, hw, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, device, labels=False)

    def call(model):
        def run():
            with torch.no_grad():
                model(inputs)
        return run

    try:
        timings = time_calls({name: call(m) for name, m in models.items()}, iters=iters, warmup=warmup,
                             device=device)
    finally:
        models.clear()
        free_memory(device)
    base = next(iter(ROBUST_VARIANTS))
    wall, cpu = ratios_over(timings, base)
    return {"timings": timings, "variants": dict(ROBUST_VARIANTS), "base": base,
            "ratios": {base: 1.0, **wall}, "cpu_ratios": {base: 1.0, **cpu}}


def count_flops(model, cfg, *, hw, device, modalities: str = "rgbt") -> dict:
    """Forward FLOPs of one input (eval forward, fp32, LoRA unmerged) with FlopCounterMode.

    FlopCounterMode counts a multiply-add as 2 FLOPs (matmuls, convolutions, attention); element-wise
    ops are not counted. Parameters are counted frozen: the counter's module hooks refuse a module
    input that is a parameter requiring grad (the reliability fusion passes its "absent" embeddings
    to its stand-ins).
    """
    model.eval()
    k = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    inputs = make_inputs(1, hw, k, device, labels=False, modalities=modalities)
    counter = FlopCounterMode(display=False, depth=1)
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in trainable:
            p.requires_grad_(False)
        with torch.no_grad(), counter:
            model(inputs)
    finally:
        for p in trainable:
            p.requires_grad_(True)
    total = counter.get_total_flops()
    by_module = {}
    for name, counts in counter.get_flop_counts().items():
        parts = name.split(".")
        if len(parts) == 2:  # "SARTM.backbone", "SARTM.fusion", ...
            by_module[parts[1]] = sum(counts.values()) / 1e9
    free_memory(device)
    return {
        "gflops_per_pair": total / 1e9,
        "gflops_by_module": by_module,
        "method": "torch.utils.flop_counter.FlopCounterMode (multiply-add = 2 FLOPs)",
    }


# ---------------------------------------------------------------------------------------- data
def prepare_data(
    cfg, data_root: str | None, hw: tuple[int, int], workdir: str
) -> tuple[str, list[dict], dict]:
    """The training records of the data-pipeline measurement.

    With ``data_root``: ``cfg.DATASETS.TRAIN[0]`` registered under that root (an absent dataset
    fails here, before any measurement). Without: a synthetic set at ``hw`` (MFNet layout, so the
    same loader and mapper read it) is generated in ``workdir``.
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
