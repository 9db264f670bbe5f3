#!/usr/bin/env python
"""Speed, memory and FLOPs of SARTM on the CPU or one CUDA card.

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
  workers and with ``--workers``, projected to 16 workers and compared with the training rate;
* ``onnx``: the exported graph (``--onnx-dtypes``: fp32, static or dynamic INT8) in onnxruntime;
* ``backends`` (on request): the same raw image through the onnxruntime graphs and PyTorch eager
  fp32/bf16 (``--backends``), on the CPU, timed together in interleaved rounds (wall-clock and
  process CPU time), with each one's agreement with PyTorch fp32 and, with ``--profile``,
  onnxruntime's time per op type;
* ``robust`` (on request): what the robust model's additions (the thermal stretch, the trust gates)
  cost at inference: three variants of the model timed together in interleaved rounds.

Every measurement is recorded with its settings in a JSON file; one table is printed last (then the
tables of ``backends`` and ``robust``, when they ran). A
measurement that fails (CUDA out of memory, a compile error) is recorded as ``{"error": ...}`` and
the run goes on. The model is the paper's full SARTM by default: the language fusion and the
distillation run on random class-name embeddings written to a temporary ``TEACHER "file"``.

This file is the command line and the orchestration (plan, time budget, isolated processes, the
JSON); the measuring is ``sartm_d2.benchmark.measure``, the derived figures, targets, comparison
with the official release and the table are ``sartm_d2.benchmark.report``, and the figures compared
with are data in ``benchmarks/*.json``.

    python tools/benchmark.py --sizes t b+ --resolutions 480x640 --what train infer flops --device cpu
    python tools/benchmark.py --device cuda --sizes b+ --dtypes bf16 --modes eager compiled cudagraphs
    python tools/benchmark.py --official-compare   # the CPU comparison with the official release
    # onnxruntime fp32 and INT8 (static QDQ, dynamic) beside PyTorch eager fp32/bf16, CPU flags in the title
    python tools/benchmark.py --device cpu --sizes t b+ --resolutions 480x640 --what infer onnx \
        --infer-batch-sizes 1 --modes eager --onnx-dtypes fp32 int8 int8-dynamic --threads 2
    # the same, interleaved in one loop (and the one-camera graph), with process CPU times
    python tools/benchmark.py --device cpu --sizes t b+ --resolutions 480x640 --what backends --iters 5
    # the robust model's inference cost against the paper's
    python tools/benchmark.py --device cpu --sizes t --resolutions 480x640 --what robust --iters 10

See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sartm_d2  # noqa: F401  (first: detectron2 compatibility fixes and registrations)

# isort: split
import torch

from sartm_d2.benchmark.measure import (
    BACKENDS,
    DTYPES,
    MODES,
    ONNX_DTYPES,
    build_benchmark_model,
    build_cfg,
    count_flops,
    count_params,
    free_memory,
    machine_info,
    measure_backends,
    measure_data,
    measure_model_infer,
    measure_onnx_infer,
    measure_robust_cost,
    measure_train,
    padded,
    prepare_data,
)
from sartm_d2.benchmark.report import (
    bf16_peak_tflops,
    check_targets,
    compare_official,
    derive,
    describe,
    format_table,
    load_official_release,
    load_reference,
    load_targets,
    method_notes,
)
from sartm_d2.modalities import MODALITIES

logger = logging.getLogger("sartm_d2.tools.benchmark")

SCHEMA = "sartm-d2-benchmark/1"
SIZES = ("t", "s", "b+", "l", "custom")
WHAT = ("train", "infer", "data", "flops", "onnx", "backends", "robust")
# Without --what: all but the comparisons, which build further graphs or models per size.
DEFAULT_WHAT = ("train", "infer", "data", "flops", "onnx")
_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
_ERRORS = (torch.OutOfMemoryError, RuntimeError)
COMPILED_MIN_WARMUP = 3


def parse_resolution(text: str) -> tuple[int, int]:
    """Parse "480x640" into (480, 640)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution {text!r} must be HEIGHTxWIDTH, e.g. 480x640") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"resolution {text!r} must be positive")
    return h, w


