"""Structure and behaviour of every preset on synthetic C2..C5 maps (no ResNet needed)."""
import pytest
import torch
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from fpn_variants.modeling import PRESETS, FeaturePyramid, ResidualBottleneck
from fpn_variants.modeling.pyramid import fuse

from conftest import R18_SHAPES, conv_size, synthetic_features

IN = ["res2", "res3", "res4", "res5"]


def make(preset, d=32, **kw):
    torch.manual_seed(0)
    return FeaturePyramid(R18_SHAPES, IN, d, top_block=LastLevelMaxPool(), **{**PRESETS[preset], **kw}).eval()


@pytest.mark.parametrize("preset", list(PRESETS))
def test_output_names_strides_shapes_on_odd_sizes(preset):
    net = make(preset)
    feats = synthetic_features(333, 517)
    with torch.no_grad():
        out = net(feats)
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    shapes = net.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    assert all(v.channels == 32 for v in shapes.values())
    for name, stride in (("p2", 4), ("p3", 8), ("p4", 16), ("p5", 32)):
        assert out[name].shape == (2, 32, conv_size(333, stride), conv_size(517, stride)), name
    # P6 is P5 subsampled by 2 (kernel 1, stride 2), unless a final-stage path (NAS-FPN) transforms
    # every level after the top block
    if not net.final_paths:
        assert torch.equal(out["p6"], out["p5"][:, :, ::2, ::2])
    assert net.size_divisibility == 32


def module_names(net):
    return {n for n, _ in net.named_children()}


def test_fpn_full_structure():
    names = module_names(make("fpn_full"))
    assert {f"fpn_lateral{k}" for k in range(2, 6)} <= names
    assert {f"fpn_output{k}" for k in range(2, 6)} <= names


def test_bottom_up_only_has_no_top_down_pathway():
    net = make("fpn_bottom_up_only")
    assert {f"fpn_lateral{k}" for k in range(2, 6)} | {f"fpn_output{k}" for k in range(2, 6)} <= module_names(net)
    feats = synthetic_features()
    perturbed = dict(feats, res5=feats["res5"] + 1.0)
    with torch.no_grad():
        a, b = net(feats), net(perturbed)
    # without a top-down pathway, C5 reaches no finer level
    for k in ("p2", "p3", "p4"):
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["p5"], b["p5"])


def test_top_down_only_keeps_only_the_c5_lateral():
    net = make("fpn_top_down_only")
    names = module_names(net)
    assert "fpn_lateral5" in names
    assert not {"fpn_lateral2", "fpn_lateral3", "fpn_lateral4"} & names
    assert {f"fpn_output{k}" for k in range(2, 6)} <= names
    feats = synthetic_features()
    with torch.no_grad():
        a = net(feats)
        b = net(dict(feats, res2=feats["res2"] + 1.0, res3=feats["res3"] - 1.0))
        c = net(dict(feats, res5=feats["res5"] + 1.0))
    # finer levels see C5 only (through the top-down pathway), never their own C_k
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["p2"], c["p2"])


def test_lateral_only_is_a_projection_of_each_level():
    net = make("fpn_lateral_only")
    names = module_names(net)
    assert not any(n.startswith("fpn_output") for n in names)
    feats = synthetic_features()
    with torch.no_grad():
        out = net(feats)
        for k, name in zip(range(2, 6), IN):
            assert torch.equal(out[f"p{k}"], getattr(net, f"fpn_lateral{k}")(feats[name]))


@pytest.mark.parametrize("blocks", [1, 3])
def test_residual_laterals(blocks):
    net = make("fpn_residual", residual_blocks=blocks, bottleneck_channels=16)
    for k in range(2, 6):
        lat = getattr(net, f"fpn_lateral{k}")
        assert isinstance(lat, torch.nn.Sequential) and len(lat) == blocks
        assert all(isinstance(b, ResidualBottleneck) for b in lat)
        assert lat[0].shortcut is not None  # C_k channels != d: projection shortcut
        assert all(b.shortcut is None for b in lat[1:])
        assert lat[0].conv1.out_channels == 16
    # default width: d // 4
    assert make("fpn_residual").fpn_lateral2[0].conv1.out_channels == 8


def test_top_down_merge_is_sum_of_lateral_and_upsampled_coarser_map():
    net = make("fpn_full", output="none")
    feats = synthetic_features(64, 96)
    with torch.no_grad():
        out = net(feats)
        p5 = net.fpn_lateral5(feats["res5"])
        p4 = net.fpn_lateral4(feats["res4"]) + torch.nn.functional.interpolate(p5, size=out["p4"].shape[-2:], mode="nearest")
    assert torch.equal(out["p5"], p5)
    assert torch.allclose(out["p4"], p4)


def test_fuse_avg_and_bilinear():
    x, y = torch.ones(1, 2, 3, 3), 3 * torch.ones(1, 2, 3, 3)
    assert torch.equal(fuse([x, y], "sum"), 4 * x)
    assert torch.equal(fuse([x, y], "avg"), 2 * x)
    assert torch.equal(fuse([y], "avg"), y)
    net = make("fpn_full", upsample_mode="bilinear")
    with torch.no_grad():
        out = net(synthetic_features(101, 77))
    assert out["p2"].shape[-2:] == (conv_size(101, 4), conv_size(77, 4))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_gradient_reaches_every_parameter(preset):
    net = make(preset).train()
    feats = {k: v.requires_grad_() for k, v in synthetic_features(64, 80).items()}
    out = net(feats)
    sum(v.square().mean() for v in out.values()).backward()
    params = dict(net.named_parameters())
    assert params
    for name, p in params.items():
        assert p.grad is not None, name
        # Libra R-CNN's non-local block starts as the identity (its output conv is zero-initialised, as
        # published), so its inner convs get a zero gradient until that conv has moved off zero
        if ".refine." in name and not name.split(".refine.")[1].startswith("out."):
            continue
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_features=["res2", "res4"]), "twice the previous"),
        (dict(in_features=["res3", "res2"]), "twice the previous"),
        (dict(in_features=["res2", "res9"]), "not bottom-up outputs"),
        (dict(in_features=[]), "empty"),
        (dict(out_channels=0), "must be a positive int"),
        (dict(out_channels=-4), "must be a positive int"),
        (dict(lateral="conv5x5"), "lateral='conv5x5' is not valid"),
        (dict(output="conv1x1"), "output='conv1x1' is not valid"),
        (dict(fuse_type="max"), "fuse_type='max' is not valid"),
        (dict(upsample_mode="bicubic"), "upsample_mode='bicubic' is not valid"),
        (dict(paths=("sideways",)), "path='sideways' is not valid"),
        (dict(lateral_levels="coarsest", paths=()), "needs a merge-stage path"),
        (dict(lateral="residual", residual_blocks=0), "residual_blocks=0"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs, match):
    args = dict(input_shapes=R18_SHAPES, in_features=IN, out_channels=32)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        FeaturePyramid(**args)


def test_tensor_input_without_bottom_up_is_rejected():
    with pytest.raises(TypeError, match="no bottom_up"):
        make("fpn_full")(torch.zeros(1, 3, 64, 64))
    with pytest.raises(KeyError, match="res3"):
        make("fpn_full")({"res2": torch.zeros(1, 64, 8, 8)})
