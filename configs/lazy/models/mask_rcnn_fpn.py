"""Mask R-CNN on a pyramid of fpn_variants: Detectron2's ``common/models/mask_rcnn_fpn.py`` with its
``L(FPN)(...)`` backbone swapped for :func:`fpn_variants.modeling.preset_pyramid` (the same arguments:
bottom_up, in_features, out_channels, top_block; outputs p2..p6). Any preset: ``model.backbone.preset``
(fpn_full, fpn_bottom_up_only, fpn_top_down_only, fpn_lateral_only, fpn_residual, fpn_panet, fpn_bifpn);
any knob of FeaturePyramid: ``model.backbone.<knob>``, e.g. ``model.backbone.fuse_type=weighted``."""
from detectron2 import model_zoo

from fpn_variants.modeling import preset_pyramid

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
model.backbone._target_ = preset_pyramid
model.backbone.preset = "fpn_full"
