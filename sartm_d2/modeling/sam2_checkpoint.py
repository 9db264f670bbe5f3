"""Load official SAM2 / SAM2.1 checkpoints (``{"model": state_dict}``) into a SARTM model.

Key mapping (checkpoint -> SARTM):

==========================================  =========================================
``image_encoder.trunk.*``                   ``backbone.trunk.*``
``image_encoder.neck.*``                    ``backbone.neck.*``
``sam_mask_decoder.conv_s0.*`` / ``conv_s1``  ``backbone.conv_s0.*`` / ``backbone.conv_s1.*``
``sam_mask_decoder.transformer.*``          ``sem_seg_head.decoder.transformer.*``
``sam_mask_decoder.output_upscaling.*``     ``sem_seg_head.decoder.output_upscaling.*``
``sam_prompt_encoder.pe_layer.*``           ``sem_seg_head.pe_layer.*``
``sam_prompt_encoder.no_mask_embed.*``      ``sem_seg_head.no_mask_embed.*``
==========================================  =========================================

Re-initialised (their shapes depend on the number of classes): the decoder's ``mask_tokens``,
``iou_token``, ``output_hypernetworks_mlps`` and ``iou_prediction_head``. Everything else (object
score head, memory modules, the prompt encoder's point/mask embeddings...) is ignored.

Loading is strict for what SARTM takes: a shape that does not fit, a checkpoint tensor the model
has no place for, or a model tensor the checkpoint lacks is an error (e.g. a b+ checkpoint for a t
model), not a silent skip. Only a whole missing component (e.g. no ``sem_seg_head`` when the
backbone is used alone) is ignored, with the reason in the report.

The checkpoint may be a local file or an ``https://`` URL (e.g. the official
``https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_base_plus.pt``), downloaded
once into Detectron2's cache and checked against its SHA-256 (``sartm_d2.file_io.resolve_weights``).
"""

from __future__ import annotations

import logging
import os
import pickle

import torch
from torch import nn

from ..file_io import resolve_weights

logger = logging.getLogger(__name__)

__all__ = [
    "SAM2_KEY_MAP",
    "SAM2_REINITIALISED",
    "convert_sam2_state_dict",
    "load_sam2_checkpoint",
    "read_sam2_checkpoint",
]

# Checkpoint prefix -> SARTM prefix.
SAM2_KEY_MAP = (
    ("image_encoder.trunk.", "backbone.trunk."),
    ("image_encoder.neck.", "backbone.neck."),
    ("sam_mask_decoder.conv_s0.", "backbone.conv_s0."),
    ("sam_mask_decoder.conv_s1.", "backbone.conv_s1."),
    ("sam_mask_decoder.transformer.", "sem_seg_head.decoder.transformer."),
    ("sam_mask_decoder.output_upscaling.", "sem_seg_head.decoder.output_upscaling."),
    ("sam_prompt_encoder.pe_layer.", "sem_seg_head.pe_layer."),
    ("sam_prompt_encoder.no_mask_embed.", "sem_seg_head.no_mask_embed."),
)
# Checkpoint prefixes of class-count-dependent decoder parts that SARTM trains from scratch.
SAM2_REINITIALISED = (
    "sam_mask_decoder.mask_tokens",
    "sam_mask_decoder.iou_token",
    "sam_mask_decoder.output_hypernetworks_mlps.",
    "sam_mask_decoder.iou_prediction_head.",
)
_GET_CHECKPOINTS = (
    "Official checkpoints (sam2_hiera_*.pt, sam2.1_hiera_*.pt, e.g. sam2.1_hiera_base_plus.pt) come from "
    "https://github.com/facebookresearch/sam2 (checkpoints/download_ckpts.sh); set MODEL.SAM2.CHECKPOINT "
    "to the local file, to its https:// URL (downloaded once and cached), or to '' to build with random "
    "weights."
)


_NOT_USED = "not used by SARTM"


def _group_ignored(keys: list[str], reasons: dict[str, str]) -> dict[tuple[str, str], list[str]]:
    """Ignored checkpoint keys by (top-level module, reason), largest group first.

    The INFO line names each group and its size, so that it stays short whatever the checkpoint holds
    (SAM2's video-memory modules are many); a DEBUG line per group lists its keys.
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for key in keys:
        groups.setdefault((key.split(".", 1)[0], reasons[key]), []).append(key)
    return dict(sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])))


def _group_label(module: str, reason: str, count: int) -> str:
    """``<module> (<count>)``, or ``<module> (<count>, <reason>)`` unless it is "not used by SARTM"."""
    return f"{module} ({count})" if reason == _NOT_USED else f"{module} ({count}, {reason})"


def _map_key(key: str) -> tuple[str, str] | None:
    """(SARTM key, SARTM prefix it falls under) for a mapped checkpoint key, else None."""
    for src, dst in SAM2_KEY_MAP:
        if key.startswith(src):
            return dst + key[len(src) :], dst
    return None


def convert_sam2_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the SAM2 keys SARTM uses to SARTM's names; re-initialised and unused keys are dropped."""
    out = {}
    for key, value in state_dict.items():
        mapped = _map_key(key)
        if mapped is not None:
            out[mapped[0]] = value
    return out


