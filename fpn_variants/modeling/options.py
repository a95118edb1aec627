"""The design options of one pyramid, validated once: :class:`PyramidOptions`.

Every op kind is checked against its registry (:mod:`fpn_variants.modeling.registry`); config
validation (:func:`fpn_variants.config.validate_config`) reuses the same vocabularies, so no list of
valid values is written twice.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional, Tuple

from .registry import ACTIVATIONS, FUSIONS, LATERALS, OUTPUTS, PATHS, UPSAMPLES

__all__ = ["LATERAL_LEVELS", "PyramidOptions"]

LATERAL_LEVELS = ("all", "coarsest")


@dataclass(frozen=True)
class PyramidOptions:
    """What a :class:`~fpn_variants.modeling.pyramid.FeaturePyramid` is made of (besides its levels,
    ``d``, the top block and the bottom-up pathway). Defaults: the paper's FPN (§3).

    Attributes:
        lateral: lateral op (:data:`~fpn_variants.modeling.registry.LATERALS`): ``"conv1x1"`` (paper),
            ``"residual"`` (§3's residual blocks as the connections).
        lateral_levels: ``"all"`` or ``"coarsest"`` (only C5 gets a lateral; Table 1(e)).
        paths: paths over the levels (:data:`~fpn_variants.modeling.registry.PATHS`), in order; a
            ``"merge"``-stage path (``"top_down"``, ``"simple"``) at most once and first, ``"post"``
            paths on the output maps, ``"final"`` paths (``"nasfpn"``) last, on every level including
            the top block's; ``()``: none (Table 1(d)).
        output: output op per level (:data:`~fpn_variants.modeling.registry.OUTPUTS`).
        fuse_type: fusion op at every fusion node (:data:`~fpn_variants.modeling.registry.FUSIONS`).
        upsample_mode: upsampling op of the top-down pathway and BiFPN (:data:`~fpn_variants.modeling.registry.UPSAMPLES`).
        norm: Detectron2 norm name for every extra conv ("" = none, the paper).
        residual_blocks: residual blocks per lateral (``lateral="residual"``), >= 1.
        bottleneck_channels: their inner width; ``None`` or 0: d // 4.
        activation: after every extra conv (:data:`~fpn_variants.modeling.registry.ACTIVATIONS`); paper: ``"none"``.
        separable: depthwise-separable 3x3 convs in the post paths (EfficientDet).
        path_repeats: copies (own weights each) of every repeatable path (BiFPN layers), >= 1.

    Raises:
        ValueError: at construction, an unregistered op name, a ``lateral_levels`` not in
            :data:`LATERAL_LEVELS`, a merge-stage path not alone in first place, ``"coarsest"``
            laterals without a merge-stage path, ``path_repeats`` or ``residual_blocks`` < 1, or a
            negative ``bottleneck_channels`` (each message names the bad value and what is valid).
    """

    lateral: str = "conv1x1"
    lateral_levels: str = "all"
    paths: Tuple[str, ...] = ("top_down",)
    output: str = "conv3x3"
    fuse_type: str = "sum"
    upsample_mode: str = "nearest"
    norm: str = ""
    residual_blocks: int = 1
    bottleneck_channels: Optional[int] = None
    activation: str = "none"
    separable: bool = False
    path_repeats: int = 1

    def __post_init__(self):
        object.__setattr__(self, "paths", tuple(self.paths))
        if self.lateral_levels not in LATERAL_LEVELS:
            raise ValueError(f"lateral_levels={self.lateral_levels!r} is not valid; valid values: "
                             f"{', '.join(map(repr, LATERAL_LEVELS))}")
        FUSIONS.check(self.fuse_type)
        UPSAMPLES.check(self.upsample_mode)
        OUTPUTS.check(self.output)
        LATERALS.check(self.lateral)
        ACTIVATIONS.check(self.activation)
        for p in self.paths:
            PATHS.check(p)
        merge = [i for i, p in enumerate(self.paths) if PATHS.get(p).STAGE == "merge"]
        if len(merge) > 1 or merge and merge[0] != 0:
            name = self.paths[merge[-1]]
            raise ValueError(f"paths={self.paths}: {name!r} may appear once, first (it merges the lateral maps)")
        stages = [PATHS.get(p).STAGE for p in self.paths]
        if "final" in stages and any(st != "final" for st in stages[stages.index("final"):]):
            raise ValueError(f"paths={self.paths}: a final-stage path (run on every level, the top block's too) "
                             "comes after every other path")
        if self.lateral_levels == "coarsest" and not merge:
            names = ", ".join(repr(p) for p in PATHS if PATHS.get(p).STAGE == "merge")
            raise ValueError(f"lateral_levels='coarsest' needs a merge-stage path ({names}): without it the finer "
                             "levels get no map")
        if not isinstance(self.path_repeats, int) or self.path_repeats < 1:
            raise ValueError(f"path_repeats={self.path_repeats!r} must be an int >= 1")
        if not isinstance(self.residual_blocks, int) or self.residual_blocks < 1:
            raise ValueError(f"residual_blocks={self.residual_blocks} must be >= 1 for lateral='residual'")
        if self.bottleneck_channels is not None and self.bottleneck_channels < 0:
            raise ValueError(f"bottleneck_channels={self.bottleneck_channels} must be > 0 (None or 0: d // 4)")

    @property
    def merge_path(self) -> Optional[str]:
        """The path run on the lateral maps before the output op (``"top_down"``), or ``None``."""
        return self.paths[0] if self.paths and PATHS.get(self.paths[0]).STAGE == "merge" else None

    @property
    def post_paths(self) -> Tuple[str, ...]:
        """The paths run on the output maps (before the top block), in order."""
        return tuple(p for p in self.paths if PATHS.get(p).STAGE == "post")

    @property
    def final_paths(self) -> Tuple[str, ...]:
        """The paths run on every level, the top block's included (NAS-FPN's cell), in order."""
        return tuple(p for p in self.paths if PATHS.get(p).STAGE == "final")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
