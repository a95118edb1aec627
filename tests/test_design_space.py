"""Beyond the paper: PANet, BiFPN and the knobs of the paper's own claims (fusion, activation,
upsampling, normalisation, residual blocks, P6 source), on synthetic C2..C5 maps."""
import re
import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from fpn_variants.config import load_config
from fpn_variants.modeling import PRESETS, FeaturePyramid, backbone_name
from fpn_variants.modeling.backbone import LastLevelP6FromC5
from fpn_variants.modeling.pyramid import BiFPNLayer, BottomUpPath, Fusion, build_fusion

from conftest import R18_SHAPES, REPO, conv_size, small_cfg, synthetic_features

IN = ["res2", "res3", "res4", "res5"]


def make(preset, d=32, top_block=None, **kw):
    torch.manual_seed(0)
    return FeaturePyramid(R18_SHAPES, IN, d, top_block=top_block or LastLevelMaxPool(), **{**PRESETS[preset], **kw}).eval()


def test_panet_starts_from_the_fpn_and_adds_a_bottom_up_path():
    fpn, panet = make("fpn_full"), make("fpn_panet")
    # the FPN part is the same module tree with the same weights (same seed, same creation order)
    fpn_sd = fpn.state_dict()
    assert all(torch.equal(panet.state_dict()[k], v) for k, v in fpn_sd.items())
    (path,) = panet.post_paths
    assert isinstance(path, BottomUpPath) and len(path.downsample) == len(path.convs) == 3
    assert all(c.stride == (2, 2) for c in path.downsample)
    feats = synthetic_features(96, 128)
    with torch.no_grad():
        p, n = fpn(feats), panet(feats)
        assert torch.equal(n["p2"], p["p2"])  # N2 = P2
        n3 = path.convs[0](p["p3"] + path.downsample[0](p["p2"]))  # N3 = conv(P3 + conv_s2(N2))
        assert torch.allclose(n["p3"], n3, atol=1e-6)
        # the short path: C2 now reaches N5, which it cannot reach in the FPN
        perturbed = dict(feats, res2=feats["res2"] + 1.0)
        assert torch.equal(fpn(perturbed)["p5"], p["p5"])
        assert not torch.allclose(panet(perturbed)["p5"], n["p5"])


@pytest.mark.parametrize("repeats", [1, 3])
def test_bifpn_layers_and_weighted_fusion_nodes(repeats):
    net = make("fpn_bifpn", fuse_type="weighted", path_repeats=repeats)
    layers = list(net.post_paths)
    assert len(layers) == repeats and all(isinstance(l, BiFPNLayer) for l in layers)
    assert not any(n.startswith("fpn_output") for n, _ in net.named_children())  # BiFPN: no extra output convs
    for layer in layers:
        assert [f.num_inputs for f in layer.td_fusions] == [2, 2, 2]
        assert [f.num_inputs for f in layer.bu_fusions] == [3, 3, 2]  # P3, P4 take X, T and down; P5 X and down
        assert all(f.weight.shape == (f.num_inputs,) for f in [*layer.td_fusions, *layer.bu_fusions])
    feats = synthetic_features(96, 128)
    with torch.no_grad():
        out = net(feats)
        # bidirectional: C2 reaches P5 and C5 reaches P2
        assert not torch.allclose(net(dict(feats, res2=feats["res2"] + 1))["p5"], out["p5"])
        assert not torch.allclose(net(dict(feats, res5=feats["res5"] + 1))["p2"], out["p2"])


def test_weighted_fusion_is_fast_normalised_and_nonnegative():
    f = build_fusion("weighted", 3, channels=4)
    x = [torch.full((1, 4, 2, 2), v) for v in (1.0, 2.0, 4.0)]
    with torch.no_grad():
        f.weight.copy_(torch.tensor([1.0, 3.0, -2.0]))  # a negative weight is clipped to 0 by the ReLU
        y = f(x)
    expected = (1 * 1.0 + 3 * 2.0 + 0 * 4.0) / (1 + 3 + 0 + 1e-4)
    assert torch.allclose(y, torch.full_like(y, expected))
    with pytest.raises(ValueError, match="built for 3 inputs got 2"):
        f(x[:2])


