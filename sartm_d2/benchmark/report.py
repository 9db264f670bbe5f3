"""Reporting: figures derived from the measurements, the GPU targets, the official release's
figures, and the tables.

Works on the measurement dicts of the result JSON (``measurements``), so it serves a fresh run and
an old result file alike; it imports nothing heavy itself. The figures it compares with are data,
each with its source, under the repository's ``benchmarks/``:

* ``targets.json``: the GPU targets (``load_targets``);
* ``official_release.json``: the official release's CPU figures (``load_official_release``);
* ``reference.json``: the cards' bf16 peaks and the paper's schedule (``load_reference``).

A missing or malformed file raises ``BenchmarkDataError`` naming it. The method constants that stay
in code (``TRAIN_FLOPS_FACTOR``, ``PROJECTED_WORKERS``) are part of the result JSON's definition.
"""

from __future__ import annotations

import json
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
TARGETS_FILE = BENCHMARKS_DIR / "targets.json"
OFFICIAL_RELEASE_FILE = BENCHMARKS_DIR / "official_release.json"
REFERENCE_FILE = BENCHMARKS_DIR / "reference.json"

# Training FLOPs ~= 3 x forward FLOPs (backward ~= 2 x forward). With SARTM's frozen trunk the
# backward skips most weight gradients, so the rule over-states the work done: a generous figure.
TRAIN_FLOPS_FACTOR = 3
# The data projection's worker count: the GPU machine's cores (the JSON fields are named after it).
PROJECTED_WORKERS = 16

# targets.json's keys, each with the name it has in the result JSON; check_targets computes them.
TARGET_NAMES = {
    "train_bf16_pairs_per_s": "train bf16 pairs/s",
    "mfnet_schedule_min": "MFNet 500 epochs (min)",
    "data_16_workers_over_train": "data 16 workers / B+ train",
    "train_bf16_b8_peak_gib": "train bf16 b8 peak GiB",
    "infer_b1_bf16_compiled_ms": "infer b1 bf16 compiled ms",
    "infer_b1_eager_ms": "infer b1 eager ms",
}
OFFICIAL_FIGURES = ("infer_b1_s", "train_step_b1_s", "train_peak_rss_b1_gib", "train_b2")
# The measurements that time several things together (``timings`` per entry), and what they compare.
COMPARISONS = {"backends": "backends", "robust": "variants"}


