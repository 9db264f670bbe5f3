"""Backbones; importing this module registers them in Detectron2's BACKBONE_REGISTRY."""

from .sam2_hiera_lora import SAM2_SIZES, SAM2HieraLoRABackbone, build_sam2_hiera_lora_backbone, hiera_config

__all__ = ["SAM2_SIZES", "SAM2HieraLoRABackbone", "build_sam2_hiera_lora_backbone", "hiera_config"]