def test_concat_fusion_projects_back_to_d():
    net = make("fpn_full", fuse_type="concat")
    fusions = [m for m in net.top_down.fusions if isinstance(m, Fusion)]
    assert len(fusions) == 3 and all(m.proj.in_channels == 64 and m.proj.out_channels == 32 for m in fusions)
    with torch.no_grad():
        feats = synthetic_features(64, 96)
        out = net(feats)
        lat5 = net.fpn_lateral5(feats["res5"])
        lat4 = net.fpn_lateral4(feats["res4"])
        merged4 = fusions[2].proj(torch.cat([lat4, F.interpolate(lat5, size=lat4.shape[-2:])], 1))
        assert torch.allclose(out["p4"], net.fpn_output4(merged4), atol=1e-6)


@pytest.mark.parametrize("activation, check", [("relu", lambda t: bool((t >= 0).all())), ("swish", lambda t: bool((t >= -0.2785).all()))])
def test_activation_after_every_extra_conv(activation, check):
    net = make("fpn_full", activation=activation)
    with torch.no_grad():
        out = net(synthetic_features(64, 96))
    for k in ("p2", "p3", "p4", "p5"):
        assert check(out[k]), k  # swish(x) >= -0.2785 everywhere; the plain FPN output is unbounded below
    with torch.no_grad():
        plain = make("fpn_full")(synthetic_features(64, 96))
    assert (plain["p2"] < -0.3).any()


def test_default_knobs_are_the_paper_fpn():
    """Explicit default knob values build exactly the plain FPN (same parameters, same outputs)."""
    plain = make("fpn_full")
    explicit = make("fpn_full", fuse_type="sum", activation="none", separable=False, path_repeats=1,
                    upsample_mode="nearest", norm="")
    assert plain.state_dict().keys() == explicit.state_dict().keys()
    feats = synthetic_features(65, 97)
    with torch.no_grad():
        a, b = plain(feats), explicit(feats)
    assert all(torch.equal(a[k], b[k]) for k in a)
    cfg = small_cfg()
    fv = cfg.FPN_VARIANTS
    assert (fv.ACTIVATION, fv.SEPARABLE_CONV, fv.PATH_REPEATS, fv.UPSAMPLE_MODE, fv.TOP_BLOCK, fv.RESIDUAL_NUM_BLOCKS) == (
        "none", False, 1, "nearest", "p6_subsample", 1)
    assert (cfg.MODEL.FPN.FUSE_TYPE, cfg.MODEL.FPN.NORM) == ("sum", "")


def test_p6_from_c5_by_a_strided_conv():
    torch.manual_seed(0)
    top = LastLevelP6FromC5(512, 32, "res5")
    net = FeaturePyramid(R18_SHAPES, IN, 32, top_block=top, **PRESETS["fpn_full"]).eval()
    feats = synthetic_features(333, 517)
    with torch.no_grad():
        out = net(feats)
        assert torch.equal(out["p6"], top.p6(feats["res5"]))
    assert out["p6"].shape[-2:] == (conv_size(333, 64), conv_size(517, 64))
    cfg = small_cfg()
    cfg.FPN_VARIANTS.TOP_BLOCK = "p6_c5"
    backbone = build_backbone(cfg)
    # (by name: test_config_and_registry reloads the backbone module, which re-creates the class)
    assert type(backbone.top_block).__name__ == "LastLevelP6FromC5"
    assert list(backbone.output_shape()) == ["p2", "p3", "p4", "p5", "p6"]


