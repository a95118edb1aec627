#!/usr/bin/env python
"""Cost of every pyramid (the neck alone) against Detectron2's own FPN, measured in the same run.

For each setting (bottom-up depth, image size) this builds Detectron2's ``build_resnet_fpn_backbone``
and every registered preset from the same config, computes the real C2..C5 maps of one random image
once, then measures on those maps:

* parameters of the neck (backbone minus bottom-up pathway);
* FLOPs of the neck (fvcore ``FlopCountAnalysis``, one fused multiply-add = 1 flop, as Detectron2
  counts), in GFLOPs;
* CPU latency of the neck: median over ``--repeats`` timed calls (seconds) after ``--warmup`` calls,
  under ``torch.inference_mode``, the variants interleaved round-robin so drift of the machine hits
  all alike; and achieved GFLOP/s;
* each as a ratio to Detectron2's FPN.

    .venv/bin/python benchmarks/bench_necks.py [--out docs/results] [--repeats 15] [--warmup 3]

Writes ``benchmark_necks.csv`` and ``benchmark_necks.md`` (atomically) under ``--out``.
End-to-end inference, training throughput and memory are not measured here (issue 5).
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import statistics
import sys
import time
import warnings

import torch
from torch import nn

warnings.filterwarnings("ignore")

from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling import build_backbone  # noqa: E402
from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone  # noqa: E402
from fvcore.nn import FlopCountAnalysis  # noqa: E402

import fpn_variants  # noqa: E402
from fpn_variants.config import resnet_fpn_cfg  # noqa: E402

REFERENCE = "detectron2 FPN"
SETTINGS = [
    # (name, depth, d, image height, image width): the paper's size, and the CPU recipe's
    ("R-50, d=256, 800x1216", 50, 256, 800, 1216),
    ("R-18, d=128, 224x224", 18, 128, 224, 224),
]


class Fixed(nn.Module):
    """Stands in for the bottom-up pathway: returns precomputed maps, so only the neck runs."""

    def __init__(self, feats, shapes):
        super().__init__()
        self.feats, self.shapes = feats, shapes

    def forward(self, x):
        return self.feats

    def output_shape(self):
        return self.shapes


def build_all(cfg):
    torch.manual_seed(0)
    nets = {REFERENCE: build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))}
    for preset in fpn_variants.PRESETS:
        cfg.MODEL.BACKBONE.NAME = fpn_variants.backbone_name(preset)
        nets[preset] = build_backbone(cfg)
    return {k: v.eval() for k, v in nets.items()}


def measure(setting, repeats, warmup):
    name, depth, d, h, w = setting
    nets = build_all(resnet_fpn_cfg(depth, d))
    x = torch.randn(1, 3, h, w)
    with torch.no_grad():  # not inference_mode: fvcore's tracer reuses these maps
        feats = nets[REFERENCE].bottom_up(x)
    shapes = nets[REFERENCE].bottom_up.output_shape()
    rows = {}
    for key, net in nets.items():
        neck_params = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("bottom_up."))
        net.bottom_up = Fixed(feats, shapes)
        flops = FlopCountAnalysis(net, (x,))
        flops.unsupported_ops_warnings(False)
        flops.uncalled_modules_warnings(False)
        rows[key] = {"setting": name, "pyramid": key, "neck_params_M": neck_params / 1e6, "neck_GFLOPs": flops.total() / 1e9, "times": []}
    with torch.inference_mode():
        for _ in range(warmup):
            for net in nets.values():
                net(x)
        for _ in range(repeats):
            for key, net in nets.items():
                t = time.perf_counter()
                net(x)
                rows[key]["times"].append(time.perf_counter() - t)
    ref = rows[REFERENCE]
    ref_lat = statistics.median(ref["times"])
    out = []
    for key, r in rows.items():
        lat = statistics.median(r.pop("times"))
        r["neck_latency_ms"] = 1e3 * lat
        r["achieved_GFLOP_per_s"] = r["neck_GFLOPs"] / lat
        r["params_ratio"] = r["neck_params_M"] / ref["neck_params_M"]
        r["flops_ratio"] = r["neck_GFLOPs"] / ref["neck_GFLOPs"]
        r["latency_ratio"] = lat / ref_lat
        out.append(r)
    return out


def atomic_write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/results")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit(f"--repeats {args.repeats} must be >= 1 and --warmup {args.warmup} >= 0")
    rows = []
    for s in SETTINGS:
        rows += measure(s, args.repeats, args.warmup)
        print(f"measured {s[0]}", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    fields = list(rows[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(os.path.join(args.out, "benchmark_necks.csv"), buf.getvalue())
    lines = [
        "# Neck cost against Detectron2's FPN (same run)",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_necks.py --repeats {args.repeats} --warmup {args.warmup}`; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"{time.strftime('%Y-%m-%d')}. Neck = everything but the bottom-up pathway (laterals, top-down, "
        "output convs, P6), on the real C2..C5 maps of one random image, batch 1, CPU, fp32. "
        "Latency: median of the timed calls, variants interleaved.",
        "",
    ]
    for s in SETTINGS:
        lines += [f"## {s[0]}", "", "| pyramid | params (M) | GFLOPs | latency (ms) | GFLOP/s | params / D2 | GFLOPs / D2 | latency / D2 |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r["setting"] == s[0]:
                lines.append(
                    f"| {r['pyramid']} | {r['neck_params_M']:.3f} | {r['neck_GFLOPs']:.2f} | {r['neck_latency_ms']:.1f} | "
                    f"{r['achieved_GFLOP_per_s']:.0f} | {r['params_ratio']:.3f} | {r['flops_ratio']:.3f} | {r['latency_ratio']:.3f} |"
                )
        lines.append("")
    atomic_write(os.path.join(args.out, "benchmark_necks.md"), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