# ---------------------------------------------------------------------------------------- data files
class BenchmarkDataError(ValueError):
    """A data file under ``benchmarks/`` is missing or malformed; the message starts with its path."""


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _read(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise BenchmarkDataError(f"{path}: benchmark data file not found") from None
    except (OSError, ValueError) as e:
        raise BenchmarkDataError(f"{path}: cannot read it as JSON: {e}") from None
    if not isinstance(data, dict):
        raise BenchmarkDataError(f"{path}: expected a JSON object at the top level")
    return data


def _get(data: dict, key: str, path: Path, where: str = ""):
    if not isinstance(data, dict) or key not in data:
        raise BenchmarkDataError(f"{path}: missing {where}{key!r}")
    return data[key]


def _check_source(entry, path: Path, where: str) -> None:
    if not isinstance(entry, dict) or not isinstance(entry.get("source"), str) or not entry["source"].strip():
        raise BenchmarkDataError(f"{path}: {where} needs a non-empty 'source' saying where it comes from")


def _check_keys(found: dict, expected, path: Path, where: str) -> None:
    if not isinstance(found, dict) or set(found) != set(expected):
        have = sorted(found) if isinstance(found, dict) else type(found).__name__
        raise BenchmarkDataError(f"{path}: {where} must have exactly {sorted(expected)}, has {have}")


def _check_setting(data: dict, path: Path, keys: tuple[str, ...]) -> None:
    setting = _get(data, "setting", path)
    for key in keys:
        if not isinstance(_get(setting, key, path, "setting."), str):
            raise BenchmarkDataError(f"{path}: setting.{key} must be a string")


def load_targets(path: str | Path | None = None) -> dict:
    """``benchmarks/targets.json``, checked: ``setting`` (size, resolution) and, per key of
    ``TARGET_NAMES``, exactly one numeric bound (``min`` or ``max``) and a ``source``."""
    path = Path(path or TARGETS_FILE)
    data = _read(path)
    _check_setting(data, path, ("size", "resolution"))
    targets = _get(data, "targets", path)
    _check_keys(targets, TARGET_NAMES, path, "'targets'")
    for key, t in targets.items():
        _check_source(t, path, f"target {key!r}")
        bounds = [b for b in ("min", "max") if b in t]
        if len(bounds) != 1 or not _is_number(t[bounds[0]]):
            raise BenchmarkDataError(f"{path}: target {key!r} needs exactly one numeric 'min' or 'max'")
    return data


def load_official_release(path: str | Path | None = None) -> dict:
    """``benchmarks/official_release.json``, checked: ``setting`` (size, resolution, dtype) and the
    figures of ``OFFICIAL_FIGURES``, each a ``value`` with a ``source``."""
    path = Path(path or OFFICIAL_RELEASE_FILE)
    data = _read(path)
    _check_setting(data, path, ("size", "resolution", "dtype"))
    figures = _get(data, "figures", path)
    _check_keys(figures, OFFICIAL_FIGURES, path, "'figures'")
    for key, fig in figures.items():
        _check_source(fig, path, f"figure {key!r}")
        _get(fig, "value", path, f"figures.{key}.")
    infer = figures["infer_b1_s"]["value"]
    is_range = isinstance(infer, list) and len(infer) == 2 and all(map(_is_number, infer))
    if not is_range or infer[0] > infer[1]:
        raise BenchmarkDataError(f"{path}: figures.infer_b1_s.value must be a [low, high] range in seconds")
    for key in ("train_step_b1_s", "train_peak_rss_b1_gib"):
        if not _is_number(figures[key]["value"]) or figures[key]["value"] <= 0:
            raise BenchmarkDataError(f"{path}: figures.{key}.value must be a positive number")
    if not isinstance(figures["train_b2"]["value"], str):
        raise BenchmarkDataError(f"{path}: figures.train_b2.value must be a string")
    return data


def load_reference(path: str | Path | None = None) -> dict:
    """``benchmarks/reference.json``, checked: the cards' bf16 peaks (``name``, ``tflops``) with a
    ``source``, and the paper schedule's ``epochs`` and ``mfnet_train_pairs`` with theirs."""
    path = Path(path or REFERENCE_FILE)
    data = _read(path)
    peaks = _get(data, "bf16_dense_peak_tflops", path)
    _check_source(peaks, path, "'bf16_dense_peak_tflops'")
    cards = _get(peaks, "cards", path, "bf16_dense_peak_tflops.")
    if not isinstance(cards, list) or not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) and _is_number(c.get("tflops")) for c in cards
    ):
        raise BenchmarkDataError(f"{path}: bf16_dense_peak_tflops.cards must be a list of {{name, tflops}}")
    schedule = _get(data, "paper_schedule", path)
    _check_keys(schedule, ("epochs", "mfnet_train_pairs"), path, "'paper_schedule'")
    for key, fig in schedule.items():
        _check_source(fig, path, f"paper_schedule.{key}")
        value = _get(fig, "value", path, f"paper_schedule.{key}.")
        if not _is_number(value) or value <= 0:
            raise BenchmarkDataError(f"{path}: paper_schedule.{key}.value must be a positive number")
    return data


def bf16_peak_tflops(card: str, reference: dict | None = None) -> float | None:
    """The card's dense bf16 peak (TFLOP/s): the first of reference.json's cards named in ``card``."""
    reference = load_reference() if reference is None else reference
    for entry in reference["bf16_dense_peak_tflops"]["cards"]:
        if entry["name"].lower() in card.lower():
            return float(entry["tflops"])
    return None


def official_figures(official: dict | None = None) -> dict:
    """The official release's figures by name, values only (the result JSON's ``official_reference``)."""
    official = load_official_release() if official is None else official
    return {key: fig["value"] for key, fig in official["figures"].items()}


def method_notes(reference: dict | None = None, official: dict | None = None) -> dict:
    """The result JSON's ``notes``: how each figure is measured or derived. ``official``: the
    official release's figures are recorded (``--official-compare`` runs), else ``None``."""
    reference = load_reference() if reference is None else reference
    schedule = reference["paper_schedule"]
    return {
        "inputs": "random images and 32x32-block labels, already on the device (the loader is 'data')",
        "flops": "torch.utils.flop_counter.FlopCounterMode, eval forward of one RGB-T pair, fp32; a "
        "multiply-add counts 2 FLOPs; element-wise ops not counted",
        "train_tflops": f"{TRAIN_FLOPS_FACTOR} x forward FLOPs x pairs/s (backward ~ 2 x forward; "
        "an over-estimate with SARTM's frozen trunk)",
        "fraction_of_peak": f"of the card's bf16 dense peak, {reference['bf16_dense_peak_tflops']['source']}",
        "schedule": f"{schedule['epochs']['value']} epochs x {schedule['mfnet_train_pairs']['value']} MFNet "
        "pairs / train pairs/s",
        "data_projection": f"{PROJECTED_WORKERS} x the measured pairs/s per worker; needs "
        f"{PROJECTED_WORKERS} free cores",
        "backends": "the same random raw (1, 4, H, W) image ((1, 3, H, W) for the RGB graph) -> logits + "
        "argmax through each backend, on the CPU; timed in the same rounds, the order rotating; cpu_times_s "
        "= process CPU time (all threads), not lengthened by other processes' load",
        "robust": "the variants of the model prepared for inference, fp32 eager, timed in the same rounds, "
        "the order rotating; ratios against the first variant",
        "official_reference": official_figures(official) if official else None,
    }


# ---------------------------------------------------------------------------------------- derived
def describe(spec: dict) -> str:
    """One line naming a measurement's settings, e.g. "what=train size=b+ ... mode=eager"."""
    keys = ("what", "size", "resolution", "batch", "dtype", "mode", "workers", "modalities")
    return " ".join(f"{k}={spec[k]}" for k in keys if spec.get(k) is not None)


def _setting(r: dict) -> tuple:
    return r["size"], r["resolution"], r["batch"], r["dtype"], r["mode"]


def derive(results: list[dict], machine: dict, reference: dict | None = None) -> dict:
    """Add TFLOP/s, the fraction of the card's bf16 peak (when ``machine`` has one: CUDA runs), the
    paper-schedule estimate and the data projection to ``results`` in place; return the summary."""
    reference = load_reference() if reference is None else reference
    schedule = reference["paper_schedule"]
    epochs, pairs = schedule["epochs"]["value"], schedule["mfnet_train_pairs"]["value"]
    flops = {
        (r["size"], r["resolution"], r.get("modalities", "rgbt")): r["gflops_per_pair"]
        for r in results
        if r["what"] == "flops" and "gflops_per_pair" in r
    }
    # A single-modality inference row against the same setting with both streams, measured in this run.
    both = {_setting(r): r["median_s"] for r in results
            if r["what"] == "infer" and r.get("modalities", "rgbt") == "rgbt" and "median_s" in r}
    for r in results:
        if r["what"] == "infer" and r.get("modalities", "rgbt") != "rgbt" and _setting(r) in both:
            if "median_s" in r:
                r["latency_vs_rgbt"] = r["median_s"] / both[_setting(r)]
    # onnxruntime against PyTorch eager (fp32 and bf16) at batch 1 with both streams, and an INT8 or
    # one-camera graph against the two-stream fp32 graph, measured in this run.
    onnx_fp32 = {(r["size"], r["resolution"]): r["median_s"] for r in results
                 if r["what"] == "onnx" and r.get("dtype") == "fp32" and r.get("modalities", "rgbt") == "rgbt"
                 and "median_s" in r}
    for r in results:
        if r["what"] == "onnx" and "median_s" in r:
            for dtype in ("fp32", "bf16"):
                ref = both.get((r["size"], r["resolution"], 1, dtype, "eager"))
                if ref:
                    r[f"latency_vs_eager_{dtype}"] = r["median_s"] / ref
            ref = onnx_fp32.get((r["size"], r["resolution"]))
            if ref and (r.get("dtype") != "fp32" or r.get("modalities", "rgbt") != "rgbt"):
                r["latency_vs_onnx_fp32"] = r["median_s"] / ref
    peak = machine.get("bf16_dense_peak_tflops")
    for r in results:
        if r["what"] not in ("train", "infer") or "pairs_per_s" not in r:
            continue
        if r["what"] == "train":
            r["mfnet_500_epochs_min"] = epochs * pairs / r["pairs_per_s"] / 60
        gf = flops.get((r["size"], r["resolution"], r.get("modalities", "rgbt")))
        if gf is not None:
            factor = TRAIN_FLOPS_FACTOR if r["what"] == "train" else 1
            r["achieved_tflops"] = factor * gf * r["pairs_per_s"] / 1e3
            if peak:
                r["fraction_of_bf16_peak"] = r["achieved_tflops"] / peak
    train = [r for r in results if r["what"] == "train" and "pairs_per_s" in r]
    best = max(train, key=lambda r: r["pairs_per_s"], default=None)
    for r in results:
        if r["what"] != "data" or "pairs_per_s" not in r:
            continue
        r["projected_16_workers_pairs_per_s"] = PROJECTED_WORKERS * r["pairs_per_s_per_worker"]
        if best is not None:
            r["vs_train"] = {
                "train": describe(best),
                "train_pairs_per_s": best["pairs_per_s"],
                "ratio_16_workers": r["projected_16_workers_pairs_per_s"] / best["pairs_per_s"],
            }
    return {"best_train": describe(best) if best else None}


def compare_official(results: list[dict], official: dict | None = None) -> None:
    """Add ``vs_official`` (the official release's figures, official_release.json) to the rows of its
    setting: time ratios (ours / theirs), the peak-memory ratio, or whether batch 2 fits."""
    official = load_official_release() if official is None else official
    setting, ref = official["setting"], official_figures(official)
    for r in results:
        if any(r.get(k) != setting[k] for k in ("size", "resolution", "dtype")):
            continue
        if "median_s" not in r and r.get("what") != "train":
            continue
        if r["what"] == "infer" and r["batch"] == 1:
            low, high = ref["infer_b1_s"]
            mid = (low + high) / 2
            r["vs_official"] = {"official": f"{low:g}-{high:g} s", "ratio": r["median_s"] / mid}
        elif r["what"] == "train" and r["batch"] == 1 and "median_s" in r:
            r["vs_official"] = {
                "official": f"{ref['train_step_b1_s']:g} s, {ref['train_peak_rss_b1_gib']:g} GiB",
                "ratio": r["median_s"] / ref["train_step_b1_s"],
                "peak_ratio": r["peak_mem_gib"] / ref["train_peak_rss_b1_gib"],
            }
        elif r["what"] == "train" and r["batch"] == 2:
            r["vs_official"] = {"official": ref["train_b2"], "ours_fits": "median_s" in r}


def check_targets(results: list[dict], targets: dict | None = None) -> list[dict]:
    """The GPU targets (targets.json), for those this run measured: one
    ``{"target", "value", "limit", "met"}`` per target, a value at the limit meeting it."""
    targets = load_targets() if targets is None else targets
    setting, bounds = targets["setting"], targets["targets"]
    rows = [r for r in results if r.get("size") == setting["size"]
            and r.get("resolution") == setting["resolution"] and "pairs_per_s" in r]
    train = [r for r in rows if r["what"] == "train" and r["dtype"] == "bf16"]
    infer = [r for r in rows if r["what"] == "infer" and r["batch"] == 1]
    data = [r for r in results if r["what"] == "data" and "projected_16_workers_pairs_per_s" in r]
    out = []

    def add(key: str, value: float) -> None:
        at_most = "max" in bounds[key]
        limit = bounds[key]["max" if at_most else "min"]
        met = value <= limit if at_most else value >= limit
        out.append({"target": TARGET_NAMES[key], "value": value, "limit": limit, "met": bool(met)})

    if train:
        best = max(train, key=lambda r: r["pairs_per_s"])
        add("train_bf16_pairs_per_s", best["pairs_per_s"])
        add("mfnet_schedule_min", best["mfnet_500_epochs_min"])
        if data:
            add("data_16_workers_over_train",
                max(r["projected_16_workers_pairs_per_s"] for r in data) / best["pairs_per_s"])
    b8 = [r["peak_mem_gib"] for r in train if r["batch"] == 8]
    if b8:
        add("train_bf16_b8_peak_gib", min(b8))
    compiled = [r["latency_ms_per_pair"] for r in infer if r["dtype"] == "bf16" and r["mode"] != "eager"]
    if compiled:
        add("infer_b1_bf16_compiled_ms", min(compiled))
    eager = [r["latency_ms_per_pair"] for r in infer if r["mode"] == "eager"]
    if eager:
        add("infer_b1_eager_ms", min(eager))
    return out


# ---------------------------------------------------------------------------------------- the table
def describe_cpu_flags(flags: dict[str, bool]) -> str:
    """"CPU flags: avx2 yes, avx512_vnni no, ..." (``measure.cpu_flags``), and what their absence means."""
    text = "CPU flags: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items())
    if not (flags.get("avx512_vnni") or flags.get("avx_vnni")):
        text += " (no VNNI: int8 dot products go through 16-bit sums)"
    if not (flags.get("avx512_bf16") or flags.get("amx_bf16")):
        text += " (no bf16 instructions)"
    return text


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
        what = r["what"] if r.get("modalities", "rgbt") == "rgbt" else f"{r['what']} ({r['modalities']})"
        row = {"what": what, "size": r.get("size", ""), "res": r.get("resolution", ""),
               "batch": r.get("batch", ""), "dtype": r.get("dtype", ""), "mode": r.get("mode", "")}
        note = r.get("error") or r.get("skipped") or ""
        note = note if len(note) <= 60 else note[:57] + "..."
        if r["what"] == "data":
            row.update(res="x".join(map(str, r.get("crop") or [])), mode=f"{r['workers']} workers")
            if "pairs_per_s" in r:
                per, proj = r["pairs_per_s_per_worker"], r["projected_16_workers_pairs_per_s"]
                note = f"{per:.1f}/worker -> {PROJECTED_WORKERS} workers {proj:.0f}"
                if r.get("vs_train"):
                    note += f" = {r['vs_train']['ratio_16_workers']:.2f}x best train"
        elif r["what"] == "flops":
            row.update(dtype="fp32", gflops=_fmt(r.get("gflops_per_pair")))
        elif r["what"] in COMPARISONS and "timings" in r:
            note = f"{len(r['timings'])} {COMPARISONS[r['what']]} in interleaved rounds: table below"
        elif "median_s" in r:
            if "aten_ops_per_forward" in r:
                note = f"{r['aten_ops_per_forward']} aten ops/forward"
            if "latency_vs_rgbt" in r:
                note = f"{r['latency_vs_rgbt']:.2f}x rgbt latency; {note}"
            if r["what"] == "onnx":
                keys = ("latency_vs_eager_fp32", "latency_vs_eager_bf16")
                ratios = [f"{r[k]:.2f}x eager {k[-4:]}" for k in keys if k in r]
                if "latency_vs_onnx_fp32" in r:
                    ratios.append(f"{r['latency_vs_onnx_fp32']:.2f}x onnx fp32 rgbt")
                if "onnx_mb" in r:
                    ratios.append(f"{r['onnx_mb']:.0f} MB")
                note = "; ".join(ratios) or note
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
    if machine.get("cpu_flags"):
        title += "\n" + describe_cpu_flags(machine["cpu_flags"])
    text = title + "\n" + tabulate(rows, headers=list(headers.values()), tablefmt="github")
    sections = [format_backends_table(results, machine), format_robust_table(results)]
    return "\n\n".join([text, *[t for t in sections if t]])