@pytest.mark.parametrize("norm", ["BN", "GN"])
def test_normalisation_of_the_extra_convs(norm):
    net = make("fpn_panet", norm=norm)
    norms = [m for m in net.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))]
    # 4 laterals + 4 outputs + 3 downsampling + 3 path convs
    assert len(norms) == 14
    assert all(c.bias is None for c in net.modules() if isinstance(c, torch.nn.Conv2d))


def test_separable_convs_in_the_paths():
    net = make("fpn_bifpn", separable=True)
    layer = net.post_paths[0]
    depthwise, pointwise = layer.td_convs[0]
    assert depthwise.groups == 32 and depthwise.kernel_size == (3, 3) and pointwise.kernel_size == (1, 1)
    dense = make("fpn_bifpn")
    n_sep = sum(p.numel() for p in net.post_paths.parameters())
    n_dense = sum(p.numel() for p in dense.post_paths.parameters())
    assert n_sep < n_dense / 4


@pytest.mark.parametrize("preset, kw", [
    ("fpn_panet", {}), ("fpn_bifpn", dict(fuse_type="weighted", separable=True, path_repeats=2)),
    ("fpn_full", dict(fuse_type="concat", activation="relu")), ("fpn_full", dict(fuse_type="weighted", norm="GN")),
    ("fpn_residual", dict(residual_blocks=2, activation="swish")),
])
def test_gradient_reaches_every_parameter_of_the_new_designs(preset, kw):
    net = make(preset, **kw).train()
    out = net({k: v.requires_grad_() for k, v in synthetic_features(64, 80).items()})
    sum(v.square().mean() for v in out.values()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kwargs, match", [
    (dict(activation="gelu"), "activation='gelu' is not valid"),
    (dict(fuse_type="max"), "fuse_type='max' is not valid"),
    (dict(path_repeats=0), "path_repeats=0 must be an int >= 1"),
    (dict(paths=("bottom_up", "top_down")), "'top_down' may appear once, first"),
    (dict(paths=("bifpn",), in_features=["res5"]), "need >= 2 levels"),
])
def test_invalid_knob_values_in_the_module(kwargs, match):
    args = dict(input_shapes=R18_SHAPES, in_features=IN, out_channels=32)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        FeaturePyramid(**args)


@pytest.mark.parametrize("key, value, match", [
    ("FPN_VARIANTS.ACTIVATION", "gelu", "FPN_VARIANTS.ACTIVATION='gelu' is not valid; valid values: none, relu, swish"),
    ("MODEL.FPN.FUSE_TYPE", "max", "MODEL.FPN.FUSE_TYPE='max' is not valid; valid values: sum, avg, concat, weighted"),
    ("MODEL.FPN.NORM", "BatchNorm", "MODEL.FPN.NORM='BatchNorm' is not valid"),
    ("FPN_VARIANTS.PATH_REPEATS", "0", "PATH_REPEATS=0 must be >= 1"),
    ("FPN_VARIANTS.TOP_BLOCK", "p6_c6", "TOP_BLOCK='p6_c6' is not valid"),
    ("FPN_VARIANTS.UPSAMPLE_MODE", "bicubic", "UPSAMPLE_MODE='bicubic' is not valid"),
    ("FPN_VARIANTS.RESIDUAL_NUM_BLOCKS", "0", "RESIDUAL_NUM_BLOCKS=0 must be >= 1"),
    ("MODEL.FPN.OUT_CHANNELS", "0", "must be > 0"),
])
def test_invalid_knob_values_in_the_config(key, value, match):
    import os

    with pytest.raises(ValueError, match=match.replace("(", "\\(").replace(")", "\\)")):
        load_config(os.path.join(REPO, "configs", "NEON", "rpn_c_fpn.yaml"), [key, value])


def test_group_norm_needs_d_divisible_by_32():
    import os

    with pytest.raises(ValueError, match="OUT_CHANNELS=48 must be a multiple of 32"):
        load_config(os.path.join(REPO, "configs", "NEON", "rpn_c_fpn.yaml"), ["MODEL.FPN.NORM", "GN", "MODEL.FPN.OUT_CHANNELS", "48"])


