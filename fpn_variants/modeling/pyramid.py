"""The composable parts of a feature pyramid, and the one module that assembles them.

A pyramid here is (Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017,
arXiv 1612.03144, §3 and Fig. 3):

* a **lateral connection** per level of the bottom-up pathway C2..C5 (a 1×1 conv to ``d``
  channels, a stack of residual blocks, or nothing), on every level or on the coarsest only;
* zero or more **paths** over the levels: the paper's **top-down pathway** (the coarser merged map
  upsampled to the size of the finer level and fused with that level's lateral map); PANet's extra
  **bottom-up path** (Liu et al., CVPR 2018: N2 = P2, N_{k+1} = 3×3 conv(3×3/2 conv(N_k) + P_{k+1}));
  **BiFPN** layers (Tan et al., EfficientDet, CVPR 2020: a top-down then a bottom-up pass with a
  conv on every fused node, the bottom-up nodes also taking the layer's input, repeated);
* a **fusion** op where maps meet (:class:`Fusion`: element-wise ``"sum"`` as in the paper,
  ``"avg"``, ``"concat"`` + 1×1 conv, or BiFPN's fast normalised ``"weighted"`` sum);
* an **output** op per level (a 3×3 conv, or nothing);
* an **activation** after every extra conv (the paper: none, §3 "minor impacts"; ReLU or swish);
* a **top block** that adds coarser levels (P6 by stride-2 subsampling of P5, P6 by a 3×3/2 conv of
  C5, or P6/P7 by convs).

The paper's ablations (Table 1 rows (c)-(e), Fig. 1(c), the residual connections of §3) are
presets of these parts: see :data:`fpn_variants.modeling.presets.PRESETS`. :class:`FeaturePyramid`
works on a dict of synthetic maps (no ResNet needed) or wraps a bottom-up backbone, and then is a
Detectron2 :class:`~detectron2.modeling.Backbone` with outputs ``p2..p6``.

With the ``"fpn"`` preset, Detectron2's parameter names (``fpn_lateral{k}``, ``fpn_output{k}``,
``bottom_up.*``, ``top_block.*``) and arithmetic are kept, so a Detectron2 ``FPN`` checkpoint loads
with ``strict=True`` and gives identical outputs (``tests/test_parity.py``).
"""
from __future__ import annotations

import copy
import math
from typing import Dict, List, Optional, Sequence

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling.backbone import Backbone
from torch import nn

from .options import PyramidOptions
from .registry import ACTIVATIONS, FUSIONS, LATERALS, OUTPUTS, PATHS, UPSAMPLES

__all__ = [
    "ResidualBottleneck",
    "Fusion",
    "SumFusion",
    "ConcatFusion",
    "WeightedFusion",
    "Interpolate",
    "TopDownPath",
    "BottomUpPath",
    "BiFPNLayer",
    "build_lateral",
    "build_output",
    "build_fusion",
    "fuse",
    "FeaturePyramid",
]

WEIGHTED_FUSION_EPS = 1e-4  # EfficientDet §3.3

# Activations are modules (no parameters), not functions, so that Detectron2's Conv2d holding one scripts.
ACTIVATIONS.register("none")(lambda: None)  # the paper: no non-linearity in the extra layers (§3)
ACTIVATIONS.register("relu")(nn.ReLU)
ACTIVATIONS.register("swish")(nn.SiLU)  # EfficientDet


def _activation(name: str) -> Optional[nn.Module]:
    """A new activation module, or ``None`` for ``"none"``."""
    return ACTIVATIONS.get(name)()


def _conv(in_channels: int, out_channels: int, kernel_size: int, norm: str, *, stride: int = 1,
          activation: str = "none", separable: bool = False) -> nn.Module:
    """A conv with ``norm`` (Detectron2 name, "" for none), a bias exactly when there is no norm, and
    ``activation`` after the norm, initialised with ``c2_xavier_fill`` (the init Detectron2's FPN
    uses) so that every variant starts from the same init. ``separable``: a depthwise ``kernel_size``
    conv (no norm, no bias) followed by this pointwise 1×1 conv (EfficientDet's separable conv)."""
    act = _activation(activation)
    if separable and kernel_size > 1:
        depthwise = Conv2d(in_channels, in_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                           groups=in_channels, bias=False)
        weight_init.c2_xavier_fill(depthwise)
        return nn.Sequential(depthwise, _conv(in_channels, out_channels, 1, norm, activation=activation))
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        bias=not norm,
        norm=get_norm(norm, out_channels),
        activation=act,
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


