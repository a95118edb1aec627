"""Shared fixtures: a small Detectron2 config, synthetic bottom-up maps, the prepared NEON data."""
import os
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

import fpn_variants  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# C2..C5 of a ResNet-18 (BasicBlock): channels 64..512, strides 4..32.
R18_SHAPES = {
    "res2": ShapeSpec(channels=64, stride=4),
    "res3": ShapeSpec(channels=128, stride=8),
    "res4": ShapeSpec(channels=256, stride=16),
    "res5": ShapeSpec(channels=512, stride=32),
}


def conv_size(n: int, stride: int) -> int:
    """Spatial size of a ResNet map of ``stride`` for an input side ``n`` (each /2 rounds up)."""
    for _ in range(int(stride).bit_length() - 1):
        n = (n + 1) // 2
    return n


def synthetic_features(height=333, width=517, batch=2, shapes=R18_SHAPES, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(batch, s.channels, conv_size(height, s.stride), conv_size(width, s.stride), generator=g)
        for k, s in shapes.items()
    }


def small_cfg(backbone="build_fpn_full_backbone", d=32):
    """R-18 from scratch, d channels, CPU: fast enough to build and step many times in tests."""
    cfg = get_cfg()
    fpn_variants.add_fpn_variants_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "NEON", "Base-NEON-CPU.yaml"))
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.MODEL.FPN.OUT_CHANNELS = d
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    return cfg


@pytest.fixture(scope="session")
def neon_root():
    """The NEON tree-crown dataset, prepared once (idempotent; `make data` normally did it)."""
    from fpn_variants.data import neon

    root = neon.default_root()
    neon.prepare(root)
    return root