def test_bifpn_gets_its_published_weighted_fusion_from_the_preset():
    """Issue 19: the preset states BiFPN's weighted fusion once (Preset.defaults); the builder applies it
    where the config leaves MODEL.FPN.FUSE_TYPE at its default, an explicit other fusion... stays only
    with FPN_VARIANTS.PRESET_DEFAULTS False; LazyConfig's preset_pyramid takes it unless given."""
    from fpn_variants.modeling import FUSIONS, preset_pyramid
    from fpn_variants.modeling.pyramid import SumFusion, WeightedFusion

    assert PRESETS["fpn_bifpn"].defaults == {"fuse_type": "weighted"}
    cfg = small_cfg("build_fpn_bifpn_backbone")
    assert cfg.MODEL.FPN.FUSE_TYPE == "sum"  # the config's (Detectron2's) default
    fusions = [m for m in build_backbone(cfg).modules() if isinstance(m, Fusion)]
    assert fusions and all(isinstance(m, WeightedFusion) for m in fusions)
    cfg.FPN_VARIANTS.PRESET_DEFAULTS = False
    assert all(isinstance(m, SumFusion) for m in build_backbone(cfg).modules() if isinstance(m, Fusion))
    cfg.FPN_VARIANTS.PRESET_DEFAULTS = True
    cfg.MODEL.FPN.FUSE_TYPE = "concat"  # a setting other than the default is the user's choice
    assert all(m.kind == "concat" for m in build_backbone(cfg).modules() if isinstance(m, Fusion))
    lazy = preset_pyramid("fpn_bifpn", input_shapes=R18_SHAPES, in_features=IN, out_channels=16)
    assert lazy.options.fuse_type == "weighted"
    assert preset_pyramid("fpn_bifpn", input_shapes=R18_SHAPES, in_features=IN, out_channels=16,
                          fuse_type="avg").options.fuse_type == "avg"
    assert "weighted" in FUSIONS


def test_a_new_op_is_a_constructor_plus_one_registry_line():
    """Issue 19: registering a fusion op makes it valid everywhere (options, pyramid, config)."""
    import os

    from fpn_variants.config import validate_config
    from fpn_variants.modeling import FUSIONS, PyramidOptions
    from fpn_variants.modeling.pyramid import SumFusion

    class MaxFusion(SumFusion):
        def forward(self, inputs):
            self._check(inputs)
            out = inputs[0]
            for x in inputs[1:]:
                out = torch.maximum(out, x)
            return out

    with pytest.raises(ValueError, match="fuse_type='max' is not valid; valid values: 'sum', 'avg', 'concat', 'weighted'"):
        PyramidOptions(fuse_type="max")
    FUSIONS.register("max")(lambda n, channels, opts: MaxFusion(n, "max"))
    try:
        assert PyramidOptions(fuse_type="max").fuse_type == "max"
        net = make("fpn_full", fuse_type="max")
        assert all(isinstance(m, MaxFusion) for m in net.top_down.fusions)
        feats = synthetic_features(64, 96)
        with torch.no_grad():
            assert net(feats)["p2"].shape[1] == 32
        cfg = load_config(os.path.join(REPO, "configs", "NEON", "rpn_c_fpn.yaml"), ["MODEL.FPN.FUSE_TYPE", "max"])
        validate_config(cfg)  # the config's vocabulary is the registry's
        with pytest.raises(KeyError, match="registered already"):
            FUSIONS.register("max")(MaxFusion)
    finally:
        FUSIONS._parts.pop("max")


