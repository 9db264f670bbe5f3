#!/usr/bin/env python
"""What the robust model's additions cost at inference: the trust gates and the thermal stretch.

    python tools/measure_robust_cost.py --size t --resolution 480x640 --iters 10 \\
        --json benchmarks/results/cpu_robust_cost_480x640.json

Builds the same random-weight model (MFNet config, ``--size``) three times, prepared for inference
like ``--eval-only``: the paper's fusion with the fixed thermal normalisation (today's model), the
same with ``INPUT.THERMAL_NORM percentile``, and ``MODEL.SARTM.FUSION reliability`` with it (the robust
model). The three are timed in interleaved rounds on one input (so machine load hits all alike) and
reported as medians and ratios against the first, with the CPU's flags.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import sartm_d2  # noqa: F401  (compat patches + registration before detectron2)

# isort: split

import torch

from sartm_d2.benchmark.measure import build_benchmark_model, build_cfg, cpu_flags, machine_info, make_inputs

VARIANTS = {
    "paper, fixed thermal norm": ["MODEL.SARTM.FUSION", "paper", "INPUT.THERMAL_NORM", "none"],
    "paper, percentile stretch": ["MODEL.SARTM.FUSION", "paper", "INPUT.THERMAL_NORM", "percentile"],
    "reliability, percentile stretch": [
        "MODEL.SARTM.FUSION", "reliability", "INPUT.THERMAL_NORM", "percentile"
    ],
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", default="configs/mfnet.yaml")
    p.add_argument("--size", default="t", choices=["t", "s", "b+", "l", "custom"])
    p.add_argument("--resolution", default="480x640", help="HxW")
    p.add_argument("--iters", type=int, default=10, help="interleaved rounds (each times every variant once)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", help="write the measurements here")
    args = p.parse_args(argv)
    hw = tuple(int(v) for v in args.resolution.split("x"))
    device = torch.device("cpu")
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, opts in VARIANTS.items():
            cfg = build_cfg(args.config_file, size=args.size, device="cpu", embeddings_dir=tmp, opts=opts)
            models[name] = build_benchmark_model(cfg).prepare_for_inference()
    inputs = make_inputs(1, hw, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, device, labels=False)
    times = {name: [] for name in models}
    with torch.no_grad():
        for round_ in range(args.warmup + args.iters):
            for name, model in models.items():
                t0 = time.perf_counter()
                model(inputs)
                if round_ >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
    base = statistics.median(times[next(iter(times))])
    flags = cpu_flags()
    print(f"Hiera-{args.size}, {hw[0]}x{hw[1]}, batch 1, fp32, eager, prepared; "
          f"{args.iters} interleaved rounds")
    print("CPU flags: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items()))
    print("| model | ms (median) | vs paper, fixed |\n|---|---|---|")
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        rows.append({"variant": name, "opts": VARIANTS[name], "median_s": median, "times_s": ts,
                     "ratio": median / base})
        print(f"| {name} | {1000 * median:.1f} | {median / base:.3f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_info(device), "size": args.size, "hw": list(hw), "rows": rows}, f,
                      indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
