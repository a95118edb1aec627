"""The composable parts of a feature pyramid, and the one module that assembles them.

A pyramid here is (Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017,
arXiv 1612.03144, §3 and Fig. 3):

* a **lateral connection** per level of the bottom-up pathway C2..C5 (a 1×1 conv to ``d``
  channels, a stack of residual blocks, or nothing), on every level or on the coarsest only;
* zero or more **paths** over the levels; today the **top-down pathway** (the coarser merged map
  upsampled to the size of the finer level and fused with that level's lateral map);
* a **fusion** op where maps meet (element-wise ``"sum"`` as in the paper, or ``"avg"``);
* an **output** op per level (a 3×3 conv, or nothing);
* a **top block** that adds coarser levels (P6 by stride-2 subsampling of P5, or P6/P7 by convs).

The paper's ablations (Table 1 rows (c)-(e), Fig. 1(c), the residual connections of §3) are
presets of these parts: see :data:`fpn_variants.modeling.presets.PRESETS`. :class:`FeaturePyramid`
works on a dict of synthetic maps (no ResNet needed) or wraps a bottom-up backbone, and then is a
Detectron2 :class:`~detectron2.modeling.Backbone` with outputs ``p2..p6``.

With the ``"fpn"`` preset, Detectron2's parameter names (``fpn_lateral{k}``, ``fpn_output{k}``,
``bottom_up.*``, ``top_block.*``) and arithmetic are kept, so a Detectron2 ``FPN`` checkpoint loads
with ``strict=True`` and gives identical outputs (``tests/test_parity.py``).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling.backbone import Backbone
from torch import nn

__all__ = [
    "LATERAL_TYPES",
    "LATERAL_LEVELS",
    "PATHS",
    "FUSE_TYPES",
    "OUTPUT_TYPES",
    "UPSAMPLE_MODES",
    "ResidualBottleneck",
    "build_lateral",
    "build_output",
    "fuse",
    "FeaturePyramid",
]

LATERAL_TYPES = ("conv1x1", "residual")
LATERAL_LEVELS = ("all", "coarsest")
PATHS = ("top_down",)
FUSE_TYPES = ("sum", "avg")
OUTPUT_TYPES = ("conv3x3", "none")
UPSAMPLE_MODES = ("nearest", "bilinear")


def _check_choice(name: str, value, valid: Sequence) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; valid values: {', '.join(map(repr, valid))}")


def _conv(in_channels: int, out_channels: int, kernel_size: int, norm: str) -> Conv2d:
    """A conv with ``norm`` (Detectron2 name, "" for none) and a bias exactly when there is no norm,
    initialised with ``c2_xavier_fill`` (the init Detectron2's FPN uses) so that every variant
    starts from the same init."""
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        padding=kernel_size // 2,
        bias=not norm,
        norm=get_norm(norm, out_channels),
    )
    weight_init.c2_xavier_fill(conv)
    return conv


class ResidualBottleneck(nn.Module):
    """A bottleneck residual block used as a lateral connection (paper §3: "multi-layer residual
    blocks as the connections").

    ``y = shortcut(x) + conv1x1(relu(conv3x3(relu(conv1x1(x)))))`` with a 1×1 projection shortcut
    when ``in_channels != out_channels``. Unlike a ResNet stage the sum is *not* rectified, so the
    connection's output, like the 1×1 lateral's, can be negative before it meets the top-down map.

    Args:
        in_channels: channels of the input map.
        out_channels: channels of the output map (the pyramid's ``d``).
        bottleneck_channels: channels of the inner 1×1 / 3×3 convs.
        norm: Detectron2 norm name ("" for none, "BN", "GN", ...).

    Shapes: (N, in_channels, H, W) -> (N, out_channels, H, W); stride 1.
    """

    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int, norm: str = ""):
        super().__init__()
        if bottleneck_channels <= 0:
            raise ValueError(f"bottleneck_channels={bottleneck_channels} must be > 0")
        self.shortcut = _conv(in_channels, out_channels, 1, norm) if in_channels != out_channels else None
        self.conv1 = _conv(in_channels, bottleneck_channels, 1, norm)
        self.conv2 = _conv(bottleneck_channels, bottleneck_channels, 3, norm)
        self.conv3 = _conv(bottleneck_channels, out_channels, 1, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))
        return y + (self.shortcut(x) if self.shortcut is not None else x)


def build_lateral(
    kind: str,
    in_channels: int,
    out_channels: int,
    norm: str = "",
    residual_blocks: int = 1,
    bottleneck_channels: Optional[int] = None,
) -> nn.Module:
    """Build one lateral connection C_k -> (N, out_channels, H_k, W_k), stride 1.

    Args:
        kind: ``"conv1x1"`` (the paper's lateral, §3) or ``"residual"`` (a stack of
            ``residual_blocks`` :class:`ResidualBottleneck`, the first projecting to ``out_channels``).
        bottleneck_channels: inner width of residual blocks; ``None`` means ``out_channels // 4``.

    Raises:
        ValueError: unknown ``kind``, ``residual_blocks < 1`` or non-positive channel counts.
    """
    _check_choice("lateral", kind, LATERAL_TYPES)
    if kind == "conv1x1":
        return _conv(in_channels, out_channels, 1, norm)
    if residual_blocks < 1:
        raise ValueError(f"residual_blocks={residual_blocks} must be >= 1 for lateral='residual'")
    width = bottleneck_channels if bottleneck_channels else max(out_channels // 4, 1)
    blocks = [ResidualBottleneck(in_channels, out_channels, width, norm)]
    blocks += [ResidualBottleneck(out_channels, out_channels, width, norm) for _ in range(residual_blocks - 1)]
    return nn.Sequential(*blocks)


def build_output(kind: str, channels: int, norm: str = "") -> Optional[nn.Module]:
    """Build the output op of one level: ``"conv3x3"`` (the paper's 3×3 conv "to reduce the
    aliasing effect of upsampling", §3) or ``"none"`` (returns ``None``: the merged map is P_k)."""
    _check_choice("output", kind, OUTPUT_TYPES)
    return _conv(channels, channels, 3, norm) if kind == "conv3x3" else None


def fuse(inputs: List[torch.Tensor], fuse_type: str) -> torch.Tensor:
    """Fuse maps of equal shape (N, d, H, W) where paths meet: ``"sum"`` (paper §3, element-wise
    addition) or ``"avg"`` (their mean). One input is returned unchanged."""
    out = inputs[0]
    for x in inputs[1:]:
        out = out + x
    if fuse_type == "avg" and len(inputs) > 1:
        out = out / len(inputs)
    return out


def _stage(stride: int) -> int:
    return int(math.log2(stride))


class FeaturePyramid(Backbone):
    """A feature pyramid assembled from the parts in this module.

    Input: the bottom-up maps ``{name: (N, C_k, H_k, W_k)}`` for ``in_features`` ordered fine to
    coarse with log2-contiguous strides (e.g. ``res2..res5`` = C2..C5, strides 4, 8, 16, 32).
    Output: ``{"p{k}": (N, out_channels, H_k, W_k)}``, one per input level, with stride 2**k, plus
    the top block's levels (e.g. ``p6``, stride 64, from the ``"p6_subsample"`` top block).

    Args:
        input_shapes: ``ShapeSpec(channels, stride)`` of every bottom-up map (a superset of
            ``in_features`` is fine, e.g. ``bottom_up.output_shape()``).
        in_features: the bottom-up maps used, fine to coarse.
        out_channels: the pyramid's ``d`` (paper: 256).
        lateral: lateral op, one of :data:`LATERAL_TYPES`.
        lateral_levels: ``"all"`` or ``"coarsest"`` (only C5 gets a lateral; Table 1(e)).
        paths: paths over the levels, a sequence of :data:`PATHS` (``()``: no path, Table 1(d)).
        output: output op, one of :data:`OUTPUT_TYPES`.
        fuse_type: one of :data:`FUSE_TYPES`.
        upsample_mode: ``"nearest"`` (paper) or ``"bilinear"``; upsampling goes to the size of the
            finer bottom-up map, so odd sizes work.
        norm: Detectron2 norm name for every extra conv ("" = none, the paper).
        residual_blocks, bottleneck_channels: see :func:`build_lateral`.
        top_block: a module with ``in_feature`` (a bottom-up name such as ``"res5"`` or an output
            name such as ``"p5"``), ``num_levels`` and ``forward(x) -> list of maps``, e.g.
            Detectron2's ``LastLevelMaxPool``; ``None`` for no extra level.
        bottom_up: optional bottom-up backbone; if given, ``forward`` takes images (N, 3, H, W),
            else it takes the dict of bottom-up maps.

    Raises:
        ValueError: a name not in ``input_shapes``, strides not log2-contiguous or not increasing,
            ``out_channels <= 0``, an unknown op name, a top-down path whose coarsest level has no
            lateral, or a level with neither a lateral nor a path reaching it.
    """

    def __init__(
        self,
        input_shapes: Dict[str, ShapeSpec],
        in_features: Sequence[str],
        out_channels: int,
        *,
        lateral: str = "conv1x1",
        lateral_levels: str = "all",
        paths: Sequence[str] = ("top_down",),
        output: str = "conv3x3",
        fuse_type: str = "sum",
        upsample_mode: str = "nearest",
        norm: str = "",
        residual_blocks: int = 1,
        bottleneck_channels: Optional[int] = None,
        top_block: Optional[nn.Module] = None,
        bottom_up: Optional[nn.Module] = None,
    ):
        super().__init__()
        in_features = list(in_features)
        if not in_features:
            raise ValueError("in_features is empty; give the bottom-up maps, e.g. ['res2', 'res3', 'res4', 'res5']")
        missing = [f for f in in_features if f not in input_shapes]
        if missing:
            raise ValueError(f"in_features {missing} are not bottom-up outputs; available: {sorted(input_shapes)}")
        if not isinstance(out_channels, int) or out_channels <= 0:
            raise ValueError(f"out_channels (d) = {out_channels!r} must be a positive int (paper: 256)")
        strides = [input_shapes[f].stride for f in in_features]
        for prev, cur, name in zip(strides, strides[1:], in_features[1:]):
            if cur != 2 * prev:
                raise ValueError(
                    f"in_features {in_features} have strides {strides}: each must be twice the previous "
                    f"(fine to coarse, log2-contiguous), broken at {name!r}"
                )
        for name, value, valid in (
            ("lateral_levels", lateral_levels, LATERAL_LEVELS),
            ("fuse_type", fuse_type, FUSE_TYPES),
            ("upsample_mode", upsample_mode, UPSAMPLE_MODES),
            ("output", output, OUTPUT_TYPES),
            ("lateral", lateral, LATERAL_TYPES),
        ):
            _check_choice(name, value, valid)
        paths = tuple(paths)
        for p in paths:
            _check_choice("path", p, PATHS)
        if lateral_levels == "coarsest" and "top_down" not in paths:
            raise ValueError(
                "lateral_levels='coarsest' needs the 'top_down' path: without it the finer levels get no map"
            )

        self.bottom_up = bottom_up
        self.in_features = tuple(in_features)
        self.paths = paths
        self._fuse_type = fuse_type
        self._upsample_mode = upsample_mode
        self.top_block = top_block

        stages = [_stage(s) for s in strides]
        self.laterals: List[Optional[nn.Module]] = []
        self.outputs: List[Optional[nn.Module]] = []
        for i, (name, stage) in enumerate(zip(in_features, stages)):
            has_lateral = lateral_levels == "all" or i == len(in_features) - 1
            lat = (
                build_lateral(
                    lateral, input_shapes[name].channels, out_channels, norm, residual_blocks, bottleneck_channels
                )
                if has_lateral
                else None
            )
            out = build_output(output, out_channels, norm)
            if lat is not None:
                self.add_module(f"fpn_lateral{stage}", lat)
            if out is not None:
                self.add_module(f"fpn_output{stage}", out)
            self.laterals.append(lat)
            self.outputs.append(out)

        self._out_feature_strides = {f"p{s}": 2**s for s in stages}
        if top_block is not None:
            last = stages[-1]
            for s in range(last + 1, last + 1 + top_block.num_levels):
                self._out_feature_strides[f"p{s}"] = 2**s
        self._out_features = list(self._out_feature_strides)
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = strides[-1]

    @property
    def size_divisibility(self) -> int:
        """Images must be padded to a multiple of this (the coarsest bottom-up stride, pixels)."""
        return self._size_divisibility

    @property
    def padding_constraints(self) -> Dict[str, int]:
        """Detectron2's padding constraints: no square padding (as its ``FPN`` by default)."""
        return {"square_size": 0}

    def pyramid(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Map bottom-up maps ``{name: (N, C_k, H_k, W_k)}`` to ``{"p{k}": (N, d, H_k, W_k)}``.

        Raises:
            KeyError: a map of ``in_features`` is missing from ``features``.
        """
        try:
            feats = [features[f] for f in self.in_features]
        except KeyError as e:
            raise KeyError(f"bottom-up map {e.args[0]!r} missing; got {sorted(features)}") from None
        merged = [lat(x) if lat is not None else None for lat, x in zip(self.laterals, feats)]
        for path in self.paths:
            if path == "top_down":
                prev = merged[-1]
                for i in range(len(feats) - 2, -1, -1):
                    top_down = F.interpolate(prev, size=feats[i].shape[-2:], mode=self._upsample_mode)
                    inputs = [top_down] if merged[i] is None else [merged[i], top_down]
                    prev = merged[i] = fuse(inputs, self._fuse_type)
        results = [out(m) if out is not None else m for out, m in zip(self.outputs, merged)]
        if self.top_block is not None:
            src = self.top_block.in_feature
            if src in features:
                top_in = features[src]
            elif src in self._out_features[: len(results)]:
                top_in = results[self._out_features.index(src)]
            else:
                raise KeyError(f"top block input {src!r} is neither a bottom-up map nor a pyramid level")
            results.extend(self.top_block(top_in))
        return dict(zip(self._out_features, results))

    def forward(self, x):
        """``x``: images (N, 3, H, W) when built with ``bottom_up``, else the dict of bottom-up maps.
        Returns ``{"p2": ..., "p6": ...}`` as described in the class docstring."""
        if self.bottom_up is not None:
            x = self.bottom_up(x)
        elif not isinstance(x, dict):
            raise TypeError("this FeaturePyramid has no bottom_up: pass a dict of bottom-up maps, not a tensor")
        return self.pyramid(x)

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }
