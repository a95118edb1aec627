"""The paper's pyramid designs, and the published ones beyond it, as presets of
:class:`~fpn_variants.modeling.pyramid.FeaturePyramid`.

A preset is data, not a class: the parts that make the design (:attr:`Preset.parts`, fixed) and the
settings the design is published with (:attr:`Preset.defaults`, e.g. BiFPN's weighted fusion), which
an explicit setting overrides. The builder (``build_{name}_backbone``, :mod:`.backbone`), LazyConfig's
:func:`~fpn_variants.modeling.backbone.preset_pyramid`, the configs and the benchmark all read them
from here. A new variant is one entry here (plus a test); a new kind of op is a constructor plus a
registry line (:mod:`.registry`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Dict

__all__ = ["Preset", "PRESETS"]


@dataclass(frozen=True)
class Preset(Mapping):
    """A design: ``parts`` (:class:`~fpn_variants.modeling.options.PyramidOptions` fields the design
    fixes: lateral, lateral_levels, paths, output), ``defaults`` (fields it is published with, which a
    user's explicit setting overrides) and ``source`` (paper, section / table / figure).

    A preset reads as the mapping of its parts, so ``FeaturePyramid(shapes, features, d, **preset)``
    builds the design with the library's defaults for the rest.
    """

    parts: Dict[str, object]
    defaults: Dict[str, object] = field(default_factory=dict)
    source: str = ""

    def __getitem__(self, key):
        return self.parts[key]

    def __iter__(self):
        return iter(self.parts)

    def __len__(self) -> int:
        return len(self.parts)


PRESETS: Dict[str, Preset] = {
    # Table 1(c) / 3(c): 1x1 laterals, top-down pathway (nearest x2, sum), 3x3 output convs.
    "fpn_full": Preset(dict(lateral="conv1x1", lateral_levels="all", paths=("top_down",), output="conv3x3"),
                       source="Lin et al. 2017, Table 1(c), Table 3(c)"),
    # Table 1(d) "bottom-up pyramid": no top-down pathway; 1x1 lateral + 3x3 on each C_k.
    "fpn_bottom_up_only": Preset(dict(lateral="conv1x1", lateral_levels="all", paths=(), output="conv3x3"),
                                 source="Lin et al. 2017, Table 1(d)"),
    # Table 1(e) "top-down pyramid, w/o lateral": only the 1x1 on C5 that starts the top-down
    # pathway; each finer level is the upsampled coarser map followed by its 3x3.
    "fpn_top_down_only": Preset(dict(lateral="conv1x1", lateral_levels="coarsest", paths=("top_down",), output="conv3x3"),
                                source="Lin et al. 2017, Table 1(e)"),
    # Fig. 1(c) pyramidal feature hierarchy made shareable: each C_k projected to d by its 1x1 only.
    "fpn_lateral_only": Preset(dict(lateral="conv1x1", lateral_levels="all", paths=(), output="none"),
                               source="Lin et al. 2017, Fig. 1(c)"),
    # §3 "multi-layer residual blocks as the connections": residual laterals, top-down as in FPN.
    "fpn_residual": Preset(dict(lateral="residual", lateral_levels="all", paths=("top_down",), output="conv3x3"),
                           source="Lin et al. 2017, §3"),
    # PANet (Liu et al., CVPR 2018): FPN, then a bottom-up path augmentation over P2..P5.
    "fpn_panet": Preset(dict(lateral="conv1x1", lateral_levels="all", paths=("top_down", "bottom_up"), output="conv3x3"),
                        source="Liu et al., PANet, CVPR 2018, §3.1"),
    # BiFPN (Tan et al., CVPR 2020): 1x1 laterals to d, then FPN_VARIANTS.PATH_REPEATS BiFPN layers,
    # with EfficientDet's fast normalised weighted fusion (§3.3) unless the fusion is set explicitly
    # (FPN_VARIANTS.SEPARABLE_CONV True for EfficientDet's separable convs).
    "fpn_bifpn": Preset(dict(lateral="conv1x1", lateral_levels="all", paths=("bifpn",), output="none"),
                        defaults=dict(fuse_type="weighted"), source="Tan et al., EfficientDet, CVPR 2020, §3"),
    # Beyond the paper, issue 19 (ops in fpn_variants/modeling/published_ops.py):
    # CARAFE (Wang et al., ICCV 2019): FPN with content-aware x2 upsampling in the top-down pathway.
    "fpn_carafe": Preset(dict(lateral="conv1x1", lateral_levels="all", paths=("top_down",), output="conv3x3"),
                         defaults=dict(upsample_mode="carafe"), source="Wang et al., CARAFE, ICCV 2019, §3-4"),
    # ASFF (Liu et al. 2019): FPN whose fusion nodes weight their inputs per pixel (softmax).
    "fpn_asff": Preset(dict(lateral="conv1x1", lateral_levels="all", paths=("top_down",), output="conv3x3"),
                       defaults=dict(fuse_type="asff"), source="Liu et al., ASFF, arXiv 1911.09516, §3.2"),
    # Libra R-CNN (Pang et al., CVPR 2019): FPN, then the balanced pyramid refinement (non-local).
    "fpn_bfp": Preset(dict(lateral="conv1x1", lateral_levels="all", paths=("top_down", "bfp"), output="conv3x3"),
                      source="Pang et al., Libra R-CNN, CVPR 2019, §3.2"),
    # ViTDet's simple feature pyramid (Li et al., ECCV 2022): every level from C5 by deconvolutions.
    "fpn_simple": Preset(dict(lateral="conv1x1", lateral_levels="coarsest", paths=("simple",), output="conv3x3"),
                         source="Li et al., ViTDet, ECCV 2022, §3"),
    # NAS-FPN (Ghiasi et al., CVPR 2019): 1x1 laterals, the P6 top block, then FPN_VARIANTS.PATH_REPEATS
    # discovered cells over P2..P6 (the paper: P3..P7, 7 cells, BN).
    "fpn_nasfpn": Preset(dict(lateral="conv1x1", lateral_levels="all", paths=("nasfpn",), output="none"),
                         source="Ghiasi et al., NAS-FPN, CVPR 2019, Fig. 7(f)"),
}
