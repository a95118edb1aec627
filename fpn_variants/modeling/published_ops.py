"""Published pyramid designs beyond the paper, each one registered op or path (issue 19):

* :class:`CARAFE` — content-aware upsampling (Wang et al., "CARAFE: Content-Aware ReAssembly of
  FEatures", ICCV 2019), upsample op ``"carafe"``;
* :class:`ASFFFusion` — adaptive spatial fusion with per-pixel softmax weights (Liu et al., "Learning
  Spatial Fusion for Single-Shot Object Detection", arXiv 1911.09516, 2019), fusion op ``"asff"``;
* :class:`BalancedPyramidPath` — Libra R-CNN's balanced feature pyramid refinement (Pang et al.,
  CVPR 2019, §3.2), post path ``"bfp"``;
* :class:`SimplePyramidPath` — ViTDet's simple feature pyramid, every level from one bottom-up map
  (Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection", ECCV 2022, §3),
  merge path ``"simple"``;
* :class:`NASFPNCell` — NAS-FPN's discovered cell with its sum and global-pooling attention merges
  (Ghiasi et al., CVPR 2019), repeatable final path ``"nasfpn"``.

Every design here runs over the same levels as the rest of this package (P2..P5 from C2..C5, P6 from
the top block) so that all share Detectron2's RPN / RoI heads and anchors; where a paper's levels or
details differ, the class docstring says how. All of them script (``torch.jit.script``) like the
paper's parts. Presets: :data:`fpn_variants.modeling.presets.PRESETS` (``fpn_carafe``, ``fpn_asff``,
``fpn_bfp``, ``fpn_simple``, ``fpn_nasfpn``).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, get_norm
from torch import nn

from .options import PyramidOptions
from .pyramid import Fusion, _conv
from .registry import FUSIONS, PATHS, UPSAMPLES

__all__ = ["CARAFE", "ASFFFusion", "NonLocal2d", "BalancedPyramidPath", "SimplePyramidPath", "NASFPN_CELL", "NASFPNCell"]


def _norm(norm: str, channels: int) -> Optional[nn.Module]:
    """Detectron2's ``get_norm``, except GN on fewer than 32 channels (ASFF's 16), which gets
    gcd(32, channels) groups instead of failing."""
    if norm == "GN" and channels % 32:
        return nn.GroupNorm(math.gcd(32, channels), channels)
    return get_norm(norm, channels)


def _resize_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` at ``like``'s spatial size (nearest) if it differs: odd input sizes, where a bottom-up
    pathway's stride-2 maps are not exactly half their finer neighbours."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class CARAFE(nn.Module):
    """CARAFE ×2 upsampling (Wang et al., ICCV 2019, §3): a kernel prediction module (1×1 channel
    compressor to ``compressed`` channels, a ``k_encoder``×``k_encoder`` content encoder to
    σ²·k_up² channels, pixel shuffle by σ = 2, softmax over the k_up² kernel entries) and content-aware
    reassembly: each output pixel is its predicted k_up×k_up kernel applied to the neighbourhood of its
    source pixel. Published setting: k_up = 5, k_encoder = 3, 64 compressed channels.

    ``forward(x (N, C, h, w), like (N, *, H, W)) -> (N, C, H, W)``: ×2, then resized (nearest) to
    ``like``'s size where that is not exactly 2h × 2w.

    Departures: reassembly here is pure PyTorch (``F.unfold``), which materialises the
    (N, C·k_up², 2h, 2w) neighbourhoods instead of the paper's fused CUDA kernel: the same arithmetic,
    25× the memory of the output map (d = 256 at an 800-px image's P2: about 1 GB per image).
    """

    def __init__(self, channels: int, k_up: int = 5, k_encoder: int = 3, compressed: int = 64, scale: int = 2):
        super().__init__()
        if k_up % 2 == 0 or k_encoder % 2 == 0:
            raise ValueError(f"CARAFE kernel sizes must be odd; got k_up={k_up}, k_encoder={k_encoder}")
        self.k_up, self.scale = k_up, scale
        self.compress = Conv2d(channels, compressed, 1)
        self.encode = Conv2d(compressed, scale * scale * k_up * k_up, k_encoder, padding=k_encoder // 2)
        weight_init.c2_xavier_fill(self.compress)
        nn.init.normal_(self.encode.weight, std=0.001)  # near-uniform kernels at init (the paper's code)
        nn.init.zeros_(self.encode.bias)

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.size(0), x.size(1), x.size(2), x.size(3)
        k, s = self.k_up, self.scale
        kernels = F.softmax(F.pixel_shuffle(self.encode(self.compress(x)), s), dim=1)  # (N, k², sh, sw)
        patches = F.unfold(x, kernel_size=k, padding=k // 2).view(n, c * k * k, h, w)
        patches = F.interpolate(patches, size=[s * h, s * w], mode="nearest").view(n, c, k * k, s * h, s * w)
        out = (patches * kernels.unsqueeze(1)).sum(dim=2)
        return _resize_like(out, like)

    def extra_repr(self) -> str:
        return f"k_up={self.k_up}, scale={self.scale}"


UPSAMPLES.register("carafe")(lambda channels, opts: CARAFE(channels))


class ASFFFusion(Fusion):
    """ASFF's adaptive spatial fusion (Liu et al. 2019, §3.2) of ``num_inputs`` maps (N, d, H, W):
    each input compressed by a 1×1 conv (+ ``norm``, LeakyReLU 0.1) to ``compressed`` channels, the
    concatenation mapped by a 1×1 conv to one logit per input and pixel, a softmax over the inputs
    giving per-pixel weights λ_i (Σ_i λ_i = 1), output ``Σ_i λ_i · x_i``.

    Departure: ASFF fuses all levels of a YOLOv3 head at each level; here it is the fusion op of the
    nodes of any path (the top-down pathway's two maps, BiFPN's two or three), with the path's own
    resizing. ``compressed`` = 16, ASFF's published width (its "ASFF*" setting uses 8); with GN
    those convs get 16 groups (Detectron2's 32 need 32 channels).
    """

    def __init__(self, num_inputs: int, channels: int, norm: str = "", compressed: int = 16):
        super().__init__(num_inputs, "asff")
        self.compress = nn.ModuleList(
            [Conv2d(channels, compressed, 1, bias=not norm, norm=_norm(norm, compressed),
                    activation=nn.LeakyReLU(0.1)) for _ in range(num_inputs)]
        )
        for m in self.compress:
            weight_init.c2_xavier_fill(m)
        self.logits = Conv2d(compressed * num_inputs, num_inputs, 1)
        weight_init.c2_xavier_fill(self.logits)

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        self._check(inputs)
        squeezed: List[torch.Tensor] = []
        for i, compress in enumerate(self.compress):
            squeezed.append(compress(inputs[i]))
        weights = F.softmax(self.logits(torch.cat(squeezed, dim=1)), dim=1)  # (N, num_inputs, H, W)
        out = weights[:, 0:1] * inputs[0]
        for i in range(1, len(inputs)):
            out = out + weights[:, i:i + 1] * inputs[i]
        return out


FUSIONS.register("asff")(lambda n, channels, opts: ASFFFusion(n, channels, opts.norm))


class NonLocal2d(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al., CVPR 2018), the refinement of Libra R-CNN's
    balanced pyramid: ``x + W(softmax(θ(x)ᵀ φ(x) / sqrt(c')) g(x))`` with θ, φ, g 1×1 convs to
    c' = C / 2 channels and W a 1×1 conv back to C, initialised to zero (the block starts as the
    identity). (N, C, H, W) -> (N, C, H, W); memory grows as (H·W)²."""

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__()
        inner = max(channels // reduction, 1)
        self.inner = inner
        self.theta, self.phi, self.g = (nn.Conv2d(channels, inner, 1) for _ in range(3))
        self.out = nn.Conv2d(inner, channels, 1)
        for m in (self.theta, self.phi, self.g):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w = x.size(0), x.size(2), x.size(3)
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (N, HW, c')
        phi = self.phi(x).flatten(2)  # (N, c', HW)
        g = self.g(x).flatten(2).transpose(1, 2)  # (N, HW, c')
        attn = F.softmax(torch.bmm(theta, phi) / math.sqrt(self.inner), dim=-1)
        y = torch.bmm(attn, g).transpose(1, 2).reshape(n, self.inner, h, w)
        return x + self.out(y)


class BalancedPyramidPath(nn.Module):
    """Libra R-CNN's balanced feature pyramid (Pang et al., CVPR 2019, §3.2) as a post path over
    P2..P5: **integrate** — every level resized to the size of the refine level (max pooling for finer
    levels, nearest upsampling for coarser ones) and averaged; **refine** — a :class:`NonLocal2d`
    block (the paper's choice over convolutions); **strengthen** — the refined map resized back to
    every level and added to it as a residual. Maps (N, d, H_k, W_k) in and out.

    The refine level is the middle one, ``num_levels // 2`` (P4 of P2..P5), as the paper's
    implementation picks the third of its five levels. Departure: its five levels are P2..P6; here the
    top block's P6 comes after the path, so it integrates P2..P5 only.
    """

    STAGE = "post"
    REPEATABLE = False

    def __init__(self, level_has_lateral: Sequence[bool], channels: int, opts: PyramidOptions):
        super().__init__()
        self.num_levels = len(level_has_lateral)
        if self.num_levels < 2:
            raise ValueError(f"the balanced pyramid needs >= 2 levels, got {self.num_levels}")
        self.refine_level = self.num_levels // 2
        # each level's size ratio to the refine level (ints, so that TorchScript keeps them ints)
        self.factors = [2 ** abs(i - self.refine_level) for i in range(self.num_levels)]
        self.refine = NonLocal2d(channels)

    def forward(self, maps: List[torch.Tensor]) -> List[torch.Tensor]:
        r = self.refine_level
        ref = maps[r]
        gathered: List[torch.Tensor] = []
        for i, x in enumerate(maps):
            if i < r:
                f = self.factors[i]
                y = F.max_pool2d(x, kernel_size=f, stride=f, ceil_mode=True)
            elif i > r:
                y = F.interpolate(x, size=ref.shape[-2:], mode="nearest")
            else:
                y = x
            gathered.append(_resize_like(y, ref))
        bsf = gathered[0]
        for y in gathered[1:]:
            bsf = bsf + y
        bsf = self.refine(bsf / len(gathered))
        out: List[torch.Tensor] = []
        for i, x in enumerate(maps):
            if i < r:
                res = F.interpolate(bsf, size=x.shape[-2:], mode="nearest")
            elif i > r:
                f = self.factors[i]
                res = _resize_like(F.max_pool2d(bsf, kernel_size=f, stride=f, ceil_mode=True), x)
            else:
                res = bsf
            out.append(x + res)
        return out


PATHS.register("bfp")(BalancedPyramidPath)


class SimplePyramidPath(nn.Module):
    """ViTDet's simple feature pyramid (Li et al., ECCV 2022, §3, Fig. 2(c)): every level from one
    map — the lateral map of the coarsest bottom-up level — with no top-down pathway and no other
    lateral: level k below it gets k stacked 2×2 stride-2 transposed convs (with ``opts.norm`` and a
    GELU between two of them, as ViTDet), the coarsest level is the map itself. A merge-stage path
    (it runs on the lateral maps, before the output op), so the preset pairs it with
    ``lateral_levels="coarsest"`` and the 3×3 output convs. Maps: list of (N, d, H_k, W_k) or ``None``
    in (only the coarsest used), (N, d, H_k, W_k) out, each at its bottom-up map's size.

    Departures: ViTDet builds from a plain ViT's stride-16 map (stride 32 by max pooling); with a
    hierarchical bottom-up pathway the one map here is C5 (stride 32), or C4 with
    ``MODEL.FPN.IN_FEATURES`` res2..res4 and the top block's P5; and ViTDet's deconvs act on the
    backbone's channels before its 1×1 to d, these on d channels after the 1×1 lateral.
    """

    STAGE = "merge"
    REPEATABLE = False

    def __init__(self, level_has_lateral: Sequence[bool], channels: int, opts: PyramidOptions):
        super().__init__()
        n = len(level_has_lateral)
        stacks = []
        for i in range(n - 1):  # finest first; level i needs n - 1 - i doublings
            layers: List[nn.Module] = []
            for j in range(n - 1 - i):
                if j:
                    norm = get_norm(opts.norm, channels)
                    if norm is not None:
                        layers.append(norm)
                    layers.append(nn.GELU())
                deconv = nn.ConvTranspose2d(channels, channels, 2, stride=2)
                weight_init.c2_xavier_fill(deconv)
                layers.append(deconv)
            stacks.append(nn.Sequential(*layers))
        self.stacks = nn.ModuleList(stacks)

    def forward(self, maps: List[Optional[torch.Tensor]], sizes: List[torch.Tensor]) -> List[torch.Tensor]:
        top = maps[len(maps) - 1]
        if top is None:
            raise ValueError("the simple pyramid builds every level from the coarsest level's map, which has none")
        out: List[torch.Tensor] = []
        for i, stack in enumerate(self.stacks):
            out.append(_resize_like(stack(top), sizes[i]))
        out.append(top)
        return out


PATHS.register("simple")(SimplePyramidPath)


# NAS-FPN's discovered cell (Ghiasi et al., CVPR 2019, Fig. 7(f); the block list of the authors'
# TensorFlow release): (output level, merge op, (input node, input node), is an output). Levels are
# counted from the cell's finest input (0 = P3 in the paper, P2 here); nodes 0-4 are the inputs, each
# block appends one node.
NASFPN_CELL = (
    (1, "attention", (1, 3), False),
    (1, "sum", (1, 5), False),
    (0, "sum", (0, 6), True),
    (1, "sum", (6, 7), True),
    (2, "attention", (7, 8), True),
    (4, "attention", (6, 9), True),
    (3, "attention", (9, 10), True),
)


class NASFPNCell(nn.Module):
    """One NAS-FPN cell (Ghiasi et al., "NAS-FPN: Learning Scalable Feature Pyramid Architecture for
    Object Detection", CVPR 2019, §3-4, Fig. 7(f)) over five levels, the discovered architecture
    :data:`NASFPN_CELL`: seven merging cells, each resampling its two input nodes to its output level
    (max pooling down, nearest upsampling up), merging them by **sum** or **global-pooling attention**
    (``coarser + finer · sigmoid(global max of coarser)``, the coarser input gating the finer), adding,
    at an output node, the nodes of its level that nothing has consumed yet, then ReLU → 3×3 conv
    (``opts.norm``; the paper: BN). The last five nodes are the outputs, one per level. Repeated
    ``opts.path_repeats`` times with own weights (the paper's best: 7). Maps (N, d, H_k, W_k) in and out.

    A final-stage path: it runs after the top block, on every level. Departure: the paper's levels are
    P3..P7; here the default pyramid's P2..P6 (``MODEL.FPN.IN_FEATURES`` res2..res5 and the P6 top
    block), so that it shares Detectron2's RPN / RoI heads and anchors; RetinaNet's P3..P7 recipe
    (res3..res5 with ``p6p7_c5``) gives the paper's levels.

    Raises:
        ValueError: a pyramid with other than five levels (in_features plus the top block's).
    """

    STAGE = "final"
    REPEATABLE = True

    def __init__(self, level_has_lateral: Sequence[bool], channels: int, opts: PyramidOptions):
        super().__init__()
        if len(level_has_lateral) != 5:
            raise ValueError(
                f"NAS-FPN's cell merges 5 levels, this pyramid has {len(level_has_lateral)} (in_features and the top "
                "block's levels): use MODEL.FPN.IN_FEATURES res2..res5 with a one-level top block (P2..P6), or "
                "res3..res5 with FPN_VARIANTS.TOP_BLOCK p6p7_c5 (P3..P7, the paper's)")
        levels = [0, 1, 2, 3, 4]
        consumed = [False] * 5
        specs: List[List[int]] = []
        for level, op, (a, b), is_output in NASFPN_CELL:
            consumed[a] = consumed[b] = True
            extra = []
            if is_output:  # nodes of this level that nothing has consumed join the output node
                extra = [j for j in range(len(levels)) if not consumed[j] and levels[j] == level]
                for j in extra:
                    consumed[j] = True
            if levels[a] < levels[b]:  # the attention gate comes from the coarser input: make it `a`
                a, b = b, a
            # [output level, 1 = attention / 0 = sum, a, b, level of a, level of b, extra nodes...]
            specs.append([level, int(op == "attention"), a, b, levels[a], levels[b], *extra])
            levels.append(level)
            consumed.append(False)
        self.specs = specs
        self.levels = levels
        self.num_nodes = len(levels)
        self.convs = nn.ModuleList([
            _conv(channels, channels, 3, opts.norm, separable=opts.separable) for _ in NASFPN_CELL
        ])

    def _resample(self, x: torch.Tensor, src: int, dst: int, like: torch.Tensor) -> torch.Tensor:
        if src < dst:
            f = 1
            for _ in range(dst - src):
                f = f * 2
            x = F.max_pool2d(x, kernel_size=f, stride=f, ceil_mode=True)
        return _resize_like(x, like)

    def forward(self, maps: List[torch.Tensor]) -> List[torch.Tensor]:
        nodes: List[torch.Tensor] = list(maps)
        for i, conv in enumerate(self.convs):
            spec = self.specs[i]
            level, attention, a, b, la, lb = spec[0], spec[1], spec[2], spec[3], spec[4], spec[5]
            like = maps[level]
            x0 = self._resample(nodes[a], la, level, like)
            x1 = self._resample(nodes[b], lb, level, like)
            if attention == 1:
                new = x0 + x1 * torch.sigmoid(torch.amax(x0, dim=(2, 3), keepdim=True))
            else:
                new = x0 + x1
            for j in spec[6:]:
                new = new + nodes[j]
            nodes.append(conv(F.relu(new)))
        out: List[torch.Tensor] = [maps[0]] * 5
        for j in range(self.num_nodes - 5, self.num_nodes):
            out[self.levels[j]] = nodes[j]
        return out


PATHS.register("nasfpn")(NASFPNCell)
