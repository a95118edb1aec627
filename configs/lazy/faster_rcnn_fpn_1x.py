"""Faster R-CNN + FPN (any pyramid: model.backbone.preset=...) on COCO, Detectron2's 1x schedule, for
``python lazyconfig_train_net.py --config-file configs/lazy/faster_rcnn_fpn_1x.py``."""
from ._training import dataloader, lr_multiplier, optimizer, train
from .models.faster_rcnn_fpn import model

dataloader.train.mapper.use_instance_mask = False
