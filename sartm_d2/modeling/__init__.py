"""SARTM's model parts; importing this package registers them with Detectron2.

``backbone`` (BACKBONE_REGISTRY), ``heads`` (SEM_SEG_HEADS_REGISTRY, AUX_HEAD_REGISTRY),
``fusion`` (FUSION_REGISTRY), ``text_teacher`` (TEXT_TEACHER_REGISTRY) and ``meta_arch``
(META_ARCH_REGISTRY: "SARTM"). ``pretrained`` holds what a fresh training run loads from files.

Your own part is one registered class plus one config value: a fusion (an :class:`RGBTFusion`,
MODEL.SARTM.FUSION), a text teacher (a :class:`TextTeacher`, MODEL.SARTM.DISTILL.TEACHER) or an
auxiliary head (an :class:`AuxHead`, MODEL.SARTM.AUX_HEAD.NAME); see tests/test_extension.py.
"""

from . import backbone, fusion, heads, meta_arch, text_teacher  # noqa: F401  (registers all model parts)
from .fusion import FUSION_REGISTRY, RGBTFusion, build_fusion
from .heads import AUX_HEAD_REGISTRY, AuxHead, SAM2MaskDecoderHead, build_aux_head
from .meta_arch import SARTM
from .pretrained import load_pretrained, load_text_embeddings
from .text_teacher import TEXT_TEACHER_REGISTRY, TextTeacher, build_text_teacher

__all__ = [
    "AUX_HEAD_REGISTRY",
    "AuxHead",
    "FUSION_REGISTRY",
    "RGBTFusion",
    "SARTM",
    "SAM2MaskDecoderHead",
    "TEXT_TEACHER_REGISTRY",
    "TextTeacher",
    "build_aux_head",
    "build_fusion",
    "build_text_teacher",
    "load_pretrained",
    "load_text_embeddings",
]
