"""Faster R-CNN on a pyramid of fpn_variants (the paper's Table 3 detector): ``mask_rcnn_fpn.py`` here
without the mask branch. ``model.backbone.preset`` picks the pyramid."""
from .mask_rcnn_fpn import model

model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
