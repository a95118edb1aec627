"""Data-parallel training of a CPU model on 2 processes (Detectron2 launch, GLOO): both ranks end
with identical weights, and the loss matches a 1-process run with the same total batch."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO

# Same data for both runs: total batch 4 (1 process x 4, or 2 x 2: Detectron2's TrainingSampler gives
# rank r the indices r, r+2, ... of one shuffled stream, so the first batch holds the same 4 tiles);
# GN instead of BN in the bottom-up pathway (BN statistics would differ with the per-process batch);
# no random augmentation.
OPTS = [
    "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()",
    "DATALOADER.NUM_WORKERS", "0", "INPUT.MIN_SIZE_TRAIN", "(160,)", "INPUT.RANDOM_FLIP", "none",
    "FPN_VARIANTS.AUG.VERTICAL_FLIP", "False", "FPN_VARIANTS.AUG.BRIGHTNESS", "0.0",
    "FPN_VARIANTS.AUG.CONTRAST", "0.0", "FPN_VARIANTS.AUG.SATURATION", "0.0",
    "DATASETS.TEST", "()", "SOLVER.CHECKPOINT_PERIOD", "1000",
]
# Stated tolerance for the logged total loss, 1 vs 2 processes (relative; measured 0.0014). The runs differ
# only in the random anchor / RoI sampling of each process; measured difference: see README.
LOSS_RTOL = 0.02


def run(n, out):
    cfg = os.path.join(REPO, "configs", "NEON", "faster_rcnn_c_fpn.yaml")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "ddp_worker.py"), str(n), cfg, *OPTS, "OUTPUT_DIR", out],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(os.path.join(out, "metrics.json")) as f:
        return [json.loads(l) for l in f if l.strip()]


@pytest.fixture(scope="module")
def runs(neon_root, tmp_path_factory):
    one, two = str(tmp_path_factory.mktemp("one")), str(tmp_path_factory.mktemp("two"))
    return (one, run(1, one)), (two, run(2, two))


def test_both_ranks_hold_identical_weights(runs):
    _, (two, _) = runs
    r0 = torch.load(os.path.join(two, "rank0.pth"))
    r1 = torch.load(os.path.join(two, "rank1.pth"))
    assert r0.keys() == r1.keys() and len(r0) > 50
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    saved = torch.load(os.path.join(two, "model_final.pth"))["model"]
    assert all(torch.equal(saved[k], r0[k]) for k in r0)  # rank 0 saved what it holds


def test_two_process_loss_matches_one_process_with_the_same_total_batch(runs):
    (one, m1), (two, m2) = runs
    l1 = [l for l in m1 if "total_loss" in l]
    l2 = [l for l in m2 if "total_loss" in l]
    assert [l["iteration"] for l in l1] == [l["iteration"] for l in l2] == [2]
    # Detectron2 logs every 20 iterations and at the end: compare the first (and only) logged value,
    # a median over the 3 iterations of the losses averaged across processes
    a, b = l1[0]["total_loss"], l2[0]["total_loss"]
    print(f"total_loss 1 process {a:.4f}, 2 processes {b:.4f}, relative difference {abs(a - b) / a:.4f}")
    assert abs(a - b) / a < LOSS_RTOL
