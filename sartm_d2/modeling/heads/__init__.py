"""Segmentation heads of SARTM: SAM2's mask decoder as main head, auxiliary heads in their registry."""

from .aux_heads import (
    AUX_HEAD_REGISTRY,
    AuxHead,
    DeepLabAuxHead,
    FPNAuxHead,
    SegFormerAuxHead,
    build_aux_head,
)
from .mask_decoder_head import SAM2MaskDecoderHead

__all__ = [
    "AUX_HEAD_REGISTRY",
    "AuxHead",
    "DeepLabAuxHead",
    "FPNAuxHead",
    "SAM2MaskDecoderHead",
    "SegFormerAuxHead",
    "build_aux_head",
]