@LATERALS.register("conv1x1")
def conv1x1_lateral(in_channels: int, out_channels: int, opts: PyramidOptions) -> nn.Module:
    """The paper's lateral connection (§3): a 1×1 conv C_k (N, C_k, H, W) -> (N, d, H, W), with
    ``opts.norm`` and ``opts.activation``."""
    return _conv(in_channels, out_channels, 1, opts.norm, activation=opts.activation)


@LATERALS.register("residual")
def residual_lateral(in_channels: int, out_channels: int, opts: PyramidOptions) -> nn.Module:
    """§3's "multi-layer residual blocks as the connections": ``opts.residual_blocks``
    :class:`ResidualBottleneck` blocks, the first projecting C_k to d; inner width
    ``opts.bottleneck_channels`` (or d // 4). The blocks keep their inner ReLUs and unrectified sum.

    Raises:
        ValueError: GN with a bottleneck width that is not a multiple of 32 (GN's 32 groups).
    """
    bottleneck_channels = opts.bottleneck_channels
    width = bottleneck_channels if bottleneck_channels else max(out_channels // 4, 1)
    if opts.norm == "GN" and width % 32:
        raise ValueError(
            f"norm='GN' uses 32 groups, but the residual laterals' bottleneck width is {width} "
            f"({'bottleneck_channels' if bottleneck_channels else f'd // 4 with d = {out_channels}'}), not a multiple of 32: "
            "use d a multiple of 128, or FPN_VARIANTS.RESIDUAL_BOTTLENECK_CHANNELS a multiple of 32")
    blocks = [ResidualBottleneck(in_channels, out_channels, width, opts.norm)]
    blocks += [ResidualBottleneck(out_channels, out_channels, width, opts.norm) for _ in range(opts.residual_blocks - 1)]
    return nn.Sequential(*blocks)


def build_lateral(
    kind: str,
    in_channels: int,
    out_channels: int,
    norm: str = "",
    residual_blocks: int = 1,
    bottleneck_channels: Optional[int] = None,
    activation: str = "none",
) -> nn.Module:
    """Build one lateral connection C_k -> (N, out_channels, H_k, W_k), stride 1: the registered
    lateral op ``kind`` (:data:`~fpn_variants.modeling.registry.LATERALS`: ``"conv1x1"``,
    ``"residual"``, ...) with these options.

    Raises:
        ValueError: unknown ``kind`` or ``activation``, ``residual_blocks < 1``, or GN with a residual
            bottleneck width that is not a multiple of 32.
    """
    opts = PyramidOptions(lateral=kind, norm=norm, residual_blocks=residual_blocks,
                          bottleneck_channels=bottleneck_channels, activation=activation)
    return LATERALS.get(kind)(in_channels, out_channels, opts)


@OUTPUTS.register("conv3x3")
def conv3x3_output(channels: int, opts: PyramidOptions) -> nn.Module:
    """The paper's output op: a 3×3 conv on each merged map "to reduce the aliasing effect of
    upsampling" (§3), (N, d, H, W) -> (N, d, H, W)."""
    return _conv(channels, channels, 3, opts.norm, activation=opts.activation)


@OUTPUTS.register("none")
def no_output(channels: int, opts: PyramidOptions) -> None:
    """No output op: the merged map is P_k."""
    return None


def build_output(kind: str, channels: int, norm: str = "", activation: str = "none") -> Optional[nn.Module]:
    """Build the output op ``kind`` of one level (:data:`~fpn_variants.modeling.registry.OUTPUTS`:
    ``"conv3x3"`` or ``"none"``, which returns ``None``).

    Raises:
        ValueError: unknown ``kind`` or ``activation``.
    """
    return OUTPUTS.get(kind)(channels, PyramidOptions(output=kind, norm=norm, activation=activation))


def fuse(inputs: List[torch.Tensor], fuse_type: str) -> torch.Tensor:
    """Parameter-free fusion of maps of equal shape (N, d, H, W) where paths meet: ``"sum"`` (paper
    §3, element-wise addition, left to right) or ``"avg"`` (their mean). One input is returned
    unchanged. The learned fusions are :class:`Fusion` modules.

    Raises:
        ValueError: ``fuse_type`` not ``"sum"`` / ``"avg"``.
    """
    if fuse_type != "sum" and fuse_type != "avg":  # no _check_choice: this runs in TorchScript too
        raise ValueError("fuse_type={!r} is not valid here; valid values: 'sum', 'avg'".format(fuse_type))
    out = inputs[0]
    for x in inputs[1:]:
        out = out + x
    if fuse_type == "avg" and len(inputs) > 1:
        out = out / len(inputs)
    return out


class Fusion(nn.Module):
    """Base of the fusion ops: fuse ``num_inputs`` maps (N, d, H, W) into one (N, d, H, W). The ops
    are registered in :data:`~fpn_variants.modeling.registry.FUSIONS` (:func:`build_fusion`):

    * ``"sum"`` / ``"avg"`` (:class:`SumFusion`): :func:`fuse`, no parameters (the paper: sum);
    * ``"concat"`` (:class:`ConcatFusion`): concatenate, then a 1×1 conv back to d;
    * ``"weighted"`` (:class:`WeightedFusion`): EfficientDet's fast normalised fusion.

    Raises:
        ValueError: at build, ``num_inputs < 2``; at call time, another number of inputs.
    """

    def __init__(self, num_inputs: int, kind: str):
        super().__init__()
        if num_inputs < 2:
            raise ValueError(f"num_inputs={num_inputs}: a fusion node joins at least 2 maps")
        self.num_inputs = num_inputs
        self.kind = kind  # an instance attribute: TorchScript does not see class attributes

    def _check(self, inputs: List[torch.Tensor]) -> None:
        if len(inputs) != self.num_inputs:
            raise ValueError("Fusion('{}') built for {} inputs got {}".format(self.kind, self.num_inputs, len(inputs)))

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, num_inputs={self.num_inputs}"


class SumFusion(Fusion):
    """Element-wise sum (paper §3) or, with ``kind="avg"``, mean of the inputs; no parameters."""

    def __init__(self, num_inputs: int, kind: str = "sum"):
        super().__init__(num_inputs, kind)

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        self._check(inputs)
        return fuse(inputs, self.kind)


class ConcatFusion(Fusion):
    """Concatenate to (N, num_inputs·d, H, W), then a 1×1 conv (with ``norm``) back to (N, d, H, W)."""

    def __init__(self, num_inputs: int, channels: int, norm: str = ""):
        super().__init__(num_inputs, "concat")
        self.proj = _conv(num_inputs * channels, channels, 1, norm)

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        self._check(inputs)
        return self.proj(torch.cat(inputs, dim=1))


class WeightedFusion(Fusion):
    """EfficientDet's fast normalised fusion (Tan et al., CVPR 2020, §3.3):
    ``sum_i w_i x_i / (eps + sum_j w_j)`` with ``w_i = relu(θ_i)`` learned, ``θ`` initialised to ones,
    ``eps`` = 1e-4."""

    def __init__(self, num_inputs: int, eps: float = WEIGHTED_FUSION_EPS):
        super().__init__(num_inputs, "weighted")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_inputs))

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        self._check(inputs)
        w = F.relu(self.weight)
        w = w / (w.sum() + self.eps)
        out = w[0] * inputs[0]
        for i in range(1, len(inputs)):
            out = out + w[i] * inputs[i]
        return out