# ---------------------------------------------------------------------------------------- orchestration
def _guarded(spec: dict, fn) -> dict:
    """Run one measurement; an OOM or runtime/compile error is recorded instead of ending the run."""
    t0 = time.perf_counter()
    try:
        res = fn()
    except _ERRORS as e:
        logger.error(
            "%s failed: %s: %s", describe(spec), type(e).__name__, str(e).splitlines()[0] if str(e) else ""
        )
        res = {"error": f"{type(e).__name__}: {e}"[:4000]}
    res = {**spec, **res, "wall_s": time.perf_counter() - t0}
    if "error" not in res:
        logger.info("%s: %s", describe(spec), _short(res))
    return res


def _short(res: dict) -> str:
    if "median_s" in res:
        ms, rate, mem = 1000 * res["median_s"], res["pairs_per_s"], res["peak_mem_gib"]
        return f"median {ms:.1f} ms, {rate:.2f} pairs/s, peak {mem:.2f} GiB"
    if "gflops_per_pair" in res:
        return f"{res['gflops_per_pair']:.1f} GFLOPs per pair"
    if "pairs_per_s" in res:
        return f"{res['pairs_per_s']:.1f} pairs/s"
    if "timings" in res:
        return ", ".join(f"{name} {1000 * t['median_s']:.1f} ms" for name, t in res["timings"].items())
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
            group += [{"what": "flops", "size": size, "resolution": res, "batch": 1, "modalities": m}
                      for m in args.modalities]
        runs = []
        if "train" in args.what:
            # CUDA graphs: fixed-size inference only.
            modes = [m for m in args.modes if m != "cudagraphs"]
            runs += itertools.product(["train"], args.batch_sizes, args.dtypes, modes)
        if "infer" in args.what:
            runs += itertools.product(["infer"], args.infer_batch_sizes, args.dtypes, args.modes)
        if "onnx" in args.what:  # the exported model in onnxruntime, batch 1 (the deployed path)
            group += [{"what": "onnx", "size": size, "resolution": res, "batch": 1, "dtype": dtype,
                       "mode": "onnxruntime", "modalities": m}
                      for m in args.modalities for dtype in args.onnx_dtypes]
        if "backends" in args.what:
            group.append({"what": "backends", "size": size, "resolution": res, "batch": 1,
                          "mode": "interleaved", "backends": list(args.backends)})
        if "robust" in args.what:
            group.append({"what": "robust", "size": size, "resolution": res, "batch": 1, "dtype": "fp32",
                          "mode": "eager"})
        for what, batch, dtype, mode in runs:
            for modalities in args.modalities if what == "infer" else ["rgbt"]:
                group.append({"what": what, "size": size, "resolution": res, "batch": batch, "dtype": dtype,
                              "mode": mode, "modalities": modalities})
        rank = {("flops", None): 0, ("train", "eager"): 1, ("infer", "eager"): 2, ("onnx", "onnxruntime"): 2,
                ("backends", "interleaved"): 2, ("robust", "eager"): 2}
        group.sort(key=lambda s: rank.get((s["what"], s.get("mode")), 3 if s["what"] == "infer" else 4))
        specs += group
    return specs


