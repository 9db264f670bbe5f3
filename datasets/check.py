"""Verify prepared RGB-T datasets: ``python datasets/check.py [--register MODULE] NAME [NAME ...]``.

For each registered set (a built-in split such as ``mfnet_train``, ``pst900_val``,
``synthetic_rgbt_test``, or your own from ``sartm_d2.data.register_rgbt_sem_seg``) it reads every
record and reports EVERY problem it finds (it does not stop at the first): missing or unreadable
files, RGB / thermal / label of different sizes, label values outside the classes, unsupported
thermal formats, empty sets, several files of one stem, JPEG labels, conditions that do not match.
Unlabelled sets (registered with ``gt_root=None``) are checked for RGB / thermal readability and
alignment only. It also logs the number of images, their sizes and conditions. Exit code 1 if any
problem was found.

``--register MODULE`` (repeatable) imports your module first, by dotted name (found from the
current directory, as ``python -m`` would) or as a path to a ``.py`` file, so that the sets it
registers can be checked: ``python datasets/check.py --register my_datasets my_set_train``.

The dataset root of the built-in sets is ``$DETECTRON2_DATASETS`` (default ``datasets``), as for
training.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter

import sartm_d2  # noqa: F401  (first: detectron2 compatibility fixes; registers the datasets)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog

from sartm_d2.data import scan_split
from sartm_d2.data.io import check_label_values, read_label, read_rgbt
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


def check_dataset(name: str) -> list[str]:
    """Every problem of the registered set ``name`` (an empty list when it is fine)."""
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
            rgb, _ = read_rgbt(record, "percentile")
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
    return problems


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for module in args.register:
        try:
            import_user_module(module)
        except Exception as e:  # the user's module: report whatever it raised, then stop
            logger.error("--register %s: importing it failed: %s: %s", module, type(e).__name__, e)
            return 1
    failed = 0
    for name in args.names:
        problems = check_dataset(name)
        for p in problems:
            logger.error("%s: PROBLEM: %s", name, p)
        logger.info("%s: %s", name, f"{len(problems)} problem(s)" if problems else "OK")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
