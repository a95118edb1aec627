"""The fpn_full preset equals Detectron2's own FPN (build_resnet_fpn_backbone) exactly."""
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone

from fpn_variants.config import add_fpn_variants_config


def cfg_for(depth, norm, fuse_type):
    """A default Detectron2 config: a ResNet-``depth`` bottom-up pathway with C2..C5 (res2..res5), d = 256."""
    from detectron2.config import get_cfg

    cfg = add_fpn_variants_config(get_cfg())
    cfg.MODEL.RESNETS.DEPTH = depth
    if depth in (18, 34):
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.NORM = norm
    cfg.MODEL.FPN.FUSE_TYPE = fuse_type
    cfg.MODEL.BACKBONE.NAME = "build_fpn_full_backbone"
    return cfg


@pytest.mark.parametrize("depth, norm, fuse_type", [(50, "", "sum"), (18, "GN", "avg")])
def test_fpn_full_matches_detectron2_fpn(depth, norm, fuse_type):
    cfg = cfg_for(depth, norm, fuse_type)
    torch.manual_seed(0)
    theirs = build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3)).eval()
    ours = build_backbone(cfg).eval()
    # same parameter names and shapes: a Detectron2 FPN checkpoint loads strictly
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 320)  # a multiple of 32, as Detectron2 pads
    with torch.no_grad():
        a, b = theirs(x), ours(x)
    assert list(a) == list(b) == ["p2", "p3", "p4", "p5", "p6"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert ours.output_shape() == theirs.output_shape()
    assert ours.size_divisibility == theirs.size_divisibility
    assert ours.padding_constraints == theirs.padding_constraints