def run_spec(spec: dict, model, cfg, args, device) -> dict:
    hw = parse_resolution(spec["resolution"])
    common = {"padded_resolution": "x".join(map(str, padded(hw, model.size_divisibility)))}
    if spec.get("mode") == "cudagraphs" and device.type != "cuda":
        return {**spec, **common, "skipped": "CUDA graphs need a CUDA device"}
    if spec["what"] == "flops":
        return _guarded({**spec, **common}, lambda: count_flops(model, cfg, hw=hw, device=device,
                                                                modalities=spec.get("modalities", "rgbt")))
    # The first call (compilation, allocator warm-up) is never timed. Compiled models recompile once
    # more on the second call (sam2's PositionEmbeddingSine fills a cache dict that dynamo guards on).
    warmup = max(args.warmup, COMPILED_MIN_WARMUP if spec["mode"] in ("compiled", "cudagraphs") else 1)
    kwargs = {"hw": hw, "batch": spec["batch"], "dtype": spec.get("dtype"), "mode": spec["mode"],
              "iters": args.iters, "warmup": warmup, "device": device}
    spec = {**spec, **common, "iters": args.iters, "warmup": warmup}
    if spec["what"] == "onnx":
        with tempfile.TemporaryDirectory(prefix="sartm_onnx_") as tmp:
            res = _guarded(spec, lambda: measure_onnx_infer(
                model, cfg, hw=hw, iters=args.iters, warmup=warmup, workdir=tmp,
                dtype=spec["dtype"], threads=args.threads, modalities=spec.get("modalities", "rgbt"),
                calibration_images=args.calibration_images))
    elif spec["what"] == "backends":
        with tempfile.TemporaryDirectory(prefix="sartm_backends_") as tmp:
            res = _guarded(spec, lambda: measure_backends(
                model, cfg, hw=hw, iters=args.iters, warmup=warmup, workdir=tmp,
                backends=spec["backends"], threads=args.threads, calibration_images=args.calibration_images,
                profile=args.profile))
    elif spec["what"] == "robust":
        with tempfile.TemporaryDirectory(prefix="sartm_robust_") as tmp:
            res = _guarded(spec, lambda: measure_robust_cost(
                args.config_file, size=spec["size"], hw=hw, iters=args.iters, warmup=warmup,
                device=device, embeddings_dir=tmp, opts=args.opts))
    elif spec["what"] == "train":
        res = _guarded(spec, lambda: measure_train(model, cfg, **kwargs))
    else:
        res = _guarded(spec, lambda: measure_model_infer(model, cfg, prepare=args.prepare, **kwargs,
                                                         modalities=spec.get("modalities", "rgbt")))
    free_memory(device)  # the optimizer state and activations of this measurement
    return res


def run_isolated(spec: dict, args) -> dict:
    """Run one measurement in a fresh process (``--single``), so its peak RSS is its own."""
    with tempfile.TemporaryDirectory(prefix="sartm_bench_") as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--config-file", args.config_file,
               "--device", args.device, "--iters", str(args.iters), "--warmup", str(args.warmup),
               "--prepare" if args.prepare else "--no-prepare",
               "--single", json.dumps(spec), "--single-out", out]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        cmd += ["--calibration-images", str(args.calibration_images)]
        if args.profile:
            cmd.append("--profile")
        if args.opts:
            cmd += ["--opts", *args.opts]
        logger.info("Running %s in a fresh process.", describe(spec))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=False)
        if proc.returncode == 0 and os.path.isfile(out):
            with open(out) as f:
                return json.load(f)
        code = proc.returncode
        how = f"signal {-code} (9: killed, e.g. out of memory)" if code < 0 else f"exit status {code}"
        logger.error("%s: the measuring process ended with %s.", describe(spec), how)
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
        res.update(count_params(model))
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
        params = count_params(model)
        logger.info("Hiera-%s: %.2f M parameters, %.2f M trainable.", size, params["params_m"],
                    params["trainable_params_m"])
        for spec in size_specs:
            if rec.out_of_time():
                rec.skip(spec)
            else:
                rec.add({**run_spec(spec, model, cfg, args, device), **params})
        del model
        torch.compiler.reset()
        free_memory(device)


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


