"""The RoI head of the paper's C4 baselines (Table 2(a), Table 3(a)): conv5 of the *same* ResNet.

Detectron2's ``Res5ROIHeads`` always builds conv5 (res5) from 3 bottleneck blocks, which is conv5 of
R-50/101/152 but not of R-18/34 (2 / 3 basic blocks). :class:`ResNetConv5ROIHeads` builds the
bottom-up pathway's own conv5 for every depth, so a C4 baseline on R-18 has R-18's conv5 as its
head, as the paper's baseline has R-50's. For depth >= 50 it is exactly ``Res5ROIHeads``.
"""
from torch import nn

from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, ResNet
from detectron2.modeling.roi_heads import Res5ROIHeads

__all__ = ["ResNetConv5ROIHeads", "BASIC_BLOCK_RES5_BLOCKS"]

# conv5 (res5) depth of the basic-block ResNets (He et al. 2016, Table 1)
BASIC_BLOCK_RES5_BLOCKS = {18: 2, 34: 3}


@ROI_HEADS_REGISTRY.register()
class ResNetConv5ROIHeads(Res5ROIHeads):
    """``Res5ROIHeads`` whose per-RoI head is conv5 of ``MODEL.RESNETS.DEPTH``.

    Input RoI features: (R, C4, POOLER_RESOLUTION, POOLER_RESOLUTION) pooled from ``res4``
    (stride 16, C4 = 4 x ``RES2_OUT_CHANNELS``); conv5 halves the resolution (stride 2 in its first
    block) and outputs 8 x ``RES2_OUT_CHANNELS`` channels, average-pooled before the box predictor.

    Raises:
        ValueError: ``MODEL.RESNETS.DEPTH`` is not 18, 34, 50, 101 or 152.
    """

    @classmethod
    def _build_res5_block(cls, cfg):
        depth = cfg.MODEL.RESNETS.DEPTH
        if depth in (50, 101, 152):
            return super()._build_res5_block(cfg)
        if depth not in BASIC_BLOCK_RES5_BLOCKS:
            raise ValueError(f"MODEL.RESNETS.DEPTH={depth!r} is not valid; valid: 18, 34, 50, 101, 152")
        n = BASIC_BLOCK_RES5_BLOCKS[depth]
        out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS * 8
        blocks = ResNet.make_stage(
            BasicBlock, n, stride_per_block=[2] + [1] * (n - 1),
            in_channels=out_channels // 2, out_channels=out_channels, norm=cfg.MODEL.RESNETS.NORM,
        )
        return nn.Sequential(*blocks), out_channels
