"""The RoI head of the paper's C4 baselines (Table 1(a), 2(a), 3(a)): conv5 of the *same* bottom-up
network, run on 14 x 14 RoIs pooled from C4.

Detectron2's ``Res5ROIHeads`` always builds conv5 (res5) from 3 bottleneck blocks, which is conv5 of
R-50/101/152 but neither of R-18/34 (2 / 3 basic blocks) nor of any other network.
:class:`Conv5ROIHeads` builds the bottom-up pathway's own conv5 for every depth of Detectron2's ResNet
and, for a timm bottom-up pathway (``build_timm_backbone``), that network's own stride-32 stage(s)
with its weights (:func:`fpn_variants.modeling.timm_backbone.timm_stage`). For ResNet depth >= 50 it
is exactly ``Res5ROIHeads``.
"""
from torch import nn

from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, ResNet
from detectron2.modeling.roi_heads import Res5ROIHeads

__all__ = ["Conv5ROIHeads", "ResNetConv5ROIHeads", "BASIC_BLOCK_RES5_BLOCKS", "bottom_up_builder"]

# conv5 (res5) depth of the basic-block ResNets (He et al. 2016, Table 1)
BASIC_BLOCK_RES5_BLOCKS = {18: 2, 34: 3}


def bottom_up_builder(cfg) -> str:
    """The registered builder of the bottom-up pathway a config uses: ``MODEL.BACKBONE.NAME`` when it
    builds a bottom-up pathway itself (``build_resnet_backbone``, ``build_timm_backbone``), else
    ``FPN_VARIANTS.BOTTOM_UP`` (under a pyramid, or ``build_bottom_up_backbone``)."""
    from .backbone import reads_bottom_up_key

    name = cfg.MODEL.BACKBONE.NAME
    if reads_bottom_up_key(name):
        return cfg.FPN_VARIANTS.BOTTOM_UP
    return name


@ROI_HEADS_REGISTRY.register()
class Conv5ROIHeads(Res5ROIHeads):
    """``Res5ROIHeads`` whose per-RoI head is conv5 of the config's own bottom-up pathway.

    Input RoI features: (R, C4, POOLER_RESOLUTION, POOLER_RESOLUTION) pooled from ``res4``
    (stride 16). conv5 halves the resolution (stride 2 in its first block) and outputs C5 channels
    (ResNet: 8 x ``RES2_OUT_CHANNELS``; timm: the model's stride-32 map, e.g. 352 for
    tf_efficientnet_lite2), average-pooled before the box predictor.

    Raises:
        ValueError: ``MODEL.RESNETS.DEPTH`` is not 18, 34, 50, 101 or 152 (ResNet), a bottom-up
            pathway without a known conv5, or see ``timm_stage`` (timm).
    """

    @classmethod
    def _build_res5_block(cls, cfg):
        builder = bottom_up_builder(cfg)
        if builder == "build_timm_backbone":
            from .timm_backbone import timm_stage

            t = cfg.FPN_VARIANTS.TIMM
            return timm_stage(t.MODEL_NAME, t.WEIGHTS, after="res4", upto="res5", norm=t.NORM)
        if builder != "build_resnet_backbone":
            raise ValueError(f"{cls.__name__} builds conv5 of build_resnet_backbone or build_timm_backbone; the "
                             f"bottom-up pathway here is {builder!r}")
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


@ROI_HEADS_REGISTRY.register()
class ResNetConv5ROIHeads(Conv5ROIHeads):
    """The earlier name of :class:`Conv5ROIHeads` (same head, same parameter names), kept so that
    configs and checkpoints that name it keep working."""