# ---------------------------------------------------------------------------------------- CLI
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--config-file", help="base config (default: configs/mfnet.yaml; --official-compare: pst900.yaml)")
    add("--sizes", nargs="+", choices=SIZES, help="Hiera sizes; custom = tiny (default: t s b+ l)")
    add("--resolutions", nargs="+", type=parse_resolution,
        help="input HxW, padded by the model to its size divisibility (default: 480x640 720x1280)")
    add("--batch-sizes", nargs="+", type=int, help="training batch sizes (default: 8 16)")
    add("--infer-batch-sizes", nargs="+", type=int, help="inference batch sizes (default: 1 16)")
    add("--dtypes", nargs="+", choices=list(DTYPES), help="fp32 and/or bf16 autocast (default: both)")
    add("--modes", nargs="+", choices=MODES,
        help="eager; compiled (torch.compile); cudagraphs (torch.compile mode reduce-overhead: CUDA, "
             "inference only) (default: eager compiled)")
    add("--modalities", nargs="+", choices=MODALITIES, default=["rgbt"],
        help="inputs of 'infer' and 'flops': both streams, or one (the other is not computed) "
             "(default: rgbt)")
    add("--onnx-dtypes", nargs="+", choices=ONNX_DTYPES, default=["fp32"],
        help="graphs of 'onnx': fp32, int8 (static QDQ as export_model.py --dtype int8 makes, calibrated on "
             "random images) and int8-dynamic (default: fp32)")
    add("--threads", type=int,
        help="onnxruntime's intra-op threads for 'onnx', both runtimes' for 'backends' (default: all cores)")
    add("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
        help="what 'backends' times together (default: all)")
    add("--calibration-images", type=int, default=4,
        help="random calibration images of the static INT8 graphs of 'onnx' and 'backends' (default 4)")
    add("--profile", action="store_true", help="'backends': add onnxruntime's time per op type")
    add("--device", help="cpu or cuda (default: cuda when available)")
    add("--iters", type=int, help="timed iterations (default: 10)")
    add("--warmup", type=int, help="untimed iterations first (default: 3; at least 1, 3 when compiled)")
    add("--what", nargs="+", choices=WHAT,
        help=f"measurements (default: {' '.join(DEFAULT_WHAT)}; backends and robust on request)")
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
        help="the CPU comparison with the official release: PST900 config (K=5), Hiera-B+, one "
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
                "what": list(DEFAULT_WHAT), "workers": min(16, os.cpu_count() or 1)}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available here; use --device cpu.")
    if args.iters < 1 or args.warmup < 0 or args.workers < 0 or args.data_batches < 1:
        raise ValueError("--iters and --data-batches must be >= 1, --warmup and --workers >= 0.")
    if args.calibration_images < 1:
        raise ValueError(f"--calibration-images must be >= 1, got {args.calibration_images}.")
    if min(args.batch_sizes + args.infer_batch_sizes) < 1:
        raise ValueError("--batch-sizes and --infer-batch-sizes must be >= 1.")
    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"--config-file {args.config_file!r} does not exist.")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}.")
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
    # The data files this run compares with, read first: a broken one fails before any measurement.
    reference = load_reference()
    official = load_official_release() if args.official_compare else None
    targets = load_targets() if device.type == "cuda" else None
    machine = machine_info(device)
    machine["load_average_before"] = os.getloadavg()
    if device.type == "cuda":
        machine.update(bf16_dense_peak_tflops=bf16_peak_tflops(machine["card"], reference),
                       peak_source=reference["bf16_dense_peak_tflops"]["source"])
    settings = {k: v for k, v in vars(args).items() if k not in ("single", "single_out")}
    settings["resolutions"] = [f"{h}x{w}" for h, w in args.resolutions]
    report = {
        "schema": SCHEMA,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine,
        "settings": settings,
        "notes": method_notes(reference, official),
    }
    path = args.json or f"benchmark-{time.strftime('%Y%m%d-%H%M%S')}.json"
    rec = Recorder(report, path, args.time_budget_s)
    with tempfile.TemporaryDirectory(prefix="sartm_bench_") as workdir:
        if "data" in args.what:  # first: quick, and independent of the model measurements
            run_data(args, device, workdir, rec)
        run_models(args, device, workdir, rec)
    results = rec.results
    report["summary"] = derive(results, machine, reference)
    if official is not None:
        compare_official(results, official)
    report["targets"] = check_targets(results, targets) if targets is not None else []
    for t in report["targets"]:
        verdict = "met" if t["met"] else "NOT met"
        logger.info("Target %-28s %.3g (limit %g): %s", t["target"], t["value"], t["limit"], verdict)
    machine["load_average_after"] = os.getloadavg()
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rec.save()
    logger.info("Wrote %s.", rec.path)
    print(format_table(results, machine))
    return report


if __name__ == "__main__":
    main()