FUSIONS.register("sum")(lambda n, channels, opts: SumFusion(n, "sum"))
FUSIONS.register("avg")(lambda n, channels, opts: SumFusion(n, "avg"))
FUSIONS.register("concat")(lambda n, channels, opts: ConcatFusion(n, channels, opts.norm))
FUSIONS.register("weighted")(lambda n, channels, opts: WeightedFusion(n))


def build_fusion(kind: str, num_inputs: int, channels: int, norm: str = "") -> Fusion:
    """The registered fusion op ``kind`` (:data:`~fpn_variants.modeling.registry.FUSIONS`) joining
    ``num_inputs`` maps of ``channels`` channels.

    Raises:
        ValueError: unknown ``kind`` or ``num_inputs < 2``.
    """
    return FUSIONS.get(kind, "fuse_type")(num_inputs, channels, PyramidOptions(fuse_type=kind, norm=norm))


class Interpolate(nn.Module):
    """Upsampling by interpolation to the size of a finer map: ``forward(x (N, d, h, w), like (N, *,
    H, W)) -> (N, d, H, W)``, ``mode`` ``"nearest"`` (paper §3, "for simplicity") or ``"bilinear"``;
    to the exact size, so odd sizes work. No parameters."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode=self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


UPSAMPLES.register("nearest")(lambda channels, opts: Interpolate("nearest"))
UPSAMPLES.register("bilinear")(lambda channels, opts: Interpolate("bilinear"))


def _downsample_pool(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    y = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    return y if y.shape[-2:] == like.shape[-2:] else F.interpolate(y, size=like.shape[-2:], mode="nearest")


class _NoMap(nn.Module):
    """Placeholder op of a level that has no map of its own (a level without a lateral connection):
    no parameters, returns ``None``."""

    def forward(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        return None


class _NoFusion(nn.Module):
    """Placeholder fusion of a top-down level without a lateral map: no parameters, never called
    with two maps (the top-down pathway passes the upsampled map on); returns the last input."""

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        return inputs[-1]


class _ScriptViews:
    """Mixin for modules that keep plain Python lists of modules registered under other names (e.g.
    ``fpn_lateral2``, as Detectron2's ``FPN`` does) or in another order (a top-down pass runs coarse to
    fine over module lists built fine to coarse). ``_SCRIPT_VIEWS`` names those lists.

    TorchScript iterates module lists but not Python lists of modules, and cannot iterate a module
    list backwards, so ``__prepare_scriptable__`` (called by ``torch.jit.script``) returns a deep copy
    in which every view of this module and of its submodules is an ``nn.ModuleList``; the forward
    code is the same in eager mode and in TorchScript. This is Detectron2's approach for its ``FPN``
    and ``ResNet`` (``detectron2/export/torchscript_patch.py``). The registered names stay, so the
    copy's ``state_dict`` holds every key of the original plus the views' keys for the same tensors.
    Note that ``torch.jit.script(model)`` puts prepared copies into ``model`` itself (PyTorch's
    behaviour, as with Detectron2's FPN): load checkpoints before scripting.

    The outermost such module converts all nested views in its one copy, so no module is created
    while PyTorch prepares the rest of the model (its preparation memo is keyed by ``id`` and does
    not keep the replaced originals alive: a module created after another module's preparation freed
    its original could take that id and be swapped for the wrong module).
    """

    _SCRIPT_VIEWS: Sequence[str] = ()

    def _views_are_module_lists(self) -> bool:
        return all(isinstance(getattr(self, name), nn.ModuleList) for name in self._SCRIPT_VIEWS)

    def __prepare_scriptable__(self):
        nested = [m for m in self.modules() if isinstance(m, _ScriptViews)]
        if all(m._views_are_module_lists() for m in nested):
            return self
        ret = copy.deepcopy(self)
        for m in ret.modules():
            if isinstance(m, _ScriptViews):
                for name in m._SCRIPT_VIEWS:
                    setattr(m, name, nn.ModuleList(getattr(m, name)))
        return ret


class TopDownPath(_ScriptViews, nn.Module):
    """The paper's top-down pathway (§3, Fig. 3) over the levels, fine to coarse.

    The coarsest map starts the pathway; each finer level gets the coarser merged map upsampled (the
    ``opts.upsample_mode`` op, to that level's size) and fused (``opts.fuse_type``) with its own lateral
    map when it has one (``level_has_lateral[i]``), else the upsampled map alone. No conv on the nodes
    (the output op follows). Maps: list of (N, d, H_k, W_k), strides 2**k; ``None`` where a level has
    no lateral. Registered as path ``"top_down"``, stage ``"merge"`` (on the lateral maps).

    Raises:
        ValueError: at call time, no map at the coarsest level.
    """

    STAGE = "merge"
    REPEATABLE = False
    _SCRIPT_VIEWS = ("_fusions_coarse_to_fine", "_upsamples_coarse_to_fine")

    def __init__(self, level_has_lateral: Sequence[bool], channels: int, opts: PyramidOptions):
        super().__init__()
        make_fusion, make_upsample = FUSIONS.get(opts.fuse_type), UPSAMPLES.get(opts.upsample_mode)
        self.fusions = nn.ModuleList(
            [make_fusion(2, channels, opts) if lat else _NoFusion() for lat in level_has_lateral[:-1]]
        )
        self.upsamples = nn.ModuleList([make_upsample(channels, opts) for _ in level_has_lateral[:-1]])
        # the order the pathway runs in, coarse to fine (views of the lists above; see _ScriptViews)
        self._fusions_coarse_to_fine = list(self.fusions)[::-1]
        self._upsamples_coarse_to_fine = list(self.upsamples)[::-1]

    def forward(self, maps: List[Optional[torch.Tensor]], sizes: List[torch.Tensor]) -> List[torch.Tensor]:
        n = len(maps)
        prev = maps[n - 1]
        if prev is None:
            raise ValueError("the top-down pathway starts at the coarsest level, which has no map")
        out: List[torch.Tensor] = [prev]
        for j, (fusion, upsample) in enumerate(zip(self._fusions_coarse_to_fine, self._upsamples_coarse_to_fine)):
            i = n - 2 - j
            top_down = upsample(prev, sizes[i])
            lateral = maps[i]
            prev = top_down if lateral is None else fusion([lateral, top_down])
            out.insert(0, prev)
        return out


class BottomUpPath(nn.Module):
    """PANet's bottom-up path augmentation (Liu et al., CVPR 2018, §3.1, Fig. 2): ``N_2 = P_2``;
    ``N_{k+1} = conv3x3(fuse(P_{k+1}, conv3x3_stride2(N_k)))``. Maps: list of (N, d, H_k, W_k) fine to
    coarse, strides 2**k, in and out. Registered as path ``"bottom_up"``, stage ``"post"``."""

    STAGE = "post"
    REPEATABLE = False

    def __init__(self, level_has_lateral: Sequence[bool], channels: int, opts: PyramidOptions):
        super().__init__()
        n = len(level_has_lateral) - 1

        def conv(stride=1):
            return _conv(channels, channels, 3, opts.norm, stride=stride, activation=opts.activation,
                         separable=opts.separable)

        self.downsample = nn.ModuleList([conv(stride=2) for _ in range(n)])
        self.fusions = nn.ModuleList([FUSIONS.get(opts.fuse_type)(2, channels, opts) for _ in range(n)])
        self.convs = nn.ModuleList([conv() for _ in range(n)])

    def forward(self, maps: List[torch.Tensor]) -> List[torch.Tensor]:
        out = [maps[0]]
        for i, (downsample, fusion, conv) in enumerate(zip(self.downsample, self.fusions, self.convs)):
            down = downsample(out[-1])
            if down.shape[-2:] != maps[i + 1].shape[-2:]:  # only for sizes the bottom-up pathway rounds differently
                down = F.interpolate(down, size=maps[i + 1].shape[-2:], mode="nearest")
            out.append(conv(fusion([maps[i + 1], down])))
        return out


class BiFPNLayer(_ScriptViews, nn.Module):
    """One BiFPN layer (Tan et al., EfficientDet, CVPR 2020, §3.2-3.3, Fig. 2(d)) over the levels,
    fine to coarse.

    Top-down: ``T_L = X_L``; ``T_k = conv(fuse(X_k, up(T_{k+1})))``. Bottom-up: ``O_1 = T_1``;
    ``O_k = conv(fuse(X_k, T_k, down(O_{k-1})))`` and ``O_L = conv(fuse(X_L, down(O_{L-1})))`` at the
    coarsest level. ``up`` = the ``opts.upsample_mode`` op, ``down`` = 3×3/2 max pooling, ``conv`` = 3×3
    conv (depthwise-separable if ``opts.separable``) with ``opts.norm`` and ``opts.activation``.
    EfficientDet uses weighted fusion, separable convs, BN and swish. Maps (N, d, H_k, W_k) in and out.
    Registered as path ``"bifpn"``, stage ``"post"``, repeated ``opts.path_repeats`` times.

    Raises:
        ValueError: fewer than 2 levels.
    """

    STAGE = "post"
    REPEATABLE = True
    _SCRIPT_VIEWS = ("_td_fusions_coarse_to_fine", "_td_convs_coarse_to_fine", "_td_upsamples_coarse_to_fine")

    def __init__(self, level_has_lateral: Sequence[bool], channels: int, opts: PyramidOptions):
        super().__init__()
        L = len(level_has_lateral)
        if L < 2:
            raise ValueError(f"a BiFPN layer needs >= 2 levels, got {L}")
        make_fusion = FUSIONS.get(opts.fuse_type)

        def conv():
            return _conv(channels, channels, 3, opts.norm, activation=opts.activation, separable=opts.separable)

        self.td_fusions = nn.ModuleList([make_fusion(2, channels, opts) for _ in range(L - 1)])
        self.td_convs = nn.ModuleList([conv() for _ in range(L - 1)])
        self.td_upsamples = nn.ModuleList([UPSAMPLES.get(opts.upsample_mode)(channels, opts) for _ in range(L - 1)])
        self.bu_fusions = nn.ModuleList([make_fusion(3 if k < L - 1 else 2, channels, opts) for k in range(1, L)])
        self.bu_convs = nn.ModuleList([conv() for _ in range(L - 1)])
        # the top-down pass runs coarse to fine (views of the td_ lists; see _ScriptViews)
        self._td_fusions_coarse_to_fine = list(self.td_fusions)[::-1]
        self._td_convs_coarse_to_fine = list(self.td_convs)[::-1]
        self._td_upsamples_coarse_to_fine = list(self.td_upsamples)[::-1]

    def forward(self, maps: List[torch.Tensor]) -> List[torch.Tensor]:
        L = len(maps)
        td: List[torch.Tensor] = [maps[L - 1]]
        for j, (fusion, conv, upsample) in enumerate(zip(self._td_fusions_coarse_to_fine, self._td_convs_coarse_to_fine,
                                                         self._td_upsamples_coarse_to_fine)):
            k = L - 2 - j
            td.insert(0, conv(fusion([maps[k], upsample(td[0], maps[k])])))
        out = [td[0]]
        for i, (fusion, conv) in enumerate(zip(self.bu_fusions, self.bu_convs)):
            k = i + 1
            down = _downsample_pool(out[-1], maps[k])
            inputs = [maps[k], td[k], down] if k < L - 1 else [maps[k], down]
            out.append(conv(fusion(inputs)))
        return out


PATHS.register("top_down")(TopDownPath)
PATHS.register("bottom_up")(BottomUpPath)
PATHS.register("bifpn")(BiFPNLayer)


def _present(maps: List[Optional[torch.Tensor]]) -> List[torch.Tensor]:
    """``maps`` with the ``Optional`` removed; every level has a map when there is no top-down pathway
    (checked at build)."""
    out: List[torch.Tensor] = []
    for x in maps:
        if x is None:
            raise ValueError("a pyramid level has no map: without a top-down pathway every level needs a lateral")
        out.append(x)
    return out


def _build_paths(names: Sequence[str], level_has_lateral: List[bool], channels: int,
                 opts: PyramidOptions) -> nn.ModuleList:
    """The registered paths ``names`` in order, a repeatable one ``opts.path_repeats`` times (own weights)."""
    paths: List[nn.Module] = []
    for name in names:
        cls = PATHS.get(name)
        paths += [cls(level_has_lateral, channels, opts) for _ in range(opts.path_repeats if cls.REPEATABLE else 1)]
    return nn.ModuleList(paths)


def _stage(stride: int) -> int:
    return int(math.log2(stride))


class FeaturePyramid(_ScriptViews, Backbone):
    """A feature pyramid assembled from the parts in this module.

    Input: the bottom-up maps ``{name: (N, C_k, H_k, W_k)}`` for ``in_features`` ordered fine to
    coarse with log2-contiguous strides (e.g. ``res2..res5`` = C2..C5, strides 4, 8, 16, 32).
    Output: ``{"p{k}": (N, out_channels, H_k, W_k)}``, one per input level, with stride 2**k, plus
    the top block's levels (e.g. ``p6``, stride 64, from the ``"p6_subsample"`` top block).

    The constructor takes Detectron2's ``FPN`` arguments (``bottom_up``, ``in_features``,
    ``out_channels``, ``norm``, ``top_block``, ``fuse_type``, ``square_pad``), so a LazyConfig
    ``L(FPN)(...)`` becomes this pyramid by swapping its ``_target_`` (``configs/lazy/``), and its
    design by the keyword arguments below or a preset (:func:`fpn_variants.modeling.preset_pyramid`).

    Args:
        input_shapes: ``ShapeSpec(channels, stride)`` of every bottom-up map (a superset of
            ``in_features`` is fine); ``None``: ``bottom_up.output_shape()``.
        in_features: the bottom-up maps used, fine to coarse.
        out_channels: the pyramid's ``d`` (paper: 256).
        lateral ... path_repeats: the design, validated once as a
            :class:`~fpn_variants.modeling.options.PyramidOptions` (kept as ``self.options``), whose
            op names are looked up in the registries of :mod:`fpn_variants.modeling.registry`:
        lateral: lateral op (``LATERALS``: ``"conv1x1"``, ``"residual"``).
        lateral_levels: ``"all"`` or ``"coarsest"`` (only C5 gets a lateral; Table 1(e)).
        paths: paths over the levels (``PATHS``), ``()``: no path, Table 1(d).
            ``"top_down"`` (at most once, first) merges the lateral maps before the output op;
            ``"bottom_up"`` (PANet) and ``"bifpn"`` run after the output op, in the order given.
        output: output op (``OUTPUTS``: ``"conv3x3"``, ``"none"``).
        fuse_type: fusion op (``FUSIONS``: sum, avg, concat, weighted) at every fusion node of every path.
        activation: (``ACTIVATIONS``: none, relu, swish) after every extra conv (lateral 1×1, output 3×3,
            path convs); the paper: ``"none"``.
        separable: depthwise-separable 3×3 convs in the ``bottom_up`` / ``bifpn`` paths.
        path_repeats: how many times each repeatable path (``"bifpn"``) of ``paths`` is applied (own weights each).
        upsample_mode: ``"nearest"`` (paper) or ``"bilinear"``; upsampling goes to the size of the
            finer bottom-up map, so odd sizes work.
        norm: Detectron2 norm name for every extra conv ("" = none, the paper).
        residual_blocks, bottleneck_channels: see :func:`build_lateral`.
        top_block: a module with ``in_feature`` (a bottom-up name such as ``"res5"`` or an output
            name such as ``"p5"``), ``num_levels`` and ``forward(x) -> list of maps``, e.g.
            Detectron2's ``LastLevelMaxPool``; ``None`` for no extra level.
        bottom_up: optional bottom-up backbone; if given, ``forward`` takes images (N, 3, H, W),
            else it takes the dict of bottom-up maps.
        square_pad: pad images to a square of this size (pixels; Detectron2's ``FPN`` argument, used by
            ViTDet-style recipes); 0 = no square padding.

    Raises:
        ValueError: neither ``input_shapes`` nor ``bottom_up``, a negative ``square_pad``, a name not in ``input_shapes``, strides not log2-contiguous or not increasing,
            ``out_channels <= 0``, an unknown op name, a top-down path whose coarsest level has no
            lateral, a level with neither a lateral nor a path reaching it, a top block whose input is
            neither a bottom-up map nor a pyramid level or is not at the coarsest level's stride, or GN
            residual laterals whose bottleneck width is not a multiple of 32.
    """

    _SCRIPT_VIEWS = ("laterals", "outputs")

    def __init__(
        self,
        input_shapes: Optional[Dict[str, ShapeSpec]] = None,
        in_features: Sequence[str] = (),
        out_channels: int = 256,
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
        activation: str = "none",
        separable: bool = False,
        path_repeats: int = 1,
        square_pad: int = 0,
    ):
        super().__init__()
        if input_shapes is None:
            if bottom_up is None:
                raise ValueError("give input_shapes (the bottom-up maps' ShapeSpecs) or a bottom_up backbone")
            input_shapes = bottom_up.output_shape()
        if not isinstance(square_pad, int) or square_pad < 0:
            raise ValueError(f"square_pad={square_pad!r} must be an int >= 0 (0: no square padding)")
        self._square_pad = square_pad
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
        opts = PyramidOptions(
            lateral=lateral, lateral_levels=lateral_levels, paths=tuple(paths), output=output, fuse_type=fuse_type,
            upsample_mode=upsample_mode, norm=norm, residual_blocks=residual_blocks,
            bottleneck_channels=bottleneck_channels, activation=activation, separable=separable,
            path_repeats=path_repeats,
        )  # validated here, once
        if len(in_features) < 2 and opts.post_paths:
            raise ValueError(f"paths {opts.paths} need >= 2 levels; in_features={in_features}")

        self.bottom_up = bottom_up
        self.in_features = tuple(in_features)
        self.paths = opts.paths
        self.options = opts
        self.top_block = top_block

        stages = [_stage(s) for s in strides]
        # one op per level, fine to coarse, registered under Detectron2's names (fpn_lateral{k},
        # fpn_output{k}); these lists are views in level order (_NoMap / Identity where a level has
        # none), module lists in the TorchScript copy (see _ScriptViews)
        self.laterals: List[nn.Module] = []
        self.outputs: List[nn.Module] = []
        level_has_lateral: List[bool] = []
        make_lateral, make_output = LATERALS.get(opts.lateral), OUTPUTS.get(opts.output)
        for i, (name, stage) in enumerate(zip(in_features, stages)):
            has_lateral = opts.lateral_levels == "all" or i == len(in_features) - 1
            lat = make_lateral(input_shapes[name].channels, out_channels, opts) if has_lateral else None
            out = make_output(out_channels, opts)
            if lat is not None:
                self.add_module(f"fpn_lateral{stage}", lat)
            if out is not None:
                self.add_module(f"fpn_output{stage}", out)
            self.laterals.append(lat if lat is not None else _NoMap())
            self.outputs.append(out if out is not None else nn.Identity())
            level_has_lateral.append(lat is not None)
        # the merge-stage path keeps Detectron2-era name `top_down`; post paths are `post_paths.<i>`
        merge = opts.merge_path
        self.top_down = PATHS.get(merge)(level_has_lateral, out_channels, opts) if merge else None
        self.post_paths = _build_paths(opts.post_paths, level_has_lateral, out_channels, opts)
        top_levels = [False] * (top_block.num_levels if top_block is not None else 0)
        self.final_paths = _build_paths(opts.final_paths, [*level_has_lateral, *top_levels], out_channels, opts)

        self._out_feature_strides = {f"p{s}": 2**s for s in stages}
        if top_block is not None:
            src = top_block.in_feature
            src_stride = input_shapes[src].stride if src in input_shapes else self._out_feature_strides.get(src)
            if src_stride is None:
                raise ValueError(
                    f"top block input {src!r} is neither a bottom-up map ({', '.join(sorted(input_shapes))}) nor a "
                    f"pyramid level ({', '.join(self._out_feature_strides)}) of in_features {in_features}; give it the "
                    "coarsest level (FPN_VARIANTS.TOP_BLOCK p6_subsample / p6_c5 do) or no top block ('none')")
            if src_stride != strides[-1]:
                raise ValueError(
                    f"top block input {src!r} has stride {src_stride} but the coarsest level of in_features {in_features} "
                    f"has stride {strides[-1]}: its outputs would be named p{stages[-1] + 1}.. with the wrong strides; "
                    "give it the coarsest level")
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
        """Detectron2's padding constraints: ``square_pad`` (0 = no square padding, as its ``FPN`` by default)."""
        return {"square_size": self._square_pad}

    def pyramid(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Map bottom-up maps ``{name: (N, C_k, H_k, W_k)}`` to ``{"p{k}": (N, d, H_k, W_k)}``.

        Raises:
            KeyError: a map of ``in_features`` is missing from ``features``.
        """
        feats: List[torch.Tensor] = []
        for f in self.in_features:
            if f not in features:
                raise KeyError("bottom-up map '{}' missing; got {}".format(f, sorted(features.keys())))
            feats.append(features[f])
        merged: List[Optional[torch.Tensor]] = []
        for i, lateral in enumerate(self.laterals):
            merged.append(lateral(feats[i]))
        if self.top_down is not None:
            maps = self.top_down(merged, feats)
        else:
            maps = _present(merged)
        results: List[torch.Tensor] = []
        for i, output in enumerate(self.outputs):
            results.append(output(maps[i]))
        for path in self.post_paths:
            results = path(results)
        if self.top_block is not None:
            src = self.top_block.in_feature
            if src in features:
                top_in = features[src]
            else:  # a pyramid level (checked at build)
                top_in = results[self._out_features.index(src)]
            results.extend(self.top_block(top_in))
        for path in self.final_paths:
            results = path(results)
        return {name: x for name, x in zip(self._out_features, results)}

    def forward(self, x):
        """``x``: images (N, 3, H, W) when built with ``bottom_up``, else the dict of bottom-up maps.
        Returns ``{"p2": ..., "p6": ...}`` as described in the class docstring.

        Raises:
            TypeError: no ``bottom_up`` and ``x`` is not a dict.
        """
        if self.bottom_up is None:
            return self._forward_maps(x)
        return self.pyramid(self.bottom_up(x))

    @torch.jit.unused
    def _forward_maps(self, x) -> Dict[str, torch.Tensor]:
        # eager only: TorchScript needs one input type, and a scripted pyramid takes images
        if not isinstance(x, dict):
            raise TypeError("this FeaturePyramid has no bottom_up: pass a dict of bottom-up maps, not a tensor")
        return self.pyramid(x)

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }
