"""Verify prepared RGB-T datasets: ``python datasets/check.py [--register MODULE] NAME [NAME ...]``.

For each registered set (a built-in split such as ``mfnet_train``, ``pst900_val``,
``synthetic_rgbt_test``, or your own from ``sartm_d2.data.register_rgbt_sem_seg``) it reads every
record and reports EVERY problem it finds (it does not stop at the first): missing or unreadable
files, RGB / thermal / label of different sizes, label values outside the classes, unsupported
thermal formats, empty sets, several files of one stem, JPEG labels, conditions that do not match.
Unlabelled sets (registered with ``gt_root=None``) are checked for RGB / thermal readability and
alignment only. It also logs the number of images, their sizes and conditions. Exit code 1 if any
problem was found.

Alignment: for every pair it measures how far the thermal edges sit from the RGB edges, in the RGB
frame (under the set's rig file, or as stored for an aligned set): the translation between the two
edge maps, searched over shifts up to 32 px (at most 15% of the short side) and refined by ECC
(``sartm_d2.data.rig_calibration.alignment_offset``). A pair offset by more than ``--max-offset`` RGB
pixels is a problem naming its files (sync drift, a bumped mount, a wrong rig). Pairs whose edges
cannot be compared (a flat or tiny image, edges along one direction only, a dark RGB frame) are
counted as not measured, not as problems. ``--alignment-csv FILE`` writes every pair's offset;
``--no-alignment`` skips the measurement.

``--register MODULE`` (repeatable) imports your module first, by dotted name (found from the
current directory, as ``python -m`` would) or as a path to a ``.py`` file, so that the sets it
registers can be checked: ``python datasets/check.py --register my_datasets my_set_train``.

The dataset root of the built-in sets is ``$DETECTRON2_DATASETS`` (default ``datasets``), as for
training.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import statistics
import sys
from collections import Counter

import sartm_d2  # noqa: F401  (first: detectron2 compatibility fixes; registers the datasets)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog

from sartm_d2.data import scan_split
from sartm_d2.data.io import check_label_values, read_label, read_rgbt
from sartm_d2.data.rig_calibration import alignment_offset
from sartm_d2.utils.env import import_user_module

logger = logging.getLogger("sartm_d2.check")

# Images per split of the published releases, for information (a subset is not an error).
PUBLISHED_COUNTS = {
    "mfnet_train": 784,
    "mfnet_val": 392,
    "mfnet_test": 393,
    "pst900_trainval": 597,
    "pst900_test": 288,
    "fmb_train": 1220,
    "fmb_test": 280,
}
# Default --max-offset: RGB pixels between thermal and RGB edges above which a pair is reported.
MAX_OFFSET_PX = 4.0
ALIGNMENT_COLUMNS = ("dataset", "image_id", "file_name", "thermal_file_name", "rig_file", "dx_px", "dy_px",
                     "offset_px", "correlation", "status")


def _foreign_records(name: str, not_ours: KeyError) -> tuple[list[dict], list[str]]:
    """Records of a name registered by other code: usable only if they follow the RGB-T contract."""
    if name not in DatasetCatalog:
        return [], [
            f"{not_ours.args[0]} A set of your own module needs --register MODULE (the module that calls "
            "register_rgbt_sem_seg)."
        ]
    try:
        records = DatasetCatalog.get(name)
    except Exception as e:  # another project's loader: any failure is the finding to report
        return [], [f"{name!r} is registered by other code and its loader failed: {type(e).__name__}: {e}"]
    if not records or not all("file_name" in r and "thermal_file_name" in r for r in records):
        return [], [
            f"{name!r} is registered in DatasetCatalog, but not by sartm_d2's RGB-T loader: its records "
            "have no 'thermal_file_name', so it is not an RGB-T set. Register it with "
            "sartm_d2.data.register_rgbt_sem_seg (see datasets/README.md, 'Your own dataset')."
        ]
    logger.info("%s: registered by other code; checking its %d RGB-T records.", name, len(records))
    return records, []


def _alignment(name: str, record: dict, rgb, thermal, max_offset: float, rows: list) -> str | None:
    """One pair's edge offset (a row into ``rows``); the problem if it exceeds ``max_offset`` pixels."""
    found = alignment_offset(rgb, thermal)
    rig = record.get("rig_file")
    status = "not measured" if found is None else "off" if found.offset > max_offset else "ok"
    figures = {"dx_px": "", "dy_px": "", "offset_px": "", "correlation": ""}
    if found is not None:
        figures = {"dx_px": f"{found.dx:.2f}", "dy_px": f"{found.dy:.2f}", "offset_px": f"{found.offset:.2f}",
                   "correlation": f"{found.correlation:.3f}"}
    rows.append({
        "dataset": name, "image_id": record.get("image_id"), "file_name": record["file_name"],
        "thermal_file_name": record["thermal_file_name"], "rig_file": rig or "", **figures, "status": status,
    })
    if status != "off":
        return None
    under = f"under rig file {rig!r}" if rig else "as stored (no rig file: the pair should be pixel-aligned)"
    return (
        f"thermal image {record['thermal_file_name']!r} is offset by ({found.dx:+.1f}, {found.dy:+.1f}) px "
        f"({found.offset:.1f} px > --max-offset {max_offset:g}) from the edges of RGB image "
        f"{record['file_name']!r}, {under}: sync drift, a bumped mount or a wrong rig. Check the pair, "
        "re-estimate the rig (tools/calibrate_rig.py), or leave the pair out."
    )


def check_dataset(
    name: str, *, max_offset: float = MAX_OFFSET_PX, alignment: bool = True, rows: list | None = None
) -> list[str]:
    """Every problem of the registered set ``name`` (an empty list when it is fine).

    ``alignment``: also measure each pair's edge offset (problems above ``max_offset`` RGB pixels);
    ``rows``: a list that receives one dict per pair read (``ALIGNMENT_COLUMNS``; status "ok", "off"
    or "not measured").
    """
    rows = [] if rows is None else rows
    first_row = len(rows)
    try:
        records, problems = scan_split(name)
    except KeyError as e:
        records, problems = _foreign_records(name, e)
        if problems:
            return problems
    except (FileNotFoundError, ValueError) as e:
        return [str(e)]
    meta = MetadataCatalog.get(name)
    classes = meta.get("stuff_classes")
    if not classes:
        return [f"{name!r} has no stuff_classes in MetadataCatalog; the class count is unknown."]
    ignore = meta.get("ignore_label", 255)
    sizes: Counter = Counter()
    conditions: Counter = Counter()
    labelled = 0
    for record in records:
        paths = [record["file_name"], record["thermal_file_name"], record.get("sem_seg_file_name")]
        absent = [p for p in paths if p is not None and not os.path.isfile(p)]
        if absent:
            problems.append(f"{name!r}: record {record.get('image_id')!r} names absent file(s) {absent}")
            continue
        try:
            rgb, thermal = read_rgbt(record, "percentile")
            if alignment:  # measured whatever the label holds: the two are separate problems
                off = _alignment(name, record, rgb, thermal, max_offset, rows)
                if off:
                    problems.append(off)
            label_path = record.get("sem_seg_file_name")
            if label_path:
                label = read_label(label_path, expected_shape=rgb.shape[:2])
                check_label_values(label, len(classes), label_path, ignore)
                labelled += 1
            sizes[f"{rgb.shape[1]}x{rgb.shape[0]}"] += 1
            if record.get("condition") is not None:
                conditions[record["condition"]] += 1
        except (FileNotFoundError, ValueError) as e:
            problems.append(str(e))
    published = PUBLISHED_COUNTS.get(name)
    note = f" (published release: {published})" if published is not None else ""
    unlabelled = "" if labelled or not records else " (unlabelled: RGB and thermal checked only)"
    logger.info("%s: %d images%s%s; sizes (WxH): %s", name, len(records), note, unlabelled, dict(sizes))
    if conditions:
        logger.info("%s: conditions: %s", name, dict(conditions))
    if alignment and records:
        _log_alignment(name, rows[first_row:], max_offset)
    return problems


def _log_alignment(name: str, rows: list[dict], max_offset: float) -> None:
    measured = [r for r in rows if r["status"] != "not measured"]
    line = f"{name}: alignment (thermal edges vs RGB edges): {len(measured)} of {len(rows)} pairs measured"
    if measured:
        offsets = [float(r["offset_px"]) for r in measured]
        worst = max(measured, key=lambda r: float(r["offset_px"]))
        off = sum(r["status"] == "off" for r in measured)
        line += (f"; offset median {statistics.median(offsets):.2f} px, largest {max(offsets):.2f} px "
                 f"({worst['thermal_file_name']}); {off} above --max-offset {max_offset:g} px")
    logger.info("%s", line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--register",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first (dotted name or path to a .py file) so that the sets it registers "
        "can be checked; repeatable",
    )
    parser.add_argument("names", nargs="+", help="registered dataset names, e.g. mfnet_train my_set_train")
    parser.add_argument("--max-offset", type=float, default=MAX_OFFSET_PX, metavar="PX",
                        help="report pairs whose thermal edges sit more than PX RGB pixels from the RGB "
                        "edges (default %(default)s)")
    parser.add_argument("--no-alignment", action="store_true", help="skip the alignment measurement")
    parser.add_argument("--alignment-csv", metavar="FILE", help="write every pair's measured offset to FILE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for module in args.register:
        try:
            import_user_module(module)
        except Exception as e:  # the user's module: report whatever it raised, then stop
            logger.error("--register %s: importing it failed: %s: %s", module, type(e).__name__, e)
            return 1
    failed = 0
    rows: list[dict] = []
    for name in args.names:
        problems = check_dataset(
            name, max_offset=args.max_offset, alignment=not args.no_alignment, rows=rows
        )
        for p in problems:
            logger.error("%s: PROBLEM: %s", name, p)
        logger.info("%s: %s", name, f"{len(problems)} problem(s)" if problems else "OK")
        failed += bool(problems)
    if args.alignment_csv:
        with open(args.alignment_csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=ALIGNMENT_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        logger.info("Wrote the alignment of %d pair(s) to %s.", len(rows), args.alignment_csv)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
