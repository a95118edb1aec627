"""End to end on the real NEON data: train_net.py trains a few iterations, evaluates with Detectron2's
COCOEvaluator, and --eval-only from the checkpoint reproduces that evaluation; RPN-only models are
evaluated by proposal recall; the visualiser draws detections."""
import json
import os
import subprocess
import sys

import cv2
import pytest

from conftest import REPO

TINY = [
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.MAX_ITER", "3",
    "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.STEPS", "()",
    "DATALOADER.NUM_WORKERS", "0",
]


def train_net(*args):
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "train_net.py"), *args],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def read_metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def trained(neon_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("faster_rcnn"))
    cfg = os.path.join(REPO, "configs", "NEON", "faster_rcnn_R_18_FPN_cpu.yaml")
    train_net("--config-file", cfg, *TINY, "OUTPUT_DIR", out)
    return cfg, out


def test_training_writes_checkpoint_and_coco_metrics(trained):
    _, out = trained
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == "model_final.pth"
    lines = read_metrics(out)
    assert [l["iteration"] for l in lines if "total_loss" in l][-1] == 2
    final = [l for l in lines if "bbox/AP" in l][-1]
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert f"bbox/{k}" in final


def test_eval_only_reproduces_the_final_evaluation(trained):
    cfg, out = trained
    eval_dir = out + "_eval"
    train_net("--config-file", cfg, "--eval-only", *TINY, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), "OUTPUT_DIR", eval_dir)
    with open(os.path.join(eval_dir, "eval_results.json")) as f:
        res = json.load(f)["bbox"]
    final = [l for l in read_metrics(out) if "bbox/AP" in l][-1]
    for k in ("AP", "AP50"):
        v = final[f"bbox/{k}"]
        assert res[k] == pytest.approx(v, abs=1e-6) or (v != v and res[k] != res[k])


def test_visualiser_draws_ground_truth_beside_detections(trained):
    from fpn_variants.visualize import main

    cfg, out = trained
    png = main(["--config-file", cfg, "--num-images", "2", "--score-thresh", "0.0", "--weights",
                os.path.join(out, "model_final.pth"), "--output", os.path.join(out, "vis.png"), *TINY])
    img = cv2.imread(png)
    assert img is not None
    # two rows of (GT | 8 px | detections), each 400 px high (200-px tiles drawn at scale 2)
    assert img.shape[0] == 2 * (400 + 8) and img.shape[1] == 2 * 400 + 8


def test_rpn_only_model_is_evaluated_by_proposal_recall(neon_root, tmp_path):
    out = str(tmp_path / "rpn")
    train_net(
        "--config-file", os.path.join(REPO, "configs", "NEON", "Base-NEON-CPU.yaml"),
        *TINY, "MODEL.META_ARCHITECTURE", "ProposalNetwork", "MODEL.BACKBONE.NAME", "build_fpn_top_down_only_backbone",
        "OUTPUT_DIR", out,
    )
    final = [l for l in read_metrics(out) if "box_proposals/AR@100" in l][-1]
    for k in ("AR@100", "AR@300", "ARs@300", "ARm@300"):
        assert 0.0 <= final[f"box_proposals/{k}"] <= 100.0
    with open(os.path.join(out, "inference", "neon_trees_val", "box_proposals_recall.json")) as f:
        saved = json.load(f)
    assert saved["num_images"] == 42 and saved["num_gt"] > 150


def test_bad_config_value_fails_before_training(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file",
         os.path.join(REPO, "configs", "NEON", "faster_rcnn_R_18_FPN_cpu.yaml"),
         "MODEL.BACKBONE.NAME", "build_fpn_topdown_backbone", "OUTPUT_DIR", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "build_fpn_topdown_backbone" in proc.stderr and "build_fpn_top_down_only_backbone" in proc.stderr


def test_two_process_cpu_training_with_gloo(neon_root, tmp_path):
    """--num-gpus 2 on a CPU model: Detectron2's launch (GLOO) + DDP with device_ids=None."""
    out = str(tmp_path / "ddp")
    proc = train_net(
        "--config-file", os.path.join(REPO, "configs", "NEON", "faster_rcnn_R_18_FPN_cpu.yaml"),
        "--num-gpus", "2", "--dist-url", "auto", *TINY, "MODEL.DEVICE", "cpu", "OUTPUT_DIR", out,
    )
    assert "World size: 2" in proc.stdout + proc.stderr
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    assert any("bbox/AP" in l for l in read_metrics(out))


def test_fixed_seed_gives_identical_losses_and_resume_continues(trained, tmp_path):
    """SEED (0 in the configs) makes CPU training repeatable: a second run logs the same losses, bit
    for bit; --resume continues from the last checkpoint instead of starting over."""
    cfg, out = trained
    again = str(tmp_path / "again")
    train_net("--config-file", cfg, *TINY, "OUTPUT_DIR", again)

    def losses(d):
        return [(l["iteration"], l["total_loss"]) for l in read_metrics(d) if "total_loss" in l]

    assert losses(again) == losses(out) and len(losses(out)) >= 1
    longer = [v if prev != "SOLVER.MAX_ITER" else "5" for prev, v in zip([None] + TINY[:-1], TINY)]
    proc = train_net("--config-file", cfg, "--resume", *longer, "OUTPUT_DIR", again)
    assert "Starting training from iteration 3" in proc.stdout + proc.stderr
    assert losses(again)[-1][0] == 4


def test_sigkill_and_resume_ends_with_the_same_weights_as_an_uninterrupted_run(neon_root, tmp_path):
    """A run killed with SIGKILL after a checkpoint and restarted with --resume replays the data loader
    and restores the checkpointed RNG states: its final weights and evaluation equal an uninterrupted
    run's, bit for bit (CPU, SEED 0, with the random augmentation of the NEON recipe on)."""
    import signal
    import time

    import torch

    cfg = os.path.join(REPO, "configs", "NEON", "faster_rcnn_R_18_FPN_cpu.yaml")
    opts = [*TINY, "SOLVER.MAX_ITER", "9", "SOLVER.CHECKPOINT_PERIOD", "3", "DATALOADER.NUM_WORKERS", "1",
            "INPUT.MIN_SIZE_TRAIN", "(96, 128)", "INPUT.MIN_SIZE_TEST", "128"]
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    train_net("--config-file", cfg, *opts, "OUTPUT_DIR", straight)
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", cfg, *opts, "OUTPUT_DIR", killed]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    tag = os.path.join(killed, "last_checkpoint")
    deadline = time.time() + 600
    while time.time() < deadline and not (os.path.isfile(tag) and open(tag).read().strip() == "model_0000005.pth"):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its data-loader worker
    proc.wait()
    assert not os.path.isfile(os.path.join(killed, "model_final.pth")), "killed too late"
    resumed = train_net("--config-file", cfg, "--resume", *opts, "OUTPUT_DIR", killed)
    log = resumed.stdout + resumed.stderr
    assert "Starting training from iteration 6" in log and "exact resume: replayed 6 batches" in log
    a = torch.load(os.path.join(straight, "model_final.pth"))["model"]
    b = torch.load(os.path.join(killed, "model_final.pth"))["model"]
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]

    def final_eval(d):
        return [l for l in read_metrics(d) if "bbox/AP" in l][-1]

    fa, fb = final_eval(straight), final_eval(killed)
    assert {k: v for k, v in fa.items() if k.startswith("bbox/")} == {k: v for k, v in fb.items() if k.startswith("bbox/")}
