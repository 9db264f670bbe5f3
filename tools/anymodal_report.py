#!/usr/bin/env python
"""The robustness table and its targets, from --eval-only runs with TEST.MODALITIES ("all",).

    python tools/anymodal_report.py --robust output/exp/robust --dropout output/exp/dropout \\
        --baseline output/exp/plain --dataset synthetic_rgbt_test [--warm person car] \\
        [--cold "traffic sign" "road marking"]

Reads ``<OUTPUT_DIR>/inference/<dataset>/settings.json`` of each run: the robust any-modality model
(``configs/synthetic-anymodal.yaml``), optionally the dropout-only one, and the plain model trained
without dropout. Prints a summary (each model's clean mIoU_all and its gap to the plain model), one
markdown table (settings as rows with their family, "seen" or "unseen" by the robust model's
training; mIoU_all overall / day / night for each model) and the targets, each with its measured
numbers ("better single" is the robust model's better one-camera mIoU_all):

- clean pairs: the robust model within 1.0 point of the plain one (mIoU_all, "rgbt");
- seen families: no degraded setting more than 1.0 point below the better single camera;
- unseen (held-out) families: no degraded setting below 90% of the better single camera;
- thermal gain x0.5 (the setting "thermal-dark-1"): within 1.0 point of the robust model's clean pairs;
- thermal only at night: the warm classes' IoU at least 90% of the fused ("rgbt") night IoU;
- RGB only by day: the cold (painted) classes' IoU at least 90% of the fused day IoU.

Exit status 0 when every target is met.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# The embedded synthetic set's warm and painted (cold) classes; --warm / --cold name another set's.
WARM, COLD = ("person", "car"), ("traffic sign", "road marking")
FUSED_MARGIN, SEEN_MARGIN, UNSEEN_FRACTION, ONE_CAMERA_FRACTION, GAIN_MARGIN = 1.0, 1.0, 0.9, 0.9, 1.0
GAIN_SETTING = "thermal-dark-1"  # the thermal image times 0.5


def load(output_dir: str, dataset: str) -> dict:
    """The settings.json of a run: {"settings": {setting: metrics}, "families": {setting: seen|unseen}}."""
    path = os.path.join(output_dir, "inference", dataset, "settings.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} not found: run --eval-only with TEST.MODALITIES (\"all\",) first.")
    with open(path) as f:
        return json.load(f)


def _cell(m: dict, key: str) -> str:
    value = m.get(key)
    return "-" if value is None else f"{value:.1f}"


def table(runs: dict[str, dict], families: dict[str, str | None]) -> str:
    """Markdown: one row per setting of the first run; all / day / night per run."""
    cols = ("mIoU_all", "day/mIoU_all", "night/mIoU_all")
    header = "| setting | family | " + " | ".join(f"{n}: all | day | night" for n in runs) + " |"
    lines = [header, "|---" * (2 + 3 * len(runs)) + "|"]
    first = next(iter(runs.values()))
    for setting in first:
        cells = [_cell(run.get(setting, {}), c) for run in runs.values() for c in cols]
        lines.append(f"| {setting} | {families.get(setting) or '-'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(runs: dict[str, dict], plain: str = "plain") -> str:
    """Markdown: each model's clean-pair mIoU_all (all / day / night) and its gap to ``plain``'s."""
    base = runs[plain]["rgbt"]["mIoU_all"]
    lines = ["| model | clean mIoU_all | day | night | gap to plain |", "|---|---|---|---|---|"]
    for name, run in runs.items():
        m = run["rgbt"]
        lines.append(f"| {name} | {_cell(m, 'mIoU_all')} | {_cell(m, 'day/mIoU_all')} | "
                     f"{_cell(m, 'night/mIoU_all')} | {m['mIoU_all'] - base:+.2f} |")
    return "\n".join(lines)


def targets(robust: dict, baseline: dict, families: dict[str, str | None], warm=WARM,
            cold=COLD) -> list[tuple[str, bool, str]]:
    """(name, met, measured numbers) of every target; ``robust``/``baseline`` map settings to metrics."""
    out = []
    fused, base = robust["rgbt"]["mIoU_all"], baseline["rgbt"]["mIoU_all"]
    out.append((f"clean pairs within {FUSED_MARGIN:g} of the plain model", fused >= base - FUSED_MARGIN,
                f"{fused:.2f} vs {base:.2f}"))
    single = max(robust["rgb"]["mIoU_all"], robust["thermal"]["mIoU_all"])
    rules = (("seen", single - SEEN_MARGIN, f"more than {SEEN_MARGIN:g} below"),
             ("unseen", UNSEEN_FRACTION * single, f"below {100 * UNSEEN_FRACTION:.0f}% of"))
    for family, bound, rule in rules:
        values = {s: m["mIoU_all"] for s, m in robust.items() if families.get(s) == family}
        if not values:
            out.append((f"{family} families: none {rule} the better single camera", False, "no such setting"))
            continue
        worst = min(values, key=values.get)
        below = sorted(s for s, v in values.items() if v < bound)
        out.append((f"{family} families: none {rule} the better single camera", not below,
                    f"better single {single:.2f}, bound {bound:.2f}; {len(values)} settings; worst {worst} "
                    f"{values[worst]:.2f}; below: {below or 'none'}"))
    if GAIN_SETTING in robust:
        gain = robust[GAIN_SETTING]["mIoU_all"]
        out.append((f"thermal gain x0.5 within {GAIN_MARGIN:g} of clean", gain >= fused - GAIN_MARGIN,
                    f"{gain:.2f} vs clean {fused:.2f}"))
    for setting, cond, classes in (("thermal", "night", warm), ("rgb", "day", cold)):
        for c in classes:
            got, ref = robust[setting][f"{cond}/IoU-{c}"], robust["rgbt"][f"{cond}/IoU-{c}"]
            out.append((f"{setting} only, {cond}, {c} >= {100 * ONE_CAMERA_FRACTION:.0f}% of fused",
                        got >= ONE_CAMERA_FRACTION * ref,
                        f"{got:.2f} vs fused {ref:.2f} ({100 * got / ref:.0f}%)"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--robust", required=True, help="OUTPUT_DIR of the robust any-modality model")
    p.add_argument("--dropout", help="OUTPUT_DIR of the dropout-only model (a column of the table)")
    p.add_argument("--baseline", required=True, help="OUTPUT_DIR of the plain model (no dropout)")
    p.add_argument("--dataset", default="synthetic_rgbt_test")
    p.add_argument("--warm", nargs="+", default=list(WARM), help="the warm classes (thermal only at night)")
    p.add_argument("--cold", nargs="+", default=list(COLD), help="the painted classes (RGB only by day)")
    args = p.parse_args(argv)
    robust = load(args.robust, args.dataset)
    runs = {"robust": robust["settings"]}
    if args.dropout:
        runs["dropout"] = load(args.dropout, args.dataset)["settings"]
    runs["plain"] = load(args.baseline, args.dataset)["settings"]
    families = robust.get("families", {})
    lines = [summary(runs), "", table(runs, families), ""]
    results = targets(runs["robust"], runs["plain"], families, args.warm, args.cold)
    lines += [f"- {'met' if ok else 'MISSED'}: {name}: {detail}" for name, ok, detail in results]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
