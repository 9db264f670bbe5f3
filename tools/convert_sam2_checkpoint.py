"""Convert an official SAM2 / SAM2.1 checkpoint into a file for Detectron2's ``MODEL.WEIGHTS``.

    python tools/convert_sam2_checkpoint.py sam2.1_hiera_base_plus.pt weights/sam2.1_b+_sartm.pth

The output holds only the tensors SARTM takes from SAM2, under SARTM's names (see
``sartm_d2.modeling.sam2_checkpoint``); class-count-dependent decoder parts and unused modules are
left out, so Detectron2's checkpointer reports them (and LoRA, fusion, heads) as missing: they
start from their initialisation. Alternatively set ``MODEL.SAM2.CHECKPOINT`` to the original file.
"""

from __future__ import annotations

import argparse
import logging

from sartm_d2.file_io import atomic_torch_save
from sartm_d2.modeling.sam2_checkpoint import convert_sam2_state_dict, read_sam2_checkpoint

logger = logging.getLogger("sartm_d2.tools.convert_sam2_checkpoint")


def convert(src: str, dst: str) -> int:
    """Write the converted checkpoint atomically (temporary file, then rename); returns the tensor count."""
    state_dict = read_sam2_checkpoint(src)
    mapped = convert_sam2_state_dict(state_dict)
    atomic_torch_save({"model": mapped, "__author__": "sam2", "matching_heuristics": False}, dst)
    logger.info(
        "Wrote %s: %d of %d SAM2 tensors under SARTM names (the rest are re-initialised or unused).",
        dst, len(mapped), len(state_dict),
    )
    return len(mapped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="official SAM2 / SAM2.1 checkpoint (.pt, {'model': state_dict})")
    parser.add_argument("output", help="converted file for MODEL.WEIGHTS (.pth)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    convert(args.input, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
