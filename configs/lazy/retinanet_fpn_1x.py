"""RetinaNet + FPN (any pyramid: model.backbone.preset=...) on COCO, Detectron2's 1x schedule, for
``python lazyconfig_train_net.py --config-file configs/lazy/retinanet_fpn_1x.py``."""
from ._training import dataloader, lr_multiplier, optimizer, train
from .models.retinanet_fpn import model

dataloader.train.mapper.use_instance_mask = False
optimizer.lr = 0.01  # Detectron2's RetinaNet / FCOS learning rate
