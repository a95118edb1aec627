"""Pyramid parts, presets and their Detectron2 backbone builders (registered on import)."""
from .backbone import (TOP_BLOCKS, backbone_name, build_pyramid_backbone, check_backbone_name, preset_pyramid,
                       pyramid_kwargs_from_cfg)
from .options import PyramidOptions
from .presets import PRESETS, Preset
from .registry import ACTIVATIONS, FUSIONS, LATERALS, OUTPUTS, PATHS, UPSAMPLES, PartRegistry
from .roi_heads import Conv5ROIHeads, ResNetConv5ROIHeads
from . import timm_backbone  # noqa: F401  (registers build_timm_backbone)
from . import published_ops  # noqa: F401  (registers CARAFE, ASFF, the balanced and the simple pyramid)
from .timm_backbone import TimmBottomUp
from .pyramid import FeaturePyramid, ResidualBottleneck, build_fusion, build_lateral, build_output, fuse

__all__ = [
    "TOP_BLOCKS",
    "LATERALS",
    "UPSAMPLES",
    "FUSIONS",
    "PATHS",
    "OUTPUTS",
    "ACTIVATIONS",
    "PartRegistry",
    "PyramidOptions",
    "Preset",
    "build_fusion",
    "PRESETS",
    "FeaturePyramid",
    "ResidualBottleneck",
    "Conv5ROIHeads",
    "ResNetConv5ROIHeads",
    "TimmBottomUp",
    "backbone_name",
    "build_lateral",
    "build_output",
    "build_pyramid_backbone",
    "check_backbone_name",
    "fuse",
    "preset_pyramid",
    "pyramid_kwargs_from_cfg",
]
