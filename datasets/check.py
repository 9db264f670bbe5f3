"""Verify prepared RGB-T datasets: ``python datasets/check.py NAME [NAME ...]``.

For each registered split (e.g. ``mfnet_train``, ``pst900_val``, ``synthetic_rgbt_test``) it reads
every record and reports EVERY problem it finds (it does not stop at the first): missing or
unreadable files, RGB / thermal / label of different sizes, label values outside the classes,
unsupported thermal formats, empty splits, day/night lists that do not match. It also logs the
number of images per split and their sizes. Exit code 1 if any problem was found.

The dataset root is ``$DETECTRON2_DATASETS`` (default ``datasets``), as for training.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter

import sartm_d2  # noqa: F401  (first: detectron2 compatibility fixes; registers the datasets)

# isort: split
from detectron2.data import MetadataCatalog

from sartm_d2.data.datasets import scan_split
from sartm_d2.data.io import check_label_values, read_label, read_rgbt

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


def check_dataset(name: str) -> list[str]:
    """Every problem of the registered split ``name`` (an empty list when it is fine)."""
    try:
        records, problems = scan_split(name)
    except (FileNotFoundError, KeyError, ValueError) as e:
        return [str(e)]
    num_classes = len(MetadataCatalog.get(name).stuff_classes)
    ignore = MetadataCatalog.get(name).get("ignore_label", 255)
    sizes: Counter = Counter()
    for record in records:
        paths = (record["file_name"], record["thermal_file_name"], record["sem_seg_file_name"])
        if not all(os.path.isfile(p) for p in paths):
            continue  # already reported by scan_split
        try:
            rgb, _ = read_rgbt(record, "percentile")
            label_path = record["sem_seg_file_name"]
            label = read_label(label_path, expected_shape=rgb.shape[:2])
            check_label_values(label, num_classes, label_path, ignore)
            sizes[f"{rgb.shape[1]}x{rgb.shape[0]}"] += 1
        except (FileNotFoundError, ValueError) as e:
            problems.append(str(e))
    published = PUBLISHED_COUNTS.get(name)
    note = f" (published release: {published})" if published is not None else ""
    logger.info("%s: %d images%s; sizes (WxH): %s", name, len(records), note, dict(sizes))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="registered dataset names, e.g. mfnet_train pst900_test")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
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
