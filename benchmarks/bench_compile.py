#!/usr/bin/env python
"""Does ``torch.compile`` of the backbone (bottom-up pathway + pyramid) pay on this CPU, after its
compile time? fp32 and bf16 autocast, eager against compiled, in one run.

For each ``--configs`` detector (default: the two NEON demo recipes), the backbone alone
(``model.backbone``: C2..C5 and P2..P6) runs forward + backward on a fixed batch of
``--batch`` x 3 x ``--size`` x ``--size`` images (loss = sum of the mean of each pyramid level), the
work that the profile (docs/results/recipe_profile.md) puts at most of a training iteration. Each
variant — eager / ``torch.compile`` (inductor, default mode) x fp32 / bf16 autocast — reports the
first call (for compiled ones: the compile time), and the median step time over ``--iters`` steps
after ``--warmup``, with the ratio to eager fp32; the break-even point is how many steps the compile
time takes to pay back (``compile_s / (eager_s - compiled_s)``; "never" when compiled is not faster).
Variants run round-robin for ``--rounds`` rounds so that drift of the machine hits all alike.

    .venv/bin/python benchmarks/bench_compile.py [--configs NEON/faster_rcnn_R_18_FPN_cpu.yaml ...]
        [--batch 8] [--size 224] [--iters 10] [--warmup 2] [--out docs/results/amp]

Writes ``compile.md`` and ``compile.json`` (atomically) under ``--out``. Errors: a missing config
or a non-positive count exits naming it.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from fpn_variants.fileio import write_json_atomic, write_text_atomic  # noqa: E402


def build_backbone(config: str):
    from detectron2.modeling import build_model

    import fpn_variants  # noqa: F401
    from fpn_variants.config import load_config

    cfg = load_config(os.path.join(REPO, "configs", config), ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    return build_model(cfg).backbone.train()


def step_fn(backbone, x, dtype):
    def step():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            out = backbone(x)
            loss = sum(v.float().mean() for v in out.values())
        loss.backward()
        return loss
    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["NEON/faster_rcnn_R_18_FPN_cpu.yaml",
                                                    "NEON/faster_rcnn_lite2_FPN_cpu.yaml"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default="docs/results/amp")
    a = p.parse_args(argv)
    for c in a.configs:
        if not os.path.isfile(os.path.join(REPO, "configs", c)):
            raise SystemExit(f"config {c!r} not found under configs/")
    for name in ("batch", "size", "iters", "rounds"):
        if getattr(a, name) < 1:
            raise SystemExit(f"--{name} {getattr(a, name)} must be >= 1")
    x = torch.rand(a.batch, 3, a.size, a.size) * 255 - 128
    rows = []
    for config in a.configs:
        variants = {}
        for prec, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            for mode in ("eager", "compiled"):
                bb = build_backbone(config)
                mod = torch.compile(bb) if mode == "compiled" else bb
                variants[(mode, prec)] = dict(fn=step_fn(mod, x, dtype), first=None, times=[])
        for r in range(a.rounds):
            for key, v in variants.items():
                if v["first"] is None:
                    t = time.perf_counter()
                    v["fn"]()
                    v["first"] = time.perf_counter() - t
                    print(f"[bench_compile] {config} {key}: first call {v['first']:.1f} s", file=sys.stderr, flush=True)
                for i in range(a.warmup + a.iters):
                    t = time.perf_counter()
                    v["fn"]()
                    if i >= a.warmup:
                        v["times"].append(time.perf_counter() - t)
        base = statistics.median(variants[("eager", "fp32")]["times"])
        for (mode, prec), v in variants.items():
            med = statistics.median(v["times"])
            eager = statistics.median(variants[("eager", prec)]["times"])
            row = dict(config=config, mode=mode, precision=prec, first_call_s=v["first"], step_s=med,
                       vs_eager_fp32=med / base)
            if mode == "compiled":
                gain = eager - med
                row["break_even_steps"] = (v["first"] - eager) / gain if gain > 0 else None
            rows.append(row)
    meta = dict(command=".venv/bin/python benchmarks/bench_compile.py " + " ".join(sys.argv[1:] if argv is None else argv),
                date=time.strftime("%Y-%m-%d"), torch=torch.__version__, threads=torch.get_num_threads(),
                cpu=f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    L = ["# torch.compile of the backbone (bottom-up + pyramid) on the CPU, fp32 and bf16", "",
         f"Command: `{meta['command']}`; {meta['date']}, torch {meta['torch']}, {meta['threads']} threads, {meta['cpu']}. "
         f"Forward + backward of `model.backbone` on {a.batch} x 3 x {a.size} x {a.size}; median of {a.iters} steps "
         f"after {a.warmup} warm-ups, {a.rounds} round(s) round-robin. Break-even: steps until the compile time "
         "is paid back against eager in the same precision.", "",
         "| config | mode | precision | first call s | step s | vs eager fp32 | break-even steps |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        be = r.get("break_even_steps")
        be_s = "" if r["mode"] == "eager" else ("never" if be is None else f"{be:.0f}")
        L.append(f"| {r['config']} | {r['mode']} | {r['precision']} | {r['first_call_s']:.1f} | {r['step_s']:.3f} | "
                 f"{r['vs_eager_fp32']:.2f} | {be_s} |")
    os.makedirs(a.out, exist_ok=True)
    write_json_atomic(os.path.join(a.out, "compile.json"), dict(meta=meta, rows=rows))
    write_text_atomic(os.path.join(a.out, "compile.md"), "\n".join(L) + "\n")
    print("\n".join(L))
    return 0


if __name__ == "__main__":
    sys.exit(main())
