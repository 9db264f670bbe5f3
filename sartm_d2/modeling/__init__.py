"""SARTM's model parts; importing this package registers them with Detectron2.

``backbone`` (BACKBONE_REGISTRY), ``heads`` (SEM_SEG_HEADS_REGISTRY, AUX_HEAD_REGISTRY),
``fusion`` (built by ``build_fusion``) and ``meta_arch`` (META_ARCH_REGISTRY: "SARTM").
"""

from . import backbone, fusion, heads, meta_arch  # noqa: F401  (registers all model parts)
from .fusion import build_fusion
from .heads import AUX_HEAD_REGISTRY, SAM2MaskDecoderHead, build_aux_head
from .meta_arch import SARTM

__all__ = ["AUX_HEAD_REGISTRY", "SARTM", "SAM2MaskDecoderHead", "build_aux_head", "build_fusion"]
