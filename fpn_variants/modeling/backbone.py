"""Detectron2 builders for every preset: ``BACKBONE_REGISTRY`` names ``build_{preset}_backbone``.

Each builder takes ``(cfg, input_shape)`` like Detectron2's ``build_resnet_fpn_backbone``, builds
the bottom-up pathway named by ``cfg.FPN_VARIANTS.BOTTOM_UP`` (Detectron2's ResNet by default),
and returns a :class:`~fpn_variants.modeling.pyramid.FeaturePyramid` whose outputs are
``p2..p6`` (strides 4..64, ``MODEL.FPN.OUT_CHANNELS`` channels) with the default config; they plug
into Detectron2's stock ``RPN``, ``StandardROIHeads``, ``GeneralizedRCNN`` and ``ProposalNetwork``.
"""
import difflib
import logging
import math
import re
from typing import Dict

import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7

from .options import PyramidOptions
from .presets import PRESETS
from .pyramid import FeaturePyramid
from .registry import TOP_BLOCKS

__all__ = [
    "TOP_BLOCKS", "LastLevelP6FromC5", "LastLevelsP5P6MaxPool", "backbone_name", "build_pyramid_backbone", "pyramid_kwargs_from_cfg",
    "check_backbone_name", "build_bottom_up_backbone", "PYRAMID_BUILDERS", "reads_bottom_up_key", "preset_pyramid",
]

logger = logging.getLogger(__name__)


class LastLevelP6FromC5(nn.Module):
    """P6 = 3×3 conv, stride 2, of C5 (N, C5, H, W) -> (N, d, ceil(H/2), ceil(W/2)), stride 64: the
    alternative to the paper's subsampling of P5 (§4.1), as RetinaNet's P6 but without P7."""

    num_levels = 1

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "res5"):
        super().__init__()
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        weight_init.c2_xavier_fill(self.p6)

    def forward(self, c5):
        return [self.p6(c5)]


class LastLevelsP5P6MaxPool(nn.Module):
    """Two levels above a pyramid that ends at P4 (stride 16): P5 = 2×2 max pooling, stride 2, of P4
    (ceil mode), and P6 = stride-2 subsampling of P5 (Detectron2's ``LastLevelMaxPool``). (N, d, H, W)
    in -> [(N, d, ceil(H/2), ceil(W/2)), (N, d, ceil(H/4), ceil(W/4))], strides 32 and 64.

    This is how ViTDet (Li et al., ECCV 2022, §3) makes its stride-32 level from the one stride-16 map
    of a plain ViT, and its P6 (``LastLevelMaxPool``); with ``MODEL.FPN.IN_FEATURES`` res2..res4 and
    the ``fpn_simple`` preset it gives the simple pyramid from C4 on the default levels P2..P6, so
    Detectron2's RPN / RoI heads and anchors are unchanged. Departure: ViTDet's P5 has its own 1×1 and
    3×3 convs after the pooling; here it is pooled from P4's output, without convs.
    """

    num_levels = 2

    def __init__(self, in_feature: str = "p4"):
        super().__init__()
        self.in_feature = in_feature

    def forward(self, x):
        p5 = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
        return [p5, F.max_pool2d(p5, kernel_size=1, stride=2, padding=0)]


def backbone_name(preset: str) -> str:
    """The ``MODEL.BACKBONE.NAME`` of a preset, e.g. ``"fpn_full"`` -> ``"build_fpn_full_backbone"``."""
    return f"build_{preset}_backbone"


def check_backbone_name(name: str) -> None:
    """Raise a ``KeyError`` naming ``name``, close matches and every registered backbone, if ``name``
    is not in ``BACKBONE_REGISTRY``."""
    if name in BACKBONE_REGISTRY:
        return
    names = sorted(n for n, _ in BACKBONE_REGISTRY)
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"MODEL.BACKBONE.NAME={name!r} is not a registered backbone.{hint} Registered: {', '.join(names)}")


def _on_coarsest_output(top: nn.Module, in_features, input_shapes: Dict[str, ShapeSpec]) -> nn.Module:
    """Point ``top.in_feature`` at the pyramid's coarsest output (``p{log2 stride}`` of the last input)."""
    last = in_features[-1]
    if last in input_shapes:
        top.in_feature = f"p{int(math.log2(input_shapes[last].stride))}"
    return top


