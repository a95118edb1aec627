#!/usr/bin/env python
"""Where a training iteration of a CPU recipe spends its time: PyTorch's profiler over real NEON batches.

Builds the model, optimizer and training data loader of ``--config`` exactly as ``train_net`` does
(``fpn_variants.engine.Trainer``), draws ``--warmup + --steps`` real batches from the training set
first (so data loading is not in the profile), runs ``--warmup`` SGD steps unprofiled (oneDNN plans
its kernels), then profiles ``--steps`` steps with ``torch.profiler`` (CPU activity) and groups the
operators into families (convolution forward / backward, RoIAlign, batch norm, NMS, ...).

    .venv/bin/python benchmarks/profile_recipe.py [--config NEON/faster_rcnn_c_fpn.yaml]
        [--steps 5] [--warmup 3] [--out docs/results] [KEY VALUE ...]

Writes ``recipe_profile.md`` (atomically) under ``--out``: seconds per iteration (wall, profiled) and,
for every family and for the top operators, self CPU seconds per iteration and share of the total.
Threads: PyTorch's default (all cores) unless ``OMP_NUM_THREADS`` is set. The profile explains which
recipe changes can help at all: a step dominated by oneDNN convolutions gains nothing from the data
loader or the allocator. With ``SOLVER.AMP.ENABLED True`` the forward pass runs under bf16 autocast, as
``fpn_variants.amp.CPUAMPTrainer`` runs it.

Errors: a config that does not exist under ``configs/`` exits naming it; ``--steps`` / ``--warmup``
below 1 / 0 exit naming the value.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections import defaultdict

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from fpn_variants.fileio import write_text_atomic  # noqa: E402

# operator name (substring, first match wins) -> family
FAMILIES = (
    ("convolution_backward", "convolution backward"),
    ("_slow_conv2d_backward", "convolution backward"),
    ("mkldnn_convolution", "convolution forward"),
    ("_slow_conv2d_forward", "convolution forward"),
    ("roi_align", "RoIAlign (forward + backward)"),
    ("batch_norm", "batch norm (forward + backward)"),
    ("group_norm", "group norm (forward + backward)"),
    ("_to_copy", "dtype casts and copies"),
    ("aten::copy_", "dtype casts and copies"),
    ("max_pool2d", "max pool (stem)"),
    ("nms", "NMS"),
    ("aten::mm", "matmul (box head fc)"),
    ("aten::addmm", "matmul (box head fc)"),
    ("threshold", "ReLU (forward + backward)"),
    ("relu", "ReLU (forward + backward)"),
    ("upsample", "upsampling (top-down pathway)"),
)


def family(name: str) -> str:
    for key, fam in FAMILIES:
        if key in name:
            return fam
    return "other (indexing, copies, elementwise, optimizer, ...)"


def profile_steps(config: str, opts, steps: int, warmup: int):
    """``(seconds per profiled step (wall), torch.profiler key averages)`` of ``steps`` SGD steps."""
    from detectron2.utils.events import EventStorage
    from torch.profiler import ProfilerActivity, profile

    from fpn_variants.amp import amp_dtype
    from fpn_variants.config import load_config
    from fpn_variants.engine import Trainer

    cfg = load_config(os.path.join(REPO, "configs", config), ["OUTPUT_DIR", os.path.join(REPO, "output", "profile_recipe"),
                                                              "DATALOADER.NUM_WORKERS", "0", *opts])
    model = Trainer.build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    loader = iter(Trainer.build_train_loader(cfg))
    batches = [next(loader) for _ in range(warmup + steps)]
    model.train()
    dtype = amp_dtype("cpu", cfg.SOLVER.AMP.ENABLED)  # SOLVER.AMP.ENABLED True: bf16 autocast, as CPUAMPTrainer

    def step(batch):
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with EventStorage(0):
        for b in batches[:warmup]:
            step(b)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t = time.perf_counter()
            for b in batches[warmup:]:
                step(b)
            wall = (time.perf_counter() - t) / steps
    return wall, prof.key_averages()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="NEON/faster_rcnn_c_fpn.yaml")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", default="docs/results")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    a = p.parse_args(argv)
    if not os.path.isfile(os.path.join(REPO, "configs", a.config)):
        raise SystemExit(f"config {a.config!r} not found under configs/")
    if a.steps < 1 or a.warmup < 0:
        raise SystemExit(f"--steps {a.steps} must be >= 1 and --warmup {a.warmup} >= 0")
    wall, events = profile_steps(a.config, a.opts, a.steps, a.warmup)
    # self CPU time: elapsed on the calling thread, exclusive of child operators (intra-op OpenMP
    # threads work inside it, they are not added up); per iteration, in seconds
    ops = [(e.key, e.self_cpu_time_total / 1e6 / a.steps, e.count // a.steps) for e in events]
    total = sum(s for _, s, _ in ops)
    fams = defaultdict(float)
    for name, s, _ in ops:
        fams[family(name)] += s
    cmd = ".venv/bin/python benchmarks/profile_recipe.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    L = [f"# Where a training iteration of the CPU recipe goes: {a.config}", "",
         f"Command: `{cmd.strip()}`; {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, {torch.get_num_threads()} "
         f"torch threads, torch {torch.__version__}. {a.steps} SGD steps on real `neon_trees_train` batches "
         f"(drawn before profiling, so data loading is excluded) after {a.warmup} unprofiled steps.", "",
         f"Wall time: **{wall:.2f} s / iteration** (under the profiler); operators' self CPU time (elapsed on "
         f"the calling thread, intra-op threads inside it): {total:.2f} s / iteration.", "",
         "| operator family | self CPU s / it | share |", "|---|---|---|"]
    for fam, s in sorted(fams.items(), key=lambda kv: -kv[1]):
        L.append(f"| {fam} | {s:.3f} | {100 * s / total:.1f} % |")
    L += ["", f"Top {a.top} operators:", "", "| operator | calls / it | self CPU s / it | share |", "|---|---|---|---|"]
    for name, s, n in sorted(ops, key=lambda o: -o[1])[:a.top]:
        L.append(f"| `{name}` | {n} | {s:.3f} | {100 * s / total:.1f} % |")
    L.append("")
    os.makedirs(a.out, exist_ok=True)
    write_text_atomic(os.path.join(a.out, "recipe_profile.md"), "\n".join(L))
    print("\n".join(L))
    return 0


if __name__ == "__main__":
    sys.exit(main())
