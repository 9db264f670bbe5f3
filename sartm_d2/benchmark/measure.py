"""Measuring: the benchmark's config, model and inputs, and the timing, memory, FLOP and op counts.

Nothing here judges or formats a figure (that is ``report``) or parses a command line (that is
``tools/benchmark.py``). The generic pieces take any zero-argument callable, so a new benchmark
row (another backend, another input) reuses the same method:

* ``time_calls(fn, iters=, warmup=, device=)``: first call timed apart, warm-up, timed calls;
* ``measure_infer(forward, batch=, iters=, warmup=, device=, count_ops=)``: ``time_calls`` plus
  peak memory, the output's shape, pairs/s and latency, optionally the aten ops per call;
* ``measure_model_infer`` / ``measure_train`` / ``count_flops`` / ``measure_data``: the SARTM rows.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
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

Device = torch.device | str | None


# ---------------------------------------------------------------------------------- machine, memory
def padded(hw: tuple[int, int], divisibility: int = 32) -> tuple[int, int]:
    """The size the model runs at: each side rounded up to a multiple of ``divisibility``."""
    return tuple(int(math.ceil(v / divisibility) * divisibility) for v in hw)


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
    fn: Callable[[], object],
    *,
    iters: int,
    warmup: int,
    device: Device = None,
    first_fn: Callable[[], object] | None = None,
) -> dict:
    """Time any zero-argument callable.

    ``first_fn`` (default ``fn``) is called once and timed apart (compilation, allocator warm-up),
    then ``fn`` ``warmup - 1`` more times untimed, then ``iters`` times timed. On a CUDA ``device``
    each timed call ends with a synchronisation, so queued kernels count; ``device=None`` suits
    callables that return only when done (onnxruntime, the CPU).
    """
    if iters < 1:
        raise ValueError(f"time_calls: iters must be >= 1, got {iters}")
    t0 = time.perf_counter()
    (first_fn or fn)()
    sync(device)
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return {
        "first_call_s": first,
        "times_s": times,
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "min_s": min(times),
    }


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

    Labels are random 32x32-pixel blocks of class ids with 5% ignore, so that several classes are
    present (the distillation then has prototypes to compare). ``modalities`` ("rgbt", "rgb",
    "thermal") says which streams the model gets (the others are not computed).
    """
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    out = []
    for _ in range(batch):
        d = {"image": (torch.rand(4, h, w, generator=g) * 255).to(device), "height": h, "width": w}
        if modalities != "rgbt":
            d["modalities"] = modalities
        if labels:
            cells = torch.randint(0, num_classes, (math.ceil(h / 32), math.ceil(w / 32)), generator=g)
            sem = cells.repeat_interleave(32, 0).repeat_interleave(32, 1)[:h, :w].clone()
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
        res = time_calls(step, iters=iters, warmup=warmup, device=device)
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
        first_fn = counted_call if counter is not None else call
        res = time_calls(call, iters=iters, warmup=warmup, device=device, first_fn=first_fn)
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


def measure_onnx_infer(model, cfg, *, hw, iters, warmup, workdir: str, dtype: str = "fp32",
                       threads: int | None = None, modalities: str = "rgbt",
                       calibration_images: int = 2) -> dict:
    """onnxruntime on the CPU: the prepared fp32 model exported as ``tools/export_model.py`` does
    (raw (1, 4, H, W) image in; normalisation, padding, resize and argmax in the graph), timed by
    ``time_calls`` on one random image; the export time and file size too.

    ``dtype`` "int8": static QDQ as ``export_model.py --dtype int8`` makes it (calibrated on
    ``calibration_images`` random images; no gate: random weights have no accuracy to keep);
    "int8-dynamic": ``--quantization dynamic``. ``modalities`` "rgb" / "thermal": a one-camera graph.
    ``threads``: onnxruntime's intra-op threads (default: all cores).
    """
    from ..export import ExportableSARTM, QuantizationSettings, create_session, export_geometry
    from ..export.exporter import write_onnx
    from ..export.int8_graph import quantize_graph

    if dtype not in ONNX_DTYPES:
        raise ValueError(f"onnx dtype must be one of {ONNX_DTYPES}, got {dtype!r}.")

    g = export_geometry(*hw, min_size_test=cfg.INPUT.MIN_SIZE_TEST, max_size_test=cfg.INPUT.MAX_SIZE_TEST,
                        size_divisibility=model.size_divisibility)
    prepared = copy.deepcopy(model).to("cpu").eval()
    prepared.inference_dtype = None  # fp32: what is exported
    prepared.prepare_for_inference()
    path = os.path.join(workdir, "benchmark.onnx")
    t0 = time.perf_counter()
    write_onnx(ExportableSARTM(prepared, g, modalities).eval(), path)
    export_s = time.perf_counter() - t0
    del prepared
    rng = np.random.default_rng(0)
    channels = len(CHANNELS[modalities])
    extra = {"fp32_onnx_mb": os.path.getsize(path) / 1e6}
    if dtype != "fp32":
        quantized = os.path.join(workdir, "benchmark_int8.onnx")
        settings = QuantizationSettings(mode="dynamic" if dtype == "int8-dynamic" else "static")
        calibration = [rng.integers(0, 256, size=(channels, *hw)).astype(np.float32)
                       for _ in range(calibration_images if settings.mode == "static" else 0)]
        extra["quantization"] = quantize_graph(path, quantized, settings, calibration)
        path = quantized
    session = create_session(path, threads=threads)
    image = rng.integers(0, 256, size=(1, channels, *hw)).astype(np.float32)
    res = measure_infer(lambda: session.run(None, {"image": image}), batch=1, iters=iters, warmup=warmup)
    res.update(export_s=export_s, onnx_mb=os.path.getsize(path) / 1e6, providers=session.get_providers(),
               onnxruntime=__import__("onnxruntime").__version__,
               onnxruntime_threads=session.get_session_options().intra_op_num_threads, **extra)
    return res


def count_flops(model, cfg, *, hw, device, modalities: str = "rgbt") -> dict:
    """Forward FLOPs of one input (eval forward, fp32, LoRA unmerged) with FlopCounterMode.

    FlopCounterMode counts a multiply-add as 2 FLOPs (matmuls, convolutions, attention); element-wise
    ops are not counted.
    """
    model.eval()
    k = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    inputs = make_inputs(1, hw, k, device, labels=False, modalities=modalities)
    counter = FlopCounterMode(display=False, depth=1)
    with torch.no_grad(), counter:
        model(inputs)
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
