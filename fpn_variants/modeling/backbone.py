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
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7

from .presets import PRESETS
from .pyramid import FeaturePyramid

__all__ = [
    "TOP_BLOCKS", "LastLevelP6FromC5", "backbone_name", "build_pyramid_backbone", "pyramid_kwargs_from_cfg",
    "check_backbone_name", "build_bottom_up_backbone", "PYRAMID_BUILDERS", "reads_bottom_up_key", "preset_pyramid",
]

TOP_BLOCKS = ("p6_subsample", "p6_c5", "p6p7_c5", "none")


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


def _top_block(cfg, bottom_up_shapes: Dict[str, ShapeSpec]):
    kind = cfg.FPN_VARIANTS.TOP_BLOCK
    if kind == "p6_subsample":
        # the paper's P6: stride-2 subsampling of the coarsest level (P5 for C2..C5, P4 for C2..C4)
        top = LastLevelMaxPool()
        last = cfg.MODEL.FPN.IN_FEATURES[-1]
        if last in bottom_up_shapes:
            top.in_feature = f"p{int(math.log2(bottom_up_shapes[last].stride))}"
        return top
    if kind == "p6_c5":
        last = cfg.MODEL.FPN.IN_FEATURES[-1]
        return LastLevelP6FromC5(bottom_up_shapes[last].channels, cfg.MODEL.FPN.OUT_CHANNELS, in_feature=last)
    if kind == "p6p7_c5":
        last = cfg.MODEL.FPN.IN_FEATURES[-1]
        return LastLevelP6P7(bottom_up_shapes[last].channels, cfg.MODEL.FPN.OUT_CHANNELS, in_feature=last)
    if kind == "none":
        return None
    raise ValueError(f"FPN_VARIANTS.TOP_BLOCK={kind!r} is not valid; valid values: {', '.join(TOP_BLOCKS)}")


def pyramid_kwargs_from_cfg(cfg, preset: str) -> dict:
    """Keyword arguments of :class:`FeaturePyramid` for ``preset`` and ``cfg`` (without the
    bottom-up and the top block). Raises ``KeyError`` for an unknown preset."""
    if preset not in PRESETS:
        raise KeyError(f"unknown FPN preset {preset!r}; valid: {', '.join(PRESETS)}")
    fv = cfg.FPN_VARIANTS
    return dict(
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
        **PRESETS[preset],
    )


def _warn_if_bifpn_without_weighted_fusion(preset: str, kwargs: dict) -> None:
    if "bifpn" in kwargs.get("paths", ()) and kwargs.get("fuse_type", "sum") != "weighted":
        logging.getLogger(__name__).warning(
            "%s with MODEL.FPN.FUSE_TYPE=%r: EfficientDet's BiFPN uses 'weighted' (fast normalised fusion)",
            backbone_name(preset), kwargs.get("fuse_type", "sum"),
        )


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
    merged = {**PRESETS[preset], **kwargs}
    _warn_if_bifpn_without_weighted_fusion(preset, merged)
    return FeaturePyramid(**merged)


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
    _warn_if_bifpn_without_weighted_fusion(preset, kwargs)
    if cfg.FPN_VARIANTS.TOP_BLOCK not in TOP_BLOCKS:  # fail before building the bottom-up pathway
        _top_block(cfg, {})
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


def _register(preset: str) -> None:
    def builder(cfg, input_shape: ShapeSpec):
        return build_pyramid_backbone(cfg, input_shape, preset)

    builder.__name__ = builder.__qualname__ = backbone_name(preset)
    builder.__doc__ = f"Detectron2 backbone builder for the {preset!r} preset (see fpn_variants.modeling.presets)."
    if builder.__name__ not in BACKBONE_REGISTRY:
        BACKBONE_REGISTRY.register(builder)


for _preset in PRESETS:
    _register(_preset)

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