def _ratio_cell(ratios: dict, base: str, name: str) -> str:
    if name == base or f"over_{base}" not in ratios:
        return "-".center(13)
    return f"{ratios[f'over_{base}'][name]:.2f} ({ratios[f'cpu_over_{base}'][name]:.2f})".ljust(13)


TABLE_BASES = ("pytorch_fp32", "onnxruntime_fp32")  # the ratio columns of the backends table


def format_backends_table(results: list[dict], machine: dict | None = None) -> str:
    """The ``backends`` rows (``measure.measure_backends``): per resolution, one line per size and
    backend with its median, its ratios to PyTorch fp32 and onnxruntime fp32 (CPU-time ratios in
    parentheses), its argmax agreement with PyTorch fp32 and its file size; "" without such rows."""
    rows = [r for r in results if r.get("what") == "backends" and "timings" in r]
    if not rows:
        return ""
    machine = machine or {}
    load = ""
    if machine.get("load_average_before") and machine.get("load_average_after"):
        load = f", load {machine['load_average_before'][0]:.1f} -> {machine['load_average_after'][0]:.1f}"
    lines = []
    for res in dict.fromkeys(r["resolution"] for r in rows):
        group = [r for r in rows if r["resolution"] == res]
        threads = ", ".join(sorted({str(r.get("onnxruntime_threads")) for r in group}))
        lines += [f"backends at {res}{load}: threads {threads}; wall-clock medians; ratios within this run "
                  "(CPU-time ratios in ())",
                  "size   backend                    median s  / PT fp32      / ORT fp32     agree %     MB"]
        for r in group:
            for name, timing in r["timings"].items():
                cells = [_ratio_cell(r["ratios"], base, name) for base in TABLE_BASES]
                agree = r["parity_random_input"][name]["argmax_agreement_vs_pytorch_fp32"]
                mb = r["onnx_mb"].get(name)
                lines.append(f"{r['size']:<6} {name:<26} {timing['median_s']:>8.3f}  {cells[0]}  {cells[1]}  "
                             f"{100 * agree:>7.2f} {'' if mb is None else f'{mb:>6.0f}'}")
    return "\n".join(lines)


def format_robust_table(results: list[dict]) -> str:
    """The ``robust`` rows (``measure.measure_robust_cost``): per size and resolution, each variant's
    median latency and its ratio to the first variant's; "" without such rows."""
    lines = []
    for r in results:
        if r.get("what") != "robust" or "timings" not in r:
            continue
        rounds = len(next(iter(r["timings"].values()))["times_s"])
        lines += [f"Hiera-{r['size']}, {r['resolution']}, batch 1, fp32, eager, prepared; {rounds} "
                  "interleaved rounds",
                  f"| model | ms (median) | vs {r['base']} |", "|---|---|---|"]
        lines += [f"| {name} | {1000 * t['median_s']:.1f} | {r['ratios'][name]:.3f}x |"
                  for name, t in r["timings"].items()]
    return "\n".join(lines)