@TOP_BLOCKS.register("p6_subsample")
def p6_subsample_top_block(in_features, input_shapes: Dict[str, ShapeSpec], out_channels: int):
    """The paper's P6 (§4.1): stride-2 subsampling of the coarsest level (P5 for C2..C5, P4 for C2..C4);
    Detectron2's ``LastLevelMaxPool``."""
    return _on_coarsest_output(LastLevelMaxPool(), in_features, input_shapes)


@TOP_BLOCKS.register("p5p6_maxpool")
def p5p6_maxpool_top_block(in_features, input_shapes: Dict[str, ShapeSpec], out_channels: int):
    """Two levels by pooling the coarsest output (P5 and P6 above C2..C4's P4): ViTDet's way to the
    stride-32 level from one stride-16 map (:class:`LastLevelsP5P6MaxPool`)."""
    return _on_coarsest_output(LastLevelsP5P6MaxPool(), in_features, input_shapes)


@TOP_BLOCKS.register("p6_c5")
def p6_c5_top_block(in_features, input_shapes: Dict[str, ShapeSpec], out_channels: int):
    """P6 = 3×3/2 conv of the coarsest bottom-up map (C5), no P7 (:class:`LastLevelP6FromC5`)."""
    last = in_features[-1]
    return LastLevelP6FromC5(input_shapes[last].channels, out_channels, in_feature=last)


@TOP_BLOCKS.register("p6p7_c5")
def p6p7_c5_top_block(in_features, input_shapes: Dict[str, ShapeSpec], out_channels: int):
    """RetinaNet's P6 = 3×3/2 conv of C5 and P7 = 3×3/2 conv of relu(P6) (Detectron2's ``LastLevelP6P7``)."""
    last = in_features[-1]
    return LastLevelP6P7(input_shapes[last].channels, out_channels, in_feature=last)


@TOP_BLOCKS.register("none")
def no_top_block(in_features, input_shapes: Dict[str, ShapeSpec], out_channels: int):
    """No extra level: the pyramid ends at its coarsest input level."""
    return None


def _top_block(cfg, bottom_up_shapes: Dict[str, ShapeSpec]):
    make = TOP_BLOCKS.get(cfg.FPN_VARIANTS.TOP_BLOCK, "FPN_VARIANTS.TOP_BLOCK", quote=False)
    return make(list(cfg.MODEL.FPN.IN_FEATURES), bottom_up_shapes, cfg.MODEL.FPN.OUT_CHANNELS)


def pyramid_kwargs_from_cfg(cfg, preset: str) -> dict:
    """Keyword arguments of :class:`FeaturePyramid` for ``preset`` and ``cfg`` (without the
    bottom-up and the top block): the config's settings, the preset's parts, and, where the config
    leaves a setting at the library default and ``FPN_VARIANTS.PRESET_DEFAULTS`` is on, the setting the
    preset is published with (BiFPN: ``MODEL.FPN.FUSE_TYPE`` ``"weighted"``).

    Raises:
        KeyError: an unknown preset (the message lists them).
    """
    if preset not in PRESETS:
        raise KeyError(f"unknown FPN preset {preset!r}; valid: {', '.join(PRESETS)}")
    fv = cfg.FPN_VARIANTS
    kwargs = dict(
        in_features=list(cfg.MODEL.FPN.IN_FEATURES),
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        upsample_mode=fv.UPSAMPLE_MODE,
        residual_blocks=fv.RESIDUAL_NUM_BLOCKS,
        bottleneck_channels=fv.RESIDUAL_BOTTLENECK_CHANNELS or None,
        activation=fv.ACTIVATION,
        separable=fv.SEPARABLE_CONV,
        path_repeats=fv.PATH_REPEATS,
    )
    if fv.PRESET_DEFAULTS:
        library = PyramidOptions()
        for key, value in PRESETS[preset].defaults.items():
            if kwargs[key] == getattr(library, key) and value != kwargs[key]:
                logger.info("%s: %s=%r, the preset's published setting (FPN_VARIANTS.PRESET_DEFAULTS False keeps %r)",
                            backbone_name(preset), key, value, kwargs[key])
                kwargs[key] = value
    kwargs.update(PRESETS[preset].parts)
    return kwargs


