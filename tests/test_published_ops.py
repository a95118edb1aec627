"""The published designs beyond the paper (issue 19): CARAFE, ASFF, Libra R-CNN's balanced pyramid,
ViTDet's simple pyramid, each checked against what its paper defines, and each preset built through
its Detectron2 builder. Scripting, tracing, ONNX, every stock head and LazyConfig cover these presets
with all the others (test_export.py, test_heads.py, test_lazyconfig.py)."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from fpn_variants.modeling import FUSIONS, PATHS, PRESETS, UPSAMPLES, FeaturePyramid, PyramidOptions, backbone_name
from fpn_variants.modeling.published_ops import (CARAFE, ASFFFusion, BalancedPyramidPath, NASFPNCell, NonLocal2d,
                                                 SimplePyramidPath)

from conftest import R18_SHAPES, small_cfg, synthetic_features

IN = ["res2", "res3", "res4", "res5"]
NEW = ("fpn_carafe", "fpn_asff", "fpn_bfp", "fpn_simple", "fpn_nasfpn")


def test_each_design_is_one_registered_op_and_a_preset():
    assert "carafe" in UPSAMPLES and "asff" in FUSIONS and all(p in PATHS for p in ("bfp", "simple", "nasfpn"))
    assert PRESETS["fpn_carafe"].defaults == {"upsample_mode": "carafe"}
    assert PRESETS["fpn_asff"].defaults == {"fuse_type": "asff"}
    assert PRESETS["fpn_bfp"]["paths"] == ("top_down", "bfp") and PRESETS["fpn_simple"]["paths"] == ("simple",)
    for p in NEW:
        assert PRESETS[p].source


def test_carafe_reassembles_with_normalised_kernels():
    torch.manual_seed(0)
    up = CARAFE(8)
    x = torch.randn(2, 8, 5, 7)
    like = torch.zeros(2, 8, 10, 14)
    # zero encoder: every predicted kernel is uniform (softmax of zeros), so each output pixel is the
    # mean of the zero-padded 5x5 neighbourhood of its source pixel
    torch.nn.init.zeros_(up.encode.weight)
    with torch.no_grad():
        y = up(x, like)
    box = F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=True)
    assert y.shape == (2, 8, 10, 14) and torch.allclose(y, F.interpolate(box, scale_factor=2, mode="nearest"), atol=1e-6)
    # content-aware: with a trained-like encoder the kernels differ per output pixel but each sums to 1
    torch.nn.init.normal_(up.encode.weight, std=0.5)
    with torch.no_grad():
        k = F.softmax(F.pixel_shuffle(up.encode(up.compress(x)), 2), dim=1)
        y = up(x, like)
    assert torch.allclose(k.sum(1), torch.ones(2, 10, 14)) and k.std() > 0.01
    assert not torch.allclose(y, F.interpolate(box, scale_factor=2, mode="nearest"), atol=1e-3)
    # odd sizes: resized to the finer map's exact size
    assert up(x, torch.zeros(1, 1, 9, 13)).shape[-2:] == (9, 13)
    up(x, like).sum().backward()
    assert up.encode.weight.grad is not None and up.compress.weight.grad is not None


def test_asff_weights_each_pixel_with_a_softmax_over_inputs():
    torch.manual_seed(0)
    f = ASFFFusion(3, channels=4)
    xs = [torch.randn(1, 4, 6, 6) for _ in range(3)]
    with torch.no_grad():
        torch.nn.init.zeros_(f.logits.weight)
        f.logits.bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
        lam = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
        assert torch.allclose(f(xs), lam[0] * xs[0] + lam[1] * xs[1] + lam[2] * xs[2], atol=1e-6)
        same = [xs[0]] * 3
        torch.nn.init.normal_(f.logits.weight)
        assert torch.allclose(f(same), xs[0], atol=1e-6)  # weights sum to 1 at every pixel
    with pytest.raises(ValueError, match="built for 3 inputs got 2"):
        f(xs[:2])


def test_non_local_starts_as_identity_and_attends_globally():
    torch.manual_seed(0)
    nl = NonLocal2d(8)
    x = torch.randn(2, 8, 5, 6)
    with torch.no_grad():
        assert torch.equal(nl(x), x)
        torch.nn.init.normal_(nl.out.weight)
        y = nl(x)
        x2 = x.clone()
        x2[:, :, 0, 0] += 5  # one far pixel changes every output pixel: global context
        assert (nl(x2)[:, :, 4, 5] - y[:, :, 4, 5]).abs().max() > 1e-4


def test_balanced_pyramid_integrates_refines_and_adds_back():
    path = BalancedPyramidPath([True] * 4, 4, PyramidOptions())
    assert path.refine_level == 2  # P4 of P2..P5
    maps = [torch.full((1, 4, s, s), float(v)) for s, v in ((16, 1), (8, 2), (4, 3), (2, 4))]
    with torch.no_grad():
        out = path(maps)  # the non-local block is the identity at init: + the mean of the levels
    for x, y in zip(maps, out):
        assert y.shape == x.shape and torch.allclose(y, x + 2.5)
    # odd sizes (a 100 x 130 input's maps): every level keeps its own size
    maps = [torch.randn(1, 4, h, w) for h, w in ((25, 33), (13, 17), (7, 9), (4, 5))]
    assert [y.shape for y in path(maps)] == [x.shape for x in maps]


def test_simple_pyramid_builds_every_level_from_c5_alone():
    torch.manual_seed(0)
    net = FeaturePyramid(R18_SHAPES, IN, 16, top_block=LastLevelMaxPool(), **PRESETS["fpn_simple"]).eval()
    assert [n for n, _ in net.named_children() if n.startswith("fpn_lateral")] == ["fpn_lateral5"]
    assert isinstance(net.top_down, SimplePyramidPath) and [len(s) for s in net.top_down.stacks] == [5, 3, 1]
    feats = synthetic_features(64, 96)
    with torch.no_grad():
        out = net(feats)
        other = net(dict(feats, res2=feats["res2"] + 1, res3=feats["res3"] - 1, res4=feats["res4"] * 2))
    assert [tuple(out[k].shape[-2:]) for k in ("p2", "p3", "p4", "p5", "p6")] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    for k in out:  # only C5 reaches the pyramid
        assert torch.equal(out[k], other[k])


def test_simple_pyramid_from_c4_pools_p5_and_p6_as_vitdet():
    """ViTDet's own setting, one stride-16 map: C2..C4 in, P2/P3 by deconvs, P4 the map, P5 its 2x2 max
    pooling and P6 the subsampled P5 (the ``p5p6_maxpool`` top block), so the levels stay P2..P6."""
    from fpn_variants.modeling import TOP_BLOCKS

    torch.manual_seed(0)
    top = TOP_BLOCKS.get("p5p6_maxpool")(IN[:3], R18_SHAPES, 16)
    assert top.in_feature == "p4" and top.num_levels == 2
    net = FeaturePyramid(R18_SHAPES, IN[:3], 16, top_block=top, **PRESETS["fpn_simple"]).eval()
    assert [len(s) for s in net.top_down.stacks] == [3, 1]
    assert [net.output_shape()[k].stride for k in ("p2", "p3", "p4", "p5", "p6")] == [4, 8, 16, 32, 64]
    feats = synthetic_features(100, 130)  # odd map sizes: C4 is 7 x 9
    with torch.no_grad():
        out = net(feats)
        other = net(dict(feats, res2=feats["res2"] + 1, res3=feats["res3"] - 1, res5=feats["res5"] * 2))
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    assert [tuple(out[k].shape[-2:]) for k in out] == [(25, 33), (13, 17), (7, 9), (4, 5), (2, 3)]
    assert torch.equal(out["p5"], F.max_pool2d(out["p4"], 2, 2, ceil_mode=True))
    assert torch.equal(out["p6"], out["p5"][..., ::2, ::2])
    for k in out:  # only C4 reaches the pyramid
        assert torch.equal(out[k], other[k])
    # through the builder: the config's levels, Detectron2's default anchors and heads unchanged
    cfg = small_cfg(backbone_name("fpn_simple"))
    cfg.MODEL.FPN.IN_FEATURES = IN[:3]
    cfg.FPN_VARIANTS.TOP_BLOCK = "p5p6_maxpool"
    backbone = build_backbone(cfg)
    assert {k: s.stride for k, s in backbone.output_shape().items()} == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 100, 130))
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(25, 33), (13, 17), (7, 9), (4, 5), (2, 3)]


def test_nasfpn_cell_wires_the_discovered_architecture():
    """The seven merging cells of Fig. 7(f), levels counted from the finest input: each spec is [output
    level, attention?, coarser input node, other input node, their levels, unconsumed nodes of the
    output level added at an output node]; the last five nodes are the outputs, one per level."""
    cell = NASFPNCell([True] * 4 + [False], 8, PyramidOptions(path_repeats=2))
    assert cell.specs == [[1, 1, 3, 1, 3, 1], [1, 0, 1, 5, 1, 1], [0, 0, 6, 0, 1, 0], [1, 0, 6, 7, 1, 0],
                          [2, 1, 8, 7, 1, 0, 2], [4, 1, 9, 6, 2, 1, 4], [3, 1, 10, 9, 4, 2]]
    assert cell.levels[-5:] == [0, 1, 2, 4, 3]
    torch.manual_seed(0)
    maps = [torch.randn(2, 8, s, s + 1, requires_grad=True) for s in (32, 16, 8, 4, 2)]
    out = cell(maps)
    assert [tuple(o.shape) for o in out] == [tuple(m.shape) for m in maps]
    sum(o.sum() for o in out).backward()
    assert all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in cell.convs)
    assert all(m.grad is not None for m in maps)  # every input level reaches the outputs
    # global-pooling attention: the coarser input's global max gates the finer one
    x_coarse, x_fine = torch.full((1, 1, 2, 2), -30.0), torch.ones(1, 1, 2, 2)
    gate = torch.sigmoid(torch.amax(x_coarse, dim=(2, 3), keepdim=True))
    assert torch.allclose(x_coarse + x_fine * gate, x_coarse, atol=1e-9)
    # the pyramid repeats the cell path_repeats times, after the top block (P2..P6)
    net = FeaturePyramid(R18_SHAPES, IN, 16, top_block=LastLevelMaxPool(), path_repeats=3, **PRESETS["fpn_nasfpn"])
    assert len(net.final_paths) == 3 and not net.post_paths
    with pytest.raises(ValueError, match="NAS-FPN's cell merges 5 levels, this pyramid has 4"):
        FeaturePyramid(R18_SHAPES, IN, 16, top_block=None, **PRESETS["fpn_nasfpn"])
    with pytest.raises(ValueError, match="final-stage path .* comes after every other path"):
        PyramidOptions(paths=("top_down", "nasfpn", "bottom_up"))


@pytest.mark.parametrize("preset", NEW)
def test_preset_builds_trains_and_infers_through_its_builder(preset):
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    cfg = small_cfg(backbone_name(preset))
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    torch.manual_seed(0)
    backbone = build_backbone(cfg)
    opts = backbone.options
    assert opts.paths == PRESETS[preset]["paths"]
    for key, value in PRESETS[preset].defaults.items():
        assert getattr(opts, key) == value
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 100, 130))
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"] and out["p2"].shape[-2:] == (25, 33)
    model = build_model(cfg).train()
    inst = Instances((96, 128), gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 60.0, 50.0]])), gt_classes=torch.tensor([0]))
    with EventStorage(0):
        losses = model([{"image": torch.rand(3, 96, 128) * 255, "instances": inst}])
    sum(losses.values()).backward()
    unused = [n for n, p in model.backbone.named_parameters() if p.requires_grad and p.grad is None
              and not n.startswith("bottom_up.")]
    assert not unused, unused


def test_balanced_pyramids_non_local_learns_once_its_output_conv_moves():
    """The zero-initialised output conv gets a gradient at once; after one step the inner convs do too."""
    torch.manual_seed(0)
    path = BalancedPyramidPath([True] * 4, 8, PyramidOptions())
    maps = [torch.randn(1, 8, s, s) for s in (16, 8, 4, 2)]
    opt = torch.optim.SGD(path.parameters(), lr=0.1)
    sum(y.square().mean() for y in path(maps)).backward()
    assert path.refine.out.weight.grad.abs().sum() > 0 and path.refine.theta.weight.grad.abs().sum() == 0
    opt.step()
    opt.zero_grad()
    sum(y.square().mean() for y in path(maps)).backward()
    assert all(getattr(path.refine, m).weight.grad.abs().sum() > 0 for m in ("theta", "phi", "g"))
