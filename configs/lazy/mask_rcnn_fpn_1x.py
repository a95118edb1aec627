"""Mask R-CNN + FPN (any pyramid: model.backbone.preset=...) on COCO, Detectron2's 1x schedule, for
``python lazyconfig_train_net.py --config-file configs/lazy/mask_rcnn_fpn_1x.py``."""
from ._training import dataloader, lr_multiplier, optimizer, train
from .models.mask_rcnn_fpn import model