def preset_pyramid(preset: str = "fpn_full", **kwargs) -> FeaturePyramid:
    """The pyramid of ``preset`` for LazyConfig and Python users: ``FeaturePyramid(**PRESETS[preset],
    **kwargs)``, where ``kwargs`` are Detectron2's ``FPN`` arguments (``bottom_up``, ``in_features``,
    ``out_channels``, ``norm``, ``top_block``, ``fuse_type``, ``square_pad``) and any other
    :class:`FeaturePyramid` knob (``upsample_mode``, ``activation``, ``separable``, ``path_repeats``,
    ...). A knob given here overrides the preset's. E.g. in a LazyConfig (``configs/lazy/``)::

        model.backbone._target_ = preset_pyramid   # was detectron2's FPN; its arguments stay
        model.backbone.preset = "fpn_panet"

    Raises:
        KeyError: unknown ``preset`` (the message lists them). ValueError: see :class:`FeaturePyramid`.
    """
    if preset not in PRESETS:
        raise KeyError(f"unknown FPN preset {preset!r}; valid: {', '.join(PRESETS)}")
    p = PRESETS[preset]
    return FeaturePyramid(**{**p.defaults, **p.parts, **kwargs})


def build_pyramid_backbone(cfg, input_shape: ShapeSpec, preset: str) -> FeaturePyramid:
    """Build the bottom-up pathway and the pyramid of ``preset`` from ``cfg``.

    Args:
        cfg: a Detectron2 config with :func:`fpn_variants.add_fpn_variants_config` applied.
        input_shape: ``ShapeSpec(channels=3)`` of the input images.
        preset: a key of :data:`fpn_variants.modeling.presets.PRESETS`.

    Raises:
        KeyError: unknown preset or ``FPN_VARIANTS.BOTTOM_UP`` not registered.
        ValueError: invalid values of ``MODEL.FPN.*`` / ``FPN_VARIANTS.*`` (see FeaturePyramid), or a head
            of ``MODEL.META_ARCHITECTURE`` (RPN, RoI heads, RetinaNet, semantic segmentation) reading a
            level the pyramid does not output, e.g. RetinaNet's ``p7`` (the message gives the recipe).
    """
    if "FPN_VARIANTS" not in cfg:
        raise KeyError("cfg has no FPN_VARIANTS node: call fpn_variants.add_fpn_variants_config(cfg) before merge_from_file")
    kwargs = pyramid_kwargs_from_cfg(cfg, preset)
    # fail before building the bottom-up pathway
    TOP_BLOCKS.check(cfg.FPN_VARIANTS.TOP_BLOCK, "FPN_VARIANTS.TOP_BLOCK", quote=False)
    name = cfg.FPN_VARIANTS.BOTTOM_UP
    check_backbone_name(name)
    bottom_up = BACKBONE_REGISTRY.get(name)(cfg, input_shape)
    shapes = bottom_up.output_shape()
    missing = [f for f in kwargs["in_features"] if f not in shapes]
    if missing:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES has {missing}, which the bottom-up pathway {name} does not output "
            f"(it outputs {sorted(shapes)}; set MODEL.RESNETS.OUT_FEATURES, or FPN_VARIANTS.TIMM.OUT_FEATURES for "
            "build_timm_backbone)"
        )
    pyramid = FeaturePyramid(shapes, bottom_up=bottom_up, top_block=_top_block(cfg, shapes), **kwargs)
    _check_head_features(cfg, preset, list(pyramid.output_shape()))
    return pyramid


# The recipe of each stock head whose input levels differ from the default pyramid's p2..p6.
_HEAD_RECIPES = {
    "MODEL.RETINANET.IN_FEATURES": (
        "RetinaNet reads P3-P7 (Lin et al., Focal Loss, ICCV 2017): set MODEL.FPN.IN_FEATURES "
        "['res3', 'res4', 'res5'] and FPN_VARIANTS.TOP_BLOCK p6p7_c5, as configs/heads/retinanet_fpn.yaml does"),
}


def _head_feature_keys(cfg):
    """The ``*.IN_FEATURES`` keys of the heads that ``cfg``'s meta-architecture reads from the backbone."""
    arch = cfg.MODEL.META_ARCHITECTURE
    keys = []
    if arch in ("GeneralizedRCNN", "ProposalNetwork", "PanopticFPN") and cfg.MODEL.PROPOSAL_GENERATOR.NAME == "RPN":
        keys.append("MODEL.RPN.IN_FEATURES")
    if arch in ("GeneralizedRCNN", "PanopticFPN"):
        keys.append("MODEL.ROI_HEADS.IN_FEATURES")
    if arch in ("PanopticFPN", "SemanticSegmentor"):
        keys.append("MODEL.SEM_SEG_HEAD.IN_FEATURES")
    if arch == "RetinaNet":
        keys.append("MODEL.RETINANET.IN_FEATURES")
    return keys


def _check_head_features(cfg, preset: str, outputs) -> None:
    """Raise a ``ValueError`` naming the head, its missing levels and the recipe when a head of
    ``cfg.MODEL.META_ARCHITECTURE`` reads a level this pyramid does not output (e.g. RetinaNet's
    ``p7`` from the default p2..p6 pyramid), instead of Detectron2's bare ``KeyError: 'p7'``."""
    for key in _head_feature_keys(cfg):
        node = cfg
        for part in key.split("."):
            node = node[part]
        if not any(re.fullmatch(r"p\d+", f) for f in node):
            continue  # a head written for single-scale maps (Detectron2's default "res4"): not ours to judge
        missing = [f for f in node if f not in outputs]
        if missing:
            recipe = _HEAD_RECIPES.get(key, "Set MODEL.FPN.IN_FEATURES / FPN_VARIANTS.TOP_BLOCK so that the pyramid outputs them, or the head's IN_FEATURES to its outputs")
            raise ValueError(
                f"{key} = {list(node)} reads {missing}, which {backbone_name(preset)} does not output with "
                f"MODEL.FPN.IN_FEATURES {list(cfg.MODEL.FPN.IN_FEATURES)} and FPN_VARIANTS.TOP_BLOCK "
                f"{cfg.FPN_VARIANTS.TOP_BLOCK!r} (it outputs {outputs}). {recipe}.")


# One Detectron2 builder per preset (MODEL.BACKBONE.NAME "build_<preset>_backbone"): the bottom-up
# pathway FPN_VARIANTS.BOTTOM_UP wrapped in the preset's pyramid, see build_pyramid_backbone.
def build_fpn_full_backbone(cfg, input_shape: ShapeSpec) -> FeaturePyramid:
    """FPN (Lin et al. 2017, Table 1(c), Table 3(c)): preset ``fpn_full``."""
    return build_pyramid_backbone(cfg, input_shape, "fpn_full")


def build_fpn_bottom_up_only_backbone(cfg, input_shape: ShapeSpec) -> FeaturePyramid:
    """The bottom-up pyramid (Table 1(d)): preset ``fpn_bottom_up_only``."""
    return build_pyramid_backbone(cfg, input_shape, "fpn_bottom_up_only")


def build_fpn_top_down_only_backbone(cfg, input_shape: ShapeSpec) -> FeaturePyramid:
    """The top-down pyramid without laterals (Table 1(e)): preset ``fpn_top_down_only``."""
    return build_pyramid_backbone(cfg, input_shape, "fpn_top_down_only")


def build_fpn_lateral_only_backbone(cfg, input_shape: ShapeSpec) -> FeaturePyramid:
    """Laterals only, the pyramidal feature hierarchy of Fig. 1(c): preset ``fpn_lateral_only``."""
    return build_pyramid_backbone(cfg, input_shape, "fpn_lateral_only")


def build_fpn_residual_backbone(cfg, input_shape: ShapeSpec) -> FeaturePyramid:
    """Residual blocks as the lateral connections (§3): preset ``fpn_residual``."""
    return build_pyramid_backbone(cfg, input_shape, "fpn_residual")


def build_fpn_panet_backbone(cfg, input_shape: ShapeSpec) -> FeaturePyramid:
    """PANet's bottom-up path augmentation after FPN (Liu et al., CVPR 2018): preset ``fpn_panet``."""
    return build_pyramid_backbone(cfg, input_shape, "fpn_panet")


def build_fpn_bifpn_backbone(cfg, input_shape: ShapeSpec) -> FeaturePyramid:
    """BiFPN layers (Tan et al., EfficientDet, CVPR 2020): preset ``fpn_bifpn``."""
    return build_pyramid_backbone(cfg, input_shape, "fpn_bifpn")


