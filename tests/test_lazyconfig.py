"""LazyConfig: Detectron2's ``L(FPN)(...)`` arguments build every pyramid (``preset_pyramid``, or
``FeaturePyramid`` as the ``_target_``), the files in configs/lazy load and instantiate with every preset
and take a training step, and the LazyConfig training entry trains and evaluates on real data (NEON)."""
import glob
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling.backbone import FPN
from detectron2.utils.events import EventStorage

from fpn_variants.modeling import PATHS, PRESETS, FeaturePyramid, preset_pyramid

from conftest import REPO

LAZY = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "lazy", "*_1x.py")))


def test_every_lazy_config_is_covered():
    assert [os.path.basename(p) for p in LAZY] == [
        "faster_rcnn_fpn_1x.py", "fcos_fpn_1x.py", "mask_rcnn_fpn_1x.py", "retinanet_fpn_1x.py"]


def test_detectron2_fpn_arguments_build_the_same_fpn():
    """FeaturePyramid takes Detectron2's FPN keyword arguments (input shapes from bottom_up), and with
    the fpn_full preset equals Detectron2's FPN given the same weights."""
    cfg = LazyConfig.load(os.path.join(REPO, "configs", "lazy", "models", "faster_rcnn_fpn.py"))
    cfg.model.backbone.bottom_up.stages.depth = 50
    torch.manual_seed(0)
    ours = instantiate(cfg.model.backbone).eval()
    cfg.model.backbone._target_ = FPN
    del cfg.model.backbone.preset
    theirs = instantiate(cfg.model.backbone).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    cfg.model.backbone._target_ = FeaturePyramid  # the plain swap works too (the paper's FPN by default)
    assert list(instantiate(cfg.model.backbone).output_shape()) == ["p2", "p3", "p4", "p5", "p6"]
    assert ours.padding_constraints == theirs.padding_constraints


def test_preset_pyramid_errors():
    with pytest.raises(KeyError, match="unknown FPN preset 'fpn_nas'; valid: fpn_full"):
        preset_pyramid("fpn_nas")
    with pytest.raises(ValueError, match="give input_shapes .* or a bottom_up backbone"):
        preset_pyramid("fpn_full", in_features=["res2"], out_channels=8)
    with pytest.raises(ValueError, match="square_pad=-1 must be an int >= 0"):
        from detectron2.layers import ShapeSpec
        FeaturePyramid({"res2": ShapeSpec(channels=4, stride=4)}, ["res2"], 8, square_pad=-1)


def batch(seed=0):
    from detectron2.structures import Boxes, Instances, PolygonMasks

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):
        inst = Instances((64, 96))
        boxes = torch.tensor([[8.0, 8.0, 40.0, 36.0], [50.0, 20.0, 90.0, 60.0]])
        inst.gt_boxes, inst.gt_classes = Boxes(boxes), torch.tensor([0, 3])
        inst.gt_masks = PolygonMasks([[[x0, y0, x1, y0, x1, y1, x0, y1]] for x0, y0, x1, y1 in boxes.tolist()])
        out.append({"image": torch.rand(3, 64, 96, generator=g) * 255, "instances": inst, "height": 64, "width": 96})
    return out


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("path", LAZY, ids=[os.path.basename(p)[:-3] for p in LAZY])
def test_lazy_config_instantiates_and_steps_with_every_preset(path, preset):
    cfg = LazyConfig.load(os.path.join(REPO, path))
    cfg = LazyConfig.apply_overrides(cfg, [f"model.backbone.preset={preset}", "train.device=cpu",
                                           "model.backbone.bottom_up.stem.norm=GN", "model.backbone.bottom_up.stages.norm=GN"])
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert type(model.backbone) is FeaturePyramid
    assert len(model.backbone.post_paths) == sum(PATHS.get(p).STAGE == "post" for p in PRESETS[preset]["paths"])
    # a training step (R-50, CPU: ~15 s) for every preset on FCOS (LazyConfig is its only config here;
    # the yacs heads are stepped with every preset in test_heads.py), for fpn_full on every config and
    # for every other preset on one more config each; every pair is loaded and instantiated
    if (preset != "fpn_full" and "fcos" not in path
            and list(PRESETS).index(preset) % len(LAZY) != LAZY.index(path)):
        return
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    model.train()
    with EventStorage(0):
        losses = model(batch())
    total = sum(losses.values())
    assert torch.isfinite(total)
    optimizer.zero_grad()
    total.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, unused
    before = next(p for n, p in model.named_parameters() if n.startswith("backbone.fpn_")).clone()
    optimizer.step()
    after = next(p for n, p in model.named_parameters() if n.startswith("backbone.fpn_"))
    assert not torch.equal(before, after)  # the pyramid's parameters are in the optimizer
    model.eval()
    with torch.no_grad():
        out = model([{"image": x["image"], "height": 64, "width": 96} for x in batch()])
    assert len(out) == 2 and "instances" in out[0]


def test_lazy_train_entry_trains_resumes_and_evaluates_on_neon(neon_root, tmp_path):
    """configs/lazy/faster_rcnn_fpn_1x.py through fpn_variants.lazy_train_net on NEON tiles at 96 px:
    2 iterations from scratch with a checkpoint, resumed to 3, then evaluated with COCOEvaluator."""
    from detectron2.engine import default_argument_parser

    from fpn_variants.lazy_train_net import main

    opts = ["train.device=cpu", "train.init_checkpoint=", f"train.output_dir={tmp_path}", "train.max_iter=2",
            "train.checkpointer.period=2", "train.eval_period=0", "train.log_period=1",
            "dataloader.train.dataset.names=neon_trees_train", "dataloader.test.dataset.names=neon_trees_val",
            "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
            "dataloader.train.mapper.augmentations.0.short_edge_length=[96]", "dataloader.train.mapper.augmentations.0.max_size=160",
            "dataloader.test.mapper.augmentations.0.short_edge_length=96", "dataloader.test.mapper.augmentations.0.max_size=160",
            "model.roi_heads.num_classes=1", "model.proposal_generator.post_nms_topk=[200,200]",
            "model.roi_heads.batch_size_per_image=64", "model.backbone.preset=fpn_panet", f"dataloader.evaluator.output_dir={tmp_path}",
            # from scratch: GN instead of FrozenBN (an R-50 with identity FrozenBN overflows to inf)
            "model.backbone.bottom_up.stem.norm=GN", "model.backbone.bottom_up.stages.norm=GN"]
    cfg_file = os.path.join(REPO, "configs", "lazy", "faster_rcnn_fpn_1x.py")
    main(default_argument_parser().parse_args(["--config-file", cfg_file, *opts]))
    assert os.path.exists(tmp_path / "model_0000001.pth") or os.path.exists(tmp_path / "model_final.pth")
    main(default_argument_parser().parse_args(["--config-file", cfg_file, "--resume", *opts[:3], "train.max_iter=3", *opts[4:]]))
    with open(tmp_path / "metrics.json") as f:
        iters = [eval(line.replace("true", "True").replace("false", "False").replace("NaN", "float('nan')"))["iteration"]
                 for line in f if '"iteration"' in line]
    assert iters.count(0) == iters.count(1) == 1 and max(iters) >= 2, iters  # resumed for the third, not from 0
    res = main(default_argument_parser().parse_args(
        ["--config-file", cfg_file, "--eval-only", *opts, f"train.init_checkpoint={tmp_path / 'model_final.pth'}"]))
    assert set(res["bbox"]) >= {"AP", "AP50", "APs", "APm"}
