#!/usr/bin/env python
"""The any-modality table and its targets, from two --eval-only runs with TEST.MODALITIES ("all",).

    python tools/anymodal_report.py --dropout output/exp/anymodal --baseline output/exp/no-dropout \\
        --dataset synthetic_rgbt_test

Reads ``<OUTPUT_DIR>/inference/<dataset>/settings.json`` of both runs (a model trained with modality
dropout, one without) and prints one markdown table (settings as rows; mIoU_all overall / day / night
for each model) and the targets of the any-modality issue, each with its measured numbers:

- fused input: the dropout model within 1.5 points of the baseline (mIoU_all, "rgbt");
- thermal only at night: person and car IoU at least 90% of the fused ("rgbt") night IoU;
- RGB only by day: traffic sign and road marking IoU at least 90% of the fused day IoU;
- never below a single modality: every degraded setting's mIoU_all at least the better of "rgb"
  and "thermal".
"""

from __future__ import annotations

import argparse
import json
import os
import sys

WARM, COLD = ("person", "car"), ("traffic sign", "road marking")


def load(output_dir: str, dataset: str) -> dict:
    path = os.path.join(output_dir, "inference", dataset, "settings.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} not found: run --eval-only with TEST.MODALITIES (\"all\",) first.")
    with open(path) as f:
        return json.load(f)["settings"]


def _cell(m: dict, key: str) -> str:
    value = m.get(key)
    return "-" if value is None else f"{value:.1f}"


def table(dropout: dict, baseline: dict) -> str:
    cols = ("mIoU_all", "day/mIoU_all", "night/mIoU_all")
    lines = ["| setting | dropout: all | day | night | no dropout: all | day | night |", "|---" * 7 + "|"]
    for setting in dropout:
        other = baseline.get(setting, {})
        cells = [_cell(dropout[setting], c) for c in cols] + [_cell(other, c) for c in cols]
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(dropout: dict, baseline: dict) -> list[tuple[str, bool, str]]:
    out = []
    fused, base = dropout["rgbt"]["mIoU_all"], baseline["rgbt"]["mIoU_all"]
    out.append(("fused within 1.5 of no dropout", abs(fused - base) <= 1.5, f"{fused:.2f} vs {base:.2f}"))
    for setting, cond, classes in (("thermal", "night", WARM), ("rgb", "day", COLD)):
        for c in classes:
            got, ref = dropout[setting][f"{cond}/IoU-{c}"], dropout["rgbt"][f"{cond}/IoU-{c}"]
            out.append((f"{setting} only, {cond}, {c} >= 90% of fused", got >= 0.9 * ref,
                        f"{got:.2f} vs fused {ref:.2f} ({100 * got / ref:.0f}%)"))
    single = max(dropout["rgb"]["mIoU_all"], dropout["thermal"]["mIoU_all"])
    degraded = {s: m["mIoU_all"] for s, m in dropout.items() if s.count("-") == 2}
    worst = min(degraded, key=degraded.get)
    below = sorted(s for s, v in degraded.items() if v < single)
    out.append(("degraded fused never below the better single modality", not below,
                f"better single {single:.2f}; worst {worst} {degraded[worst]:.2f}; below: {below or 'none'}"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dropout", required=True, help="OUTPUT_DIR of the model trained with modality dropout")
    p.add_argument("--baseline", required=True, help="OUTPUT_DIR of the model trained without it")
    p.add_argument("--dataset", default="synthetic_rgbt_test")
    args = p.parse_args(argv)
    dropout, baseline = load(args.dropout, args.dataset), load(args.baseline, args.dataset)
    lines = [table(dropout, baseline), ""]
    results = targets(dropout, baseline)
    lines += [f"- {'met' if ok else 'MISSED'}: {name}: {detail}" for name, ok, detail in results]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