def read_sam2_checkpoint(path: str, key: str = "MODEL.SAM2.CHECKPOINT") -> dict[str, torch.Tensor]:
    """The state dict of an official SAM2 checkpoint (file or URL), with one clear error per bad input.

    ``key`` names the setting in download errors.
    """
    path = resolve_weights(path, key=key, local_dir=os.path.join("weights", "sam2"))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SAM2 checkpoint {path!r} does not exist. {_GET_CHECKPOINTS}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"Cannot read SAM2 checkpoint {path!r} as a torch file (weights only): {e}") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        found = sorted(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"{path!r} is not an official SAM2 checkpoint: expected a dict {{'model': state_dict}}, "
            f"found {found}."
        )
    state_dict = ckpt["model"]
    if not any(k.startswith("image_encoder.trunk.") for k in state_dict):
        hint = (
            " It looks like a converted / detectron2 file: use it as MODEL.WEIGHTS instead."
            if any(k.startswith("backbone.") for k in state_dict)
            else ""
        )
        raise ValueError(f"{path!r} has no 'image_encoder.trunk.*' keys: not a SAM2 checkpoint.{hint}")
    return state_dict


def load_sam2_checkpoint(model: nn.Module, path: str) -> dict:
    """Load an official SAM2 / SAM2.1 checkpoint (file or URL) into ``backbone`` and ``sem_seg_head``.

    Returns a report: ``{"loaded": [SARTM keys], "reinitialised": [checkpoint keys],
    "ignored": [checkpoint keys], "ignored_reasons": {checkpoint key: reason}}``.
    One INFO line gives the counts, the ignored keys summarised by top-level module (and reason);
    the DEBUG lines (in OUTPUT_DIR/log.txt) list every key.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message says where to get checkpoints).
        OSError / ValueError: a URL could not be downloaded, or its file failed the SHA-256 check
            (``sartm_d2.file_io.resolve_weights``).
        ValueError: not a ``{"model": ...}`` SAM2 file; a shape mismatch (names the key, the
            checkpoint's and the model's shape); a key the model's component lacks or a model
            tensor the checkpoint lacks (a different SAM2 size / architecture).
    """
    state_dict = read_sam2_checkpoint(path)
    target = model.state_dict()
    present_prefixes = {dst for _, dst in SAM2_KEY_MAP if any(k.startswith(dst) for k in target)}

    to_load, reinitialised, ignored, reasons, unplaced = {}, [], [], {}, []
    for key, value in state_dict.items():
        mapped = _map_key(key)
        if mapped is None:
            if key.startswith(SAM2_REINITIALISED):
                reinitialised.append(key)
            else:
                ignored.append(key)
                reasons[key] = _NOT_USED
            continue
        new_key, prefix = mapped
        if new_key in target:
            expected = tuple(target[new_key].shape)
            if tuple(value.shape) != expected:
                raise ValueError(
                    f"SAM2 checkpoint {path!r}: {key!r} (-> {new_key!r}) has shape {tuple(value.shape)} "
                    f"but the model expects {expected}. Does MODEL.SAM2.SIZE / D_MODEL match the "
                    "checkpoint's size?"
                )
            to_load[new_key] = value
        elif prefix in present_prefixes:
            unplaced.append(f"{key} -> {new_key}")
        else:
            ignored.append(key)
            reasons[key] = f"the model has no '{prefix.rstrip('.')}'"
    if unplaced:
        raise ValueError(
            f"SAM2 checkpoint {path!r} has {len(unplaced)} tensors the model has no place for, e.g. "
            f"{unplaced[:3]}. Does MODEL.SAM2.SIZE match the checkpoint's size?"
        )
    missing = [
        k
        for k in target
        if k.startswith(tuple(present_prefixes))
        and k not in to_load
        and not k.endswith((".lora_A", ".lora_B"))
    ]
    if missing:
        raise ValueError(
            f"SAM2 checkpoint {path!r} lacks {len(missing)} tensors the model expects, e.g. {missing[:3]}. "
            "Does MODEL.SAM2.SIZE match the checkpoint's size?"
        )

    # Non-strict only because LoRA and SARTM's own parts are not in the file; every key was checked above.
    model.load_state_dict(to_load, strict=False)
    report = {
        "loaded": sorted(to_load),
        "reinitialised": sorted(reinitialised),
        "ignored": sorted(ignored),
        "ignored_reasons": reasons,
    }
    groups = {_group_label(module, reason, len(keys)): keys
              for (module, reason), keys in _group_ignored(report["ignored"], reasons).items()}
    logger.info(
        "Loaded SAM2 checkpoint %s: %d tensors loaded, %d re-initialised (class-count dependent), "
        "ignored %d keys%s",
        path, len(to_load), len(reinitialised), len(ignored), ": " + ", ".join(groups) if groups else ".",
    )
    logger.debug("SAM2 loaded: %s", report["loaded"])
    logger.debug("SAM2 re-initialised: %s", report["reinitialised"])
    for label, keys in groups.items():
        logger.debug("SAM2 ignored, %s: %s", label, keys)
    return report
