#!/usr/bin/env python
"""The GPU checks of a CUDA machine, in one command: latency of the paper's detector, AMP, training.

1. **Inference latency** of the paper's R-50-FPN Faster R-CNN (``configs/COCO/faster_rcnn_c_fpn.yaml``,
   d = 256, one 800x1216 image: the paper's 800 px shorter side at COCO's typical aspect; the paper
   reports 0.148 s / image on one M40, Table 4 footnote / §6) and of every pyramid of this package,
   in fp32, fp16 autocast (``SOLVER.AMP.ENABLED``'s CUDA path) and bf16 autocast, through
   :class:`fpn_variants.amp.AutocastInference` — ``model([image])`` in eval mode, pre- and
   post-processing included, median over ``--repeats`` calls after ``--warmup`` calls, synchronised.
   Weights are random (shared with Detectron2's FPN, batch norm calibrated as in
   ``benchmarks/benchmark.py``): a random RoI head scores most classes near 1/81, below
   ``ROI_HEADS.SCORE_THRESH_TEST`` 0.05, so post-processing keeps 0-100 boxes depending on the
   model; the rows with threshold 0 send all 1000 x 80 boxes through NMS, an upper bound of a
   trained detector's post-processing.
2. **Training and evaluation through ``train_net.py``** on the GPU, the path a user takes: the COCO
   Faster R-CNN config on NEON tiles (``DATASETS.TRAIN ("neon_trees_train",)``, 800 px,
   ``MODEL.WEIGHTS ""``, one class) for ``--train-iters`` iterations in fp32 and with
   ``SOLVER.AMP.ENABLED True`` (Detectron2's ``AMPTrainer``; evaluation under fp16 autocast), and the
   Table 2 chain with AMP: the Table 1(c) RPN trained, its proposals dumped
   (``python -m fpn_variants.proposals``), Fast R-CNN trained and evaluated on them. Speeds come
   from each run's ``log.txt`` (Detectron2's timers), AP / AR from its results.

    python benchmarks/gpu_check.py --out OUT [--repeats 30] [--warmup 5] [--train-iters 40]
        [--batch 1] [--train-batch 4] [--models ...] [--no-chain]

Writes ``gpu_check.json`` and ``gpu_check.md`` under ``--out`` (atomically, after every part, so a
run cut short keeps what it measured). A part that fails is recorded with its error and the others
still run. Exits 2 without CUDA.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(1, REPO)

import benchmark as bench  # noqa: E402
from bench_recipe import parse_log  # noqa: E402

from fpn_variants.amp import AutocastInference  # noqa: E402
from fpn_variants.fileio import write_json_atomic, write_text_atomic  # noqa: E402

PAPER_S_PER_IMAGE = 0.148  # Lin et al. 2017, R-50 FPN Faster R-CNN, one NVIDIA M40
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def environment() -> dict:
    import detectron2

    p = torch.cuda.get_device_properties(0)
    return dict(torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                gpu=torch.cuda.get_device_name(0), gpu_memory_GiB=round(p.total_memory / 2**30, 1),
                detectron2=detectron2.__version__, python=sys.version.split()[0], cpus=os.cpu_count())


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def latency(repeats: int, warmup: int, device: str = "cuda", batch: int = 1, models=None) -> list:
    """Rows of (model, precision, score threshold, median / min / max seconds per call of ``batch``
    images, boxes kept in the first image)."""
    setting = bench.Setting("r50-800", "R-50, d=256, 800x1216", "COCO", 800, 1216, 1, device=device)
    inputs = [{"image": bench.synthetic_image(setting, seed=i), "height": setting.height, "width": setting.width}
              for i in range(batch)]
    rows = []
    keys = [bench.REFERENCE] + [k for k in bench.MODELS if k not in (bench.REFERENCE,) and not k.startswith(("C4", "C5"))]
    for key in [k for k in keys if models is None or k in models]:
        model = bench.build_benchmark_model(setting, key)[0].eval()
        bench.calibrate_norms(model, inputs)
        threshes = (0.05, 0.0) if key in (bench.REFERENCE, "fpn_full") else (0.05,)
        for thresh in threshes:
            model.roi_heads.box_predictor.test_score_thresh = thresh
            for prec, dtype in PRECISIONS.items():
                m = model if dtype is None else AutocastInference(model, device, dtype)
                times, kept = [], None
                with torch.inference_mode():
                    for i in range(warmup + repeats):
                        _sync(device)
                        t = time.perf_counter()
                        out = m(inputs)
                        _sync(device)
                        if i >= warmup:
                            times.append(time.perf_counter() - t)
                    kept = len(out[0]["instances"])
                    dtypes = sorted({str(v.dtype) for v in out[0]["instances"].get_fields().values()
                                     if hasattr(v, "dtype")} | {str(out[0]["instances"].pred_boxes.tensor.dtype)})
                rows.append(dict(model=key, precision=prec, score_thresh=thresh, batch=batch,
                                 median_s=statistics.median(times),
                                 min_s=min(times), max_s=max(times), boxes_kept=kept, output_dtypes=dtypes))
                print(f"[gpu_check] {key} {prec} thresh {thresh}: {rows[-1]['median_s'] * 1e3:.1f} ms", flush=True)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


NEON = ["DATASETS.TRAIN", "('neon_trees_train',)", "DATASETS.TEST", "('neon_trees_val',)", "MODEL.WEIGHTS", "",
        "MODEL.ROI_HEADS.NUM_CLASSES", "1", "DATALOADER.NUM_WORKERS", "4", "SOLVER.CHECKPOINT_PERIOD", "100000"]
TRAIN_BATCH = [4]  # --train-batch
EXTRA: list = []  # --opts: e.g. MODEL.DEVICE cpu INPUT.MIN_SIZE_TEST 128 for a dry run on a CPU


def _train(work: str, name: str, config: str, iters: int, opts: list) -> dict:
    out = os.path.join(work, name)
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", os.path.join(REPO, config), *NEON, *EXTRA,
           "SOLVER.MAX_ITER", str(iters), "SOLVER.IMS_PER_BATCH", str(TRAIN_BATCH[0]), "SOLVER.BASE_LR", "0.01",
           "SOLVER.WARMUP_ITERS", str(min(100, iters)), "SOLVER.STEPS", "()", "OUTPUT_DIR", out, *opts]
    t = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    row = dict(run=name, config=config, opts=" ".join(opts), iters=iters, wall_s=round(time.time() - t, 1),
               returncode=proc.returncode, **parse_log(os.path.join(out, "log.txt")))
    if proc.returncode:
        row["error"] = proc.stderr.strip().splitlines()[-12:]
    res = os.path.join(out, "metrics.json")
    if os.path.isfile(res):
        last = {}
        for line in open(res):
            last.update({k: v for k, v in json.loads(line).items() if "/" in k or k.startswith("bbox")})
        row["final"] = {k: round(v, 2) for k, v in last.items() if k.startswith(("bbox/AP", "box_proposals/AR"))}
    print(f"[gpu_check] train {name}: {row}", flush=True)
    return row


def training(work: str, iters: int, chain: bool = True) -> list:
    rows = [_train(work, "faster_fp32", "configs/COCO/faster_rcnn_c_fpn.yaml", iters, []),
            _train(work, "faster_amp", "configs/COCO/faster_rcnn_c_fpn.yaml", iters, ["SOLVER.AMP.ENABLED", "True"])]
    amp = ["SOLVER.AMP.ENABLED", "True"]
    if not chain:
        return rows
    rows.append(_train(work, "rpn_amp", "configs/COCO/rpn_c_fpn.yaml", iters, amp))
    props = os.path.join(work, "proposals")
    cmd = [sys.executable, "-m", "fpn_variants.proposals", "--config-file", "configs/COCO/rpn_c_fpn.yaml",
           "--output-dir", props, *NEON[:4], *EXTRA, "MODEL.WEIGHTS", os.path.join(work, "rpn_amp", "model_final.pth"), *amp]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    rows.append(dict(run="proposals_amp", returncode=proc.returncode,
                     error=proc.stderr.strip().splitlines()[-12:] if proc.returncode else None))
    files = [os.path.join(props, f"proposals_{d}.pkl") for d in ("neon_trees_train", "neon_trees_val")]
    rows.append(_train(work, "fast_rcnn_amp", "configs/COCO/fast_rcnn_c_fpn.yaml", iters,
                       ["DATASETS.PROPOSAL_FILES_TRAIN", repr((files[0],)), "DATASETS.PROPOSAL_FILES_TEST",
                        repr((files[1],)), *amp]))
    return rows


def markdown(res: dict) -> str:
    env = res.get("environment", {})
    L = ["# GPU checks", "", f"Command: `{res['command']}`; {res['date']}. {env.get('gpu')} "
         f"({env.get('gpu_memory_GiB')} GiB), torch {env.get('torch')} (CUDA {env.get('cuda')}, cuDNN "
         f"{env.get('cudnn')}), Detectron2 {env.get('detectron2')}, Python {env.get('python')}, {env.get('cpus')} CPUs.",
         ""]
    if res.get("latency"):
        L += [f"## Inference latency, R-50 FPN Faster R-CNN, {res['latency'][0].get('batch', 1)} image(s) of 800x1216 per call", "",
              f"Paper: {PAPER_S_PER_IMAGE} s / image (R-50, one M40). Median (min-max) seconds of `model([image])`, "
              "eval mode, pre- and post-processing included; random weights (see the script's docstring for what "
              "the score threshold changes).", "",
              "| model | precision | score thresh | s / image | min-max | vs fp32 | boxes kept |", "|---|---|---|---|---|---|---|"]
        base = {(r["model"], r["score_thresh"]): r["median_s"] for r in res["latency"] if r["precision"] == "fp32"}
        for r in res["latency"]:
            b = base.get((r["model"], r["score_thresh"]))
            L.append(f"| {r['model']} | {r['precision']} | {r['score_thresh']} | {r['median_s']:.4f} | "
                     f"{r['min_s']:.4f}-{r['max_s']:.4f} | {b / r['median_s']:.2f}x | {r['boxes_kept']} |")
        L.append("")
    if res.get("training"):
        L += [f"## train_net.py on the GPU (COCO configs on NEON tiles at 800 px, batch {TRAIN_BATCH[0]})", "",
              "| run | iters | train s / it | eval s / img | final metrics | wall s | exit |", "|---|---|---|---|---|---|---|"]
        for r in res["training"]:
            L.append(f"| {r['run']} | {r.get('iters', '')} | {r.get('train_s_per_it') or '—'} | "
                     f"{r.get('eval_s_per_img') or '—'} | {r.get('final', '')} | {r.get('wall_s', '')} | "
                     f"{r['returncode']} |")
        L.append("")
    for part, err in res.get("errors", {}).items():
        L += [f"## {part} failed", "", "```", err[-3000:], "```", ""]
    return "\n".join(L)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--train-iters", type=int, default=40)
    p.add_argument("--work", default=None, help="run folders (default OUT/work)")
    p.add_argument("--parts", nargs="+", default=["latency", "training"], help="latency, training")
    p.add_argument("--device", default="cuda", help="cuda; cpu only for a dry run of the script")
    p.add_argument("--batch", type=int, default=1, help="images per inference call")
    p.add_argument("--train-batch", type=int, default=4, help="SOLVER.IMS_PER_BATCH of the train_net runs")
    p.add_argument("--models", nargs="+", default=None, help="latency of these models only (default: all pyramids)")
    p.add_argument("--no-chain", action="store_true", help="training: Faster R-CNN fp32 / AMP only, not the Table 2 chain")
    p.add_argument("--opts", nargs="*", default=[], help="KEY VALUE overrides for every train_net run (dry runs)")
    a = p.parse_args(argv)
    EXTRA[:] = a.opts
    TRAIN_BATCH[0] = a.train_batch
    if a.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    res = dict(command="python benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
               date=time.strftime("%Y-%m-%d"), environment=environment() if a.device == "cuda" else {}, errors={})

    def save():
        write_json_atomic(os.path.join(a.out, "gpu_check.json"), res)
        write_text_atomic(os.path.join(a.out, "gpu_check.md"), markdown(res))

    save()
    for part, fn in (("latency", lambda: latency(a.repeats, a.warmup, a.device, a.batch, a.models)),
                     ("training", lambda: training(a.work or os.path.join(a.out, "work"), a.train_iters, not a.no_chain))):
        if part not in a.parts:
            continue
        try:
            res[part] = fn()
        except Exception:
            res["errors"][part] = traceback.format_exc()
            print(res["errors"][part], file=sys.stderr, flush=True)
        save()
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