def build_fpn_carafe_backbone(cfg, input_shape: ShapeSpec) -> FeaturePyramid:
    """FPN with CARAFE upsampling in the top-down pathway (Wang et al., ICCV 2019): preset ``fpn_carafe``."""
    return build_pyramid_backbone(cfg, input_shape, "fpn_carafe")


def build_fpn_asff_backbone(cfg, input_shape: ShapeSpec) -> FeaturePyramid:
    """FPN with ASFF's per-pixel softmax fusion (Liu et al. 2019): preset ``fpn_asff``."""
    return build_pyramid_backbone(cfg, input_shape, "fpn_asff")


def build_fpn_bfp_backbone(cfg, input_shape: ShapeSpec) -> FeaturePyramid:
    """FPN plus Libra R-CNN's balanced feature pyramid (Pang et al., CVPR 2019): preset ``fpn_bfp``."""
    return build_pyramid_backbone(cfg, input_shape, "fpn_bfp")


def build_fpn_simple_backbone(cfg, input_shape: ShapeSpec) -> FeaturePyramid:
    """ViTDet's simple feature pyramid from C5 (Li et al., ECCV 2022): preset ``fpn_simple``."""
    return build_pyramid_backbone(cfg, input_shape, "fpn_simple")


def build_fpn_nasfpn_backbone(cfg, input_shape: ShapeSpec) -> FeaturePyramid:
    """NAS-FPN's discovered cells over P2..P6 (Ghiasi et al., CVPR 2019): preset ``fpn_nasfpn``."""
    return build_pyramid_backbone(cfg, input_shape, "fpn_nasfpn")


for _builder in (build_fpn_full_backbone, build_fpn_bottom_up_only_backbone, build_fpn_top_down_only_backbone,
                 build_fpn_lateral_only_backbone, build_fpn_residual_backbone, build_fpn_panet_backbone,
                 build_fpn_bifpn_backbone, build_fpn_carafe_backbone, build_fpn_asff_backbone, build_fpn_bfp_backbone,
                 build_fpn_simple_backbone, build_fpn_nasfpn_backbone):
    if _builder.__name__ not in BACKBONE_REGISTRY:  # registered once, also when the module is reloaded
        BACKBONE_REGISTRY.register(_builder)

# The builders above, by name: each wraps FPN_VARIANTS.BOTTOM_UP in a pyramid.
PYRAMID_BUILDERS = tuple(backbone_name(p) for p in PRESETS)


def reads_bottom_up_key(name: str) -> bool:
    """Whether the backbone builder ``name`` builds its bottom-up pathway from ``FPN_VARIANTS.BOTTOM_UP``
    (every pyramid and ``build_bottom_up_backbone``) rather than being a bottom-up pathway itself."""
    return name == "build_bottom_up_backbone" or name in PYRAMID_BUILDERS


def build_bottom_up_backbone(cfg, input_shape: ShapeSpec):
    """The bottom-up pathway ``FPN_VARIANTS.BOTTOM_UP`` alone, without a pyramid: the backbone of the
    single-scale baselines (Table 1(a)/(b), 2(a)/(b), 3(a)/(b): RPN and RoIs on C4 or C5), so that one
    ``FPN_VARIANTS.BOTTOM_UP`` override switches every row of a table to another bottom-up network.
    With the default ``build_resnet_backbone`` it is exactly Detectron2's ResNet (same parameter names).
    Its outputs are the bottom-up pathway's (``MODEL.RESNETS.OUT_FEATURES``; for timm also
    ``FPN_VARIANTS.TIMM.OUT_FEATURES``).

    Raises:
        KeyError: ``FPN_VARIANTS.BOTTOM_UP`` not registered. ValueError: it names a pyramid or itself.
    """
    name = cfg.FPN_VARIANTS.BOTTOM_UP
    check_backbone_name(name)
    if reads_bottom_up_key(name):
        raise ValueError(f"FPN_VARIANTS.BOTTOM_UP={name!r} builds a pyramid or itself; it must name a bottom-up "
                         "pathway such as build_resnet_backbone or build_timm_backbone")
    return BACKBONE_REGISTRY.get(name)(cfg, input_shape)


if "build_bottom_up_backbone" not in BACKBONE_REGISTRY:  # registered once, also when the module is reloaded
    BACKBONE_REGISTRY.register(build_bottom_up_backbone)