def test_pyramid_options_are_validated_once_with_clear_errors():
    from fpn_variants.modeling import PyramidOptions

    o = PyramidOptions(paths=["top_down", "bottom_up"])
    assert o.paths == ("top_down", "bottom_up") and o.merge_path == "top_down" and o.post_paths == ("bottom_up",)
    assert PyramidOptions(paths=("bifpn",)).merge_path is None
    for kwargs, msg in [
        (dict(lateral="conv3x3"), "lateral='conv3x3' is not valid; valid values: 'conv1x1', 'residual'"),
        (dict(paths=("bottom_up", "top_down")), "'top_down' may appear once, first"),
        (dict(paths=("fpn",)), "path='fpn' is not valid; valid values: 'top_down', 'bottom_up', 'bifpn'"),
        (dict(lateral_levels="coarsest", paths=()), "lateral_levels='coarsest' needs a merge-stage path ('top_down', 'simple')"),
        (dict(lateral_levels="finest"), "lateral_levels='finest' is not valid; valid values: 'all', 'coarsest'"),
        (dict(path_repeats=0), "path_repeats=0 must be an int >= 1"),
        (dict(upsample_mode="area"), "upsample_mode='area' is not valid; valid values: 'nearest', 'bilinear'"),
        (dict(output="conv1x1"), "output='conv1x1' is not valid; valid values: 'conv3x3', 'none'"),
        (dict(activation="gelu"), "activation='gelu' is not valid; valid values: 'none', 'relu', 'swish'"),
    ]:
        with pytest.raises(ValueError, match=re.escape(msg)):
            PyramidOptions(**kwargs)


def test_every_preset_has_a_builder_a_reader_can_grep():
    import inspect

    import fpn_variants.modeling.backbone as backbone
    from detectron2.modeling import BACKBONE_REGISTRY

    source = inspect.getsource(backbone)
    for preset in PRESETS:
        name = backbone_name(preset)
        registered = BACKBONE_REGISTRY.get(name)  # (the module may have been reloaded: compare by origin)
        assert f"def {name}(cfg, input_shape" in source and registered.__name__ == name
        assert registered.__module__ == backbone.__name__ == getattr(backbone, name).__module__


def test_channels_last_changes_the_layout_not_the_detector():
    """FPN_VARIANTS.CHANNELS_LAST (issue 5's CPU speed-up): every 4-D weight is NHWC, the pyramid's
    outputs stay NHWC, and the detector's outputs equal the NCHW model's up to float rounding."""
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    from fpn_variants.engine import Trainer

    models = {}
    for cl in (False, True):
        cfg = small_cfg()
        cfg.MODEL.DEVICE = "cpu"
        cfg.FPN_VARIANTS.CHANNELS_LAST = cl
        torch.manual_seed(0)
        models[cl] = Trainer.build_model(cfg).eval()
    convs = [p for p in models[True].parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not all(p.is_contiguous(memory_format=torch.channels_last) for p in models[False].parameters() if p.dim() == 4)
    image = (torch.rand(3, 160, 192, generator=torch.Generator().manual_seed(0)) * 255).round()
    x = models[True].preprocess_image([{"image": image}]).tensor
    with torch.no_grad():
        feats = {cl: m.backbone(x) for cl, m in models.items()}
    for k in feats[False]:
        assert feats[True][k].is_contiguous(memory_format=torch.channels_last), k
        torch.testing.assert_close(feats[True][k], feats[False][k], rtol=1e-4, atol=1e-4)
    # one training step works in NHWC (RoIAlign, losses, backward) and gives the same losses
    inst = Instances((160, 192), gt_boxes=Boxes(torch.tensor([[10.0, 20.0, 70.0, 90.0]])),
                     gt_classes=torch.zeros(1, dtype=torch.int64))
    losses = {}
    for cl, m in models.items():
        m.train()
        torch.manual_seed(1)
        with EventStorage(0):
            out = m([{"image": image, "instances": inst}])
        sum(out.values()).backward()
        losses[cl] = {k: v.item() for k, v in out.items()}
    for k in losses[False]:
        assert losses[True][k] == pytest.approx(losses[False][k], rel=1e-3, abs=1e-5), k
