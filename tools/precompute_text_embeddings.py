"""Precompute the class-name text embeddings of a dataset into the teacher cache (and optionally a file).

    python tools/precompute_text_embeddings.py --config-file configs/mfnet.yaml
    python tools/precompute_text_embeddings.py --config-file configs/synthetic.yaml --output emb.pt
    python tools/precompute_text_embeddings.py --dataset mfnet_train --teacher clip \\
        --clip-weights weights/clip/ViT-B-32.pt --output weights/mfnet_clip_text.pt

The cache entry is what training looks up (MODEL.SARTM.DISTILL.CACHE_DIR), so a machine with the
teacher weights can prepare it once. ``--output`` also writes ``{"embeddings", "class_names"}`` for
``MODEL.SARTM.DISTILL.TEACHER file`` + ``EMBEDDINGS_FILE`` (e.g. to train where CLIP is absent).
"""

from __future__ import annotations

import argparse
import logging

import torch

import sartm_d2  # noqa: F401  (first: detectron2 compatibility fixes and dataset registration)

# isort: split

from sartm_d2 import get_sartm_cfg
from sartm_d2.data import get_classes
from sartm_d2.file_io import atomic_torch_save
from sartm_d2.modeling.text_teacher import build_text_teacher, text_embeddings_from_config

logger = logging.getLogger("sartm_d2.tools.precompute_text_embeddings")


def main(argv: list[str] | None = None) -> torch.Tensor:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default="", help="a SARTM config (classes of its DATASETS.TRAIN[0])")
    parser.add_argument("--dataset", default="", help="registered dataset name (overrides the config's)")
    parser.add_argument("--teacher", default=None, help="MODEL.SARTM.DISTILL.TEACHER (e.g. clip, minilm)")
    parser.add_argument("--template", default=None, help='MODEL.SARTM.DISTILL.TEMPLATE, with "{}"')
    parser.add_argument("--cache-dir", default=None, help="MODEL.SARTM.DISTILL.CACHE_DIR")
    parser.add_argument("--clip-model", default=None, help="MODEL.SARTM.DISTILL.CLIP_MODEL")
    parser.add_argument("--clip-weights", default=None, help="MODEL.SARTM.DISTILL.CLIP_WEIGHTS")
    parser.add_argument(
        "--background-as-ignore", action="store_true", help="DATASETS.BACKGROUND_AS_IGNORE True (no class 0)"
    )
    parser.add_argument("--output", default="", help="also write an EMBEDDINGS_FILE here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    # One path for both forms: the flags are shorthands for config keys.
    cfg = get_sartm_cfg(args.config_file, args.opts)
    distill = cfg.MODEL.SARTM.DISTILL
    for key, value in (
        ("TEACHER", args.teacher),
        ("TEMPLATE", args.template),
        ("CACHE_DIR", args.cache_dir),
        ("CLIP_MODEL", args.clip_model),
        ("CLIP_WEIGHTS", args.clip_weights),
    ):
        if value is not None:  # set directly: merge_from_list would parse a template "{}" as a dict
            distill[key] = value
    if args.background_as_ignore:
        cfg.DATASETS.BACKGROUND_AS_IGNORE = True
    if args.dataset:
        dataset = args.dataset
    elif len(cfg.DATASETS.TRAIN) or len(cfg.DATASETS.TEST):
        dataset = (cfg.DATASETS.TRAIN if len(cfg.DATASETS.TRAIN) else cfg.DATASETS.TEST)[0]
    else:
        parser.error("give --dataset, or a --config-file that sets DATASETS.TRAIN or DATASETS.TEST.")
    if not build_text_teacher(cfg).cacheable:
        parser.error(f'MODEL.SARTM.DISTILL.TEACHER "{distill.TEACHER}" reads ready embeddings: nothing to '
                     "compute; use a teacher with an encoder, e.g. --teacher clip or minilm.")
    class_names, _ = get_classes(dataset, cfg.DATASETS.BACKGROUND_AS_IGNORE)
    embeddings = text_embeddings_from_config(cfg, class_names)
    logger.info("Text embeddings %s for %s classes %s.", tuple(embeddings.shape), dataset, class_names)
    if args.output:
        atomic_torch_save({"embeddings": embeddings, "class_names": list(class_names)}, args.output)
        logger.info("Wrote %s (use with MODEL.SARTM.DISTILL.TEACHER file).", args.output)
    return embeddings


if __name__ == "__main__":
    main()
