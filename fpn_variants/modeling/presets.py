"""The paper's pyramid designs as presets of :class:`~fpn_variants.modeling.pyramid.FeaturePyramid`.

Each preset is a table entry of keyword arguments, not a class; a new variant is one entry here
(plus a test). Every preset is registered in Detectron2's ``BACKBONE_REGISTRY`` as
``build_{name}_backbone`` by :mod:`fpn_variants.modeling.backbone`.
"""
from typing import Dict

__all__ = ["PRESETS"]

PRESETS: Dict[str, dict] = {
    # Table 1(c) / 3(c): 1x1 laterals, top-down pathway (nearest x2, sum), 3x3 output convs.
    "fpn_full": dict(lateral="conv1x1", lateral_levels="all", paths=("top_down",), output="conv3x3"),
    # Table 1(d) "bottom-up pyramid": no top-down pathway; 1x1 lateral + 3x3 on each C_k.
    "fpn_bottom_up_only": dict(lateral="conv1x1", lateral_levels="all", paths=(), output="conv3x3"),
    # Table 1(e) "top-down pyramid, w/o lateral": only the 1x1 on C5 that starts the top-down
    # pathway; each finer level is the upsampled coarser map followed by its 3x3.
    "fpn_top_down_only": dict(lateral="conv1x1", lateral_levels="coarsest", paths=("top_down",), output="conv3x3"),
    # Fig. 1(c) pyramidal feature hierarchy made shareable: each C_k projected to d by its 1x1 only.
    "fpn_lateral_only": dict(lateral="conv1x1", lateral_levels="all", paths=(), output="none"),
    # §3 "multi-layer residual blocks as the connections": residual laterals, top-down as in FPN.
    "fpn_residual": dict(lateral="residual", lateral_levels="all", paths=("top_down",), output="conv3x3"),
    # PANet (Liu et al., CVPR 2018): FPN, then a bottom-up path augmentation over P2..P5.
    "fpn_panet": dict(lateral="conv1x1", lateral_levels="all", paths=("top_down", "bottom_up"), output="conv3x3"),
    # BiFPN (Tan et al., CVPR 2020): 1x1 laterals to d, then FPN_VARIANTS.PATH_REPEATS BiFPN layers.
    # EfficientDet's fusion is MODEL.FPN.FUSE_TYPE "weighted" (+ FPN_VARIANTS.SEPARABLE_CONV True).
    "fpn_bifpn": dict(lateral="conv1x1", lateral_levels="all", paths=("bifpn",), output="none"),
}
