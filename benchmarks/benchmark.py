#!/usr/bin/env python
"""Cost of every pyramid and of the C4 / C5 baselines against Detectron2's own FPN, measured in one run.

For each setting (``--settings``; default both):

* ``r50-800``: the paper's setting, R-50, ``d`` = 256, one 800x1216 image (COCO configs,
  ``configs/COCO/faster_rcnn_*.yaml``, train batch 1 per process);
* ``r18-neon``: the CPU recipe, R-18, ``d`` = 128, 200x200 tiles (``configs/NEON/faster_rcnn_*.yaml``,
  train batch ``SOLVER.IMS_PER_BATCH`` = 8),

it builds Faster R-CNN with Detectron2's stock ``build_resnet_fpn_backbone`` ("detectron2 FPN"),
with every registered pyramid of this package (``fpn_variants.PRESETS``, each with its published settings,
e.g. BiFPN's weighted fusion) and the Table 3 (a) C4 and (b) C5 baselines, all randomly initialised from the same
config and sharing Detectron2 FPN's weights wherever names and shapes match (bottom-up pathway, RPN,
RoI heads; every weight of ``fpn_full``), and measures:

* parameters of the whole detector and of the neck (backbone minus bottom-up pathway), millions;
* FLOPs of the neck alone and of the whole detector at inference (fvcore's counter through
  Detectron2's ``FlopCountAnalysis``; one fused multiply-add = 1 flop, as Detectron2 counts), GFLOPs;
* CPU latency of the neck alone (on precomputed C2..C5) and end to end (``model([image])`` in eval
  mode, pre- and post-processing included): median seconds over ``--repeats`` calls after
  ``--warmup`` calls, under ``torch.inference_mode``, models interleaved round-robin so drift of
  the machine hits all alike;
* training throughput (images / s; SGD steps as Detectron2's ``SimpleTrainer`` on a fixed synthetic
  batch with 5 boxes per image, so data loading is excluded; learning rate 0, so every step does the
  same work, see :class:`TrainingStep`) and peak resident memory (RSS, MiB,
  ``VmHWM`` of a fresh process per model: imports + model + training);
* achieved GFLOP/s of end-to-end inference, and as a fraction of this machine's measured fp32
  matmul peak (``torch.mm`` of 2048x2048 matrices, same flop convention);
* each cost as a ratio to Detectron2's FPN measured in the same run.

With random weights the RPN passes ``MODEL.RPN.POST_NMS_TOPK_TEST`` proposals to the RoI head, so
the end-to-end numbers are an upper bound of a trained detector's (which also keeps few boxes).

    .venv/bin/python benchmarks/benchmark.py [--out docs/results] [--settings r50-800 r18-neon]
        [--repeats 10] [--warmup 2] [--train-iters 3] [--train-warmup 1] [--train-rounds 1]

Writes ``benchmark.csv``, ``benchmark.json`` and ``benchmark.md`` (atomically) under ``--out``.
Errors: an unknown ``--settings`` / ``--models`` name or a non-positive count exits with a message
naming the bad value and the valid ones.
"""
from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

warnings.filterwarnings("ignore")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, REPO)

from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402

import fpn_variants  # noqa: E402
from fpn_variants.config import load_config  # noqa: E402
from fpn_variants.experiments.costs import count_gflops, count_params_m, time_round_robin  # noqa: E402
from fpn_variants.fileio import write_json_atomic, write_text_atomic  # noqa: E402

REFERENCE = "detectron2 FPN"


@dataclass(frozen=True)
class Setting:
    key: str
    title: str
    folder: str  # configs/<folder>/faster_rcnn_*.yaml
    height: int
    width: int
    train_batch: Optional[int]  # None: the config's SOLVER.IMS_PER_BATCH
    d: Optional[int] = None  # MODEL.FPN.OUT_CHANNELS; None: the config's
    device: str = "cpu"  # MODEL.DEVICE


SETTINGS: Dict[str, Setting] = {
    s.key: s for s in (
        Setting("r50-800", "R-50, d=256, 800x1216 (the paper's size; COCO configs)", "COCO", 800, 1216, 1),
        Setting("r18-neon", "R-18, d=128, 200x200 (the NEON CPU recipe)", "NEON", 200, 200, None),
    )
}


def _models() -> Dict[str, tuple]:
    """Model key -> (config stem, overrides). Every preset on the Table 3(c) FPN config."""
    models = {REFERENCE: ("faster_rcnn_c_fpn", ("MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone"))}
    for preset in fpn_variants.PRESETS:
        # each preset with its published settings (BiFPN: weighted fusion), as its builder applies them
        models[preset] = ("faster_rcnn_c_fpn", ("MODEL.BACKBONE.NAME", fpn_variants.backbone_name(preset)))
    models["C4 (Table 3a)"] = ("faster_rcnn_a_C4", ())
    models["C5 (Table 3b)"] = ("faster_rcnn_b_C5", ())
    return models


MODELS = _models()


def build_cfg(setting: Setting, model_key: str):
    stem, opts = MODELS[model_key]
    d = () if setting.d is None else ("MODEL.FPN.OUT_CHANNELS", str(setting.d))
    cfg = load_config(os.path.join(REPO, "configs", setting.folder, f"{stem}.yaml"),
                      ["MODEL.DEVICE", setting.device, "MODEL.WEIGHTS", "", *d, *opts])
    return cfg


@functools.lru_cache(maxsize=None)
def reference_state(setting: Setting) -> Dict[str, torch.Tensor]:
    """State dict of Detectron2's FPN detector of ``setting`` built after ``torch.manual_seed(0)``."""
    torch.manual_seed(0)
    return build_model(build_cfg(setting, REFERENCE)).state_dict()


def build_benchmark_model(setting: Setting, key: str, cfg=None):
    """Build the detector ``key`` of ``setting`` (or from ``cfg``) with the reference's weights.

    Every parameter and buffer whose name and shape match Detectron2's FPN detector (built after
    ``torch.manual_seed(0)``) is copied from it; the rest keep their seed-0 initialisation. The
    shared bottom-up pathway, RPN and RoI heads (and, for ``fpn_full``, every weight) are then equal
    across models, so with random weights the data-dependent work -- which anchors and proposals
    survive NMS, how many RoIs the box head sees -- is the same and the timings compare the neck.
    Without it, ``fpn_full`` drew its lateral weights in another order than Detectron2's ``FPN``
    (same distributions, other values) and its steps did different work.

    Returns:
        ``(model, shared)``: the model in train mode and the number of state entries copied.
    """
    cfg = cfg if cfg is not None else build_cfg(setting, key)
    torch.manual_seed(0)
    model = build_model(cfg)
    ref = reference_state(setting)
    own = model.state_dict()
    shared = {k: v for k, v in ref.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(shared, strict=False)
    return model, len(shared)


def synthetic_image(setting: Setting, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(3, setting.height, setting.width, generator=g) * 255).round()


def synthetic_batch(setting: Setting, n: int) -> List[dict]:
    """``n`` training inputs in Detectron2's format: a random (3, H, W) BGR image with 5 boxes of
    side 8-50 % of the image, class 0."""
    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(1000 + i)
        h, w = setting.height, setting.width
        side = torch.rand(5, 2, generator=g) * 0.42 + 0.08
        x0 = torch.rand(5, generator=g) * (1 - side[:, 0])
        y0 = torch.rand(5, generator=g) * (1 - side[:, 1])
        boxes = torch.stack([x0 * w, y0 * h, (x0 + side[:, 0]) * w, (y0 + side[:, 1]) * h], dim=1)
        inst = Instances((h, w), gt_boxes=Boxes(boxes), gt_classes=torch.zeros(5, dtype=torch.int64))
        out.append({"image": synthetic_image(setting, 1000 + i), "height": h, "width": w, "instances": inst})
    return out


def calibrate_norms(model, inputs: List[dict]) -> None:
    """Give a randomly initialised detector finite, well-scaled activations without changing its
    compute: every batch-norm layer (Detectron2's ``FrozenBatchNorm2d``, or BN in eval mode) gets the
    mean and variance of its own input on ``inputs`` as its statistics, in execution order. Without
    this, frozen BN with identity statistics lets R-50's residual stages overflow to Inf/NaN, so the
    RPN would score nothing and training would stop at the first step.

    Raises:
        FloatingPointError: a pyramid level is still not finite afterwards (names the level).
    """
    from detectron2.layers import FrozenBatchNorm2d

    def set_stats(mod, args):
        x = args[0].detach()
        mod.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        mod.running_var.copy_(x.var(dim=(0, 2, 3)))

    norms = [m for m in model.modules() if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d))]
    hooks = [m.register_forward_pre_hook(set_stats) for m in norms]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            feats = model.backbone(model.preprocess_image(inputs).tensor)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for k, v in feats.items():
        if not torch.isfinite(v).all():
            raise FloatingPointError(f"feature {k} is not finite after calibrating {len(norms)} norm layers")


class _Fixed(nn.Module):
    """Stands in for the bottom-up pathway: returns precomputed C2..C5, so only the neck runs."""

    def __init__(self, feats, shapes):
        super().__init__()
        self.feats, self.shapes = feats, shapes

    def forward(self, x):
        return self.feats

    def output_shape(self):
        return self.shapes


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """This machine's fp32 matmul throughput in GFLOP/s (multiply-add = 1 flop, as fvcore), the best
    of ``repeats`` ``torch.mm`` calls of n x n matrices after one warm-up call."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return n ** 3 / best / 1e9


def measure_inference(setting: Setting, keys: Sequence[str], repeats: int, warmup: int) -> Dict[str, dict]:
    """Parameters, FLOPs and latency (neck and end to end) of each model, interleaved round-robin."""
    image = synthetic_image(setting)
    inputs = [{"image": image, "height": setting.height, "width": setting.width}]
    models, rows, necks = {}, {}, {}
    for key in keys:
        model = build_benchmark_model(setting, key)[0].eval()
        calibrate_norms(model, inputs)
        models[key] = model
        backbone = model.backbone
        row = dict(setting=setting.key, model=key, params_M=count_params_m(model))
        with torch.no_grad():
            row["GFLOPs"] = count_gflops(model, inputs)
        bottom_up = getattr(backbone, "bottom_up", None)
        if bottom_up is not None:
            row["neck_params_M"] = count_params_m(backbone, skip_prefix="bottom_up.")
            x = model.preprocess_image(inputs).tensor
            with torch.no_grad():  # not inference_mode: fvcore's tracer reuses these maps
                feats = bottom_up(x)
            # the neck alone: the same backbone module with its bottom-up swapped for the fixed maps
            backbone.bottom_up = _Fixed(feats, bottom_up.output_shape())
            with torch.no_grad():
                row["neck_GFLOPs"] = count_gflops(backbone, (x,))
            necks[key] = (backbone, x)
            row["_restore"] = bottom_up
        rows[key] = row
    with torch.inference_mode():
        neck_times = time_round_robin({k: functools.partial(b, x) for k, (b, x) in necks.items()}, warmup, repeats)
        for key, row in rows.items():  # back to the real bottom-up for end-to-end timing
            if "_restore" in row:
                models[key].backbone.bottom_up = row.pop("_restore")
        e2e_times = time_round_robin({k: functools.partial(m, inputs) for k, m in models.items()}, warmup, repeats)
    for key, row in rows.items():
        if key in neck_times:
            row["neck_latency_ms"] = 1e3 * statistics.median(neck_times[key])
        row["latency_s"] = statistics.median(e2e_times[key])
        row["latency_spread_s"] = max(e2e_times[key]) - min(e2e_times[key])
        row["achieved_GFLOP_per_s"] = row["GFLOPs"] / row["latency_s"]
    return rows


def _rss_high_water_mib() -> float:
    """This process's peak resident set size (MiB), ``VmHWM`` of ``/proc/self/status``: unlike
    ``getrusage``'s ``ru_maxrss`` it starts afresh at ``exec``, so it does not inherit the parent
    benchmark's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status (the training benchmark needs Linux)")


class TrainingStep:
    """One SGD step of detector ``key`` as Detectron2's ``SimpleTrainer`` takes it, on a fixed
    synthetic batch of ``batch`` images (default: the setting's, else ``SOLVER.IMS_PER_BATCH``).

    The model starts from :func:`build_benchmark_model`'s weights and the optimizer is Detectron2's
    SGD (momentum, weight decay) with ``SOLVER.BASE_LR`` = 0: each step computes everything a
    training step does (forward, backward, the optimizer's update), but the weights keep their
    values, so every step does the same data-dependent work and a random-weight R-50 cannot drift
    towards divergence (measured: with the config's learning rate, losses are Inf/NaN after 5 steps
    at 800 px and the RoI head's sampled proposals change from step to step).
    Call it inside a Detectron2 ``EventStorage`` (the heads log into it); it returns the total loss.
    """

    def __init__(self, setting: Setting, key: str, batch: Optional[int] = None):
        from detectron2.solver import build_optimizer

        cfg = build_cfg(setting, key)
        cfg.defrost()
        cfg.SOLVER.BASE_LR = 0.0
        self.model = build_benchmark_model(setting, key, cfg)[0].train()
        reference_state.cache_clear()  # free the reference's copy before any peak-RSS measurement
        self.batch = batch or setting.train_batch or cfg.SOLVER.IMS_PER_BATCH
        self.data = synthetic_batch(setting, self.batch)
        calibrate_norms(self.model, self.data)
        self.optimizer = build_optimizer(cfg, self.model)

    def __call__(self) -> torch.Tensor:
        loss = sum(self.model(self.data).values())
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss


def train_worker(setting: Setting, key: str, iters: int, warmup: int, batch: Optional[int]) -> dict:
    """Run in a fresh process: ``warmup + iters`` :class:`TrainingStep` calls; returns the median
    step time (s), images / s and the process's peak RSS (MiB)."""
    from detectron2.utils.events import EventStorage

    step = TrainingStep(setting, key, batch)
    rss_built = _rss_high_water_mib()
    times = []
    with EventStorage(0) as storage:
        for i in range(warmup + iters):
            t = time.perf_counter()
            step()
            if i >= warmup:
                times.append(time.perf_counter() - t)
            storage.step()
    median = statistics.median(times)
    return dict(train_batch=step.batch, train_step_s=median, train_images_per_s=step.batch / median,
                train_peak_rss_MiB=_rss_high_water_mib(), built_rss_MiB=rss_built)


def training_step_ops(setting: Setting, key: str, batch: Optional[int] = None):
    """The operators one :class:`TrainingStep` of ``key`` executes, with their input shapes.

    Runs one step to warm up, then profiles one more (``torch.profiler``, CPU, ``record_shapes``)
    with the sampling RNG seeded alike for every model. Two models whose counters are equal perform
    the same computation -- the same ATen operators and autograd backward nodes on the same shapes,
    forward, backward and optimizer step -- and differ at most in the order they run them: a cost
    parity that the machine's timing noise (a few % per run) cannot show.

    Returns:
        ``(counter, loss)``: ``collections.Counter`` of ``(operator name, str(input shapes))`` and
        the step's total loss.
    """
    import collections

    from detectron2.utils.events import EventStorage
    from torch.profiler import ProfilerActivity, profile

    step = TrainingStep(setting, key, batch)
    with EventStorage(0):
        torch.manual_seed(1)  # the RPN / RoI samplers draw the same anchors and proposals
        step()
        torch.manual_seed(1)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            loss = step()
    ops = collections.Counter(
        (e.name, str(e.input_shapes)) for e in prof.events() if e.name.startswith("aten::") or "Backward" in e.name
    )
    return ops, float(loss.detach())


def measure_training(setting: Setting, keys: Sequence[str], iters: int, warmup: int,
                     batch: Optional[int], rounds: int = 1) -> Dict[str, dict]:
    """:func:`train_worker` of each model in its own process (so peak RSS is the model's own),
    ``rounds`` times round-robin over the models; the step time is the median over rounds, the
    peak RSS the largest."""
    per_round = [_train_round(setting, keys, iters, warmup, batch) for _ in range(rounds)]
    out = {}
    for key in keys:
        got = [r[key] for r in per_round if "train_step_s" in r[key]]
        if not got:
            out[key] = per_round[-1][key]
            continue
        step = statistics.median(g["train_step_s"] for g in got)
        out[key] = dict(got[0], train_step_s=step, train_images_per_s=got[0]["train_batch"] / step,
                        train_peak_rss_MiB=max(g["train_peak_rss_MiB"] for g in got), train_rounds=len(got))
    return out


def _train_round(setting: Setting, keys: Sequence[str], iters: int, warmup: int, batch: Optional[int]) -> Dict[str, dict]:
    out = {}
    for key in keys:
        cmd = [sys.executable, os.path.abspath(__file__), "--train-worker", setting.key, key,
               "--train-iters", str(iters), "--train-warmup", str(warmup)]
        if batch:
            cmd += ["--train-batch", str(batch)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:  # recorded, not fatal: the other models' numbers are kept
            err = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            out[key] = {"train_error": err[-1] if err else f"exit code {proc.returncode}"}
            print(f"  training benchmark of {key!r} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        out[key] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  trained {key}: {out[key]['train_step_s']:.2f} s/step", file=sys.stderr)
    return out


RATIOS = (("params_M", "params"), ("GFLOPs", "GFLOPs"), ("neck_GFLOPs", "neck_GFLOPs"),
          ("neck_latency_ms", "neck_latency"), ("latency_s", "latency"), ("train_images_per_s", "throughput"),
          ("train_peak_rss_MiB", "peak_rss"))


def add_ratios(rows: List[dict], peak: float) -> None:
    """``<name>_vs_D2`` = row value / Detectron2 FPN's value in the same setting, for each of RATIOS;
    ``peak_fraction`` = achieved GFLOP/s / matmul peak."""
    ref = {r["setting"]: r for r in rows if r["model"] == REFERENCE}
    for r in rows:
        base = ref.get(r["setting"])
        for field, name in RATIOS:
            if base is not None and r.get(field) is not None and base.get(field):
                r[f"{name}_vs_D2"] = r[field] / base[field]
        if r.get("achieved_GFLOP_per_s") is not None:
            r["peak_fraction"] = r["achieved_GFLOP_per_s"] / peak


def _f(v, fmt):
    return "—" if v is None else format(v, fmt)


def markdown(rows: List[dict], meta: dict) -> str:
    lines = [
        "# Cost of every pyramid against Detectron2's FPN (one run)",
        "",
        f"Command: `{meta['command']}`; {meta['date']}, torch {meta['torch']}, {meta['threads']} threads, "
        f"{meta['cpu']}. Measured fp32 matmul peak: {meta['matmul_peak_GFLOP_per_s']:.1f} GFLOP/s "
        "(multiply-add = 1 flop, as fvcore). Randomly initialised Faster R-CNN (batch-norm statistics set from "
        "one image, so activations stay finite; the RPN then passes MODEL.RPN.POST_NMS_TOPK_TEST proposals to "
        "the RoI head, an upper bound for a trained detector), every model with Detectron2 FPN's weights "
        "wherever names and shapes match; batch 1 for inference; "
        "latency = median of the timed calls, models interleaved; training = median SGD step (learning rate 0: "
        "the full step's work, weights unchanged) on a fixed "
        "synthetic batch, each model in a fresh process (peak RSS = that process's). Ratios are to "
        "Detectron2's `build_resnet_fpn_backbone` in the same run (\"/ D2\").",
        "",
    ]
    for skey in meta["settings"]:
        s = SETTINGS[skey]
        part = [r for r in rows if r["setting"] == skey]
        if not part:
            continue
        batch = part[0].get("train_batch")
        lines += [
            f"## {s.title}", "",
            f"Training batch: {batch} images of {s.height}x{s.width}.", "",
            "| model | params (M) | neck params (M) | GFLOPs | neck GFLOPs | neck latency (ms) | latency (s) | "
            "GFLOP/s (% of peak) | train (img/s) | peak RSS (MiB) | params / D2 | GFLOPs / D2 | neck latency / D2 | "
            "latency / D2 | throughput / D2 | RSS / D2 |",
            "|---|" + "---|" * 15,
        ]
        for r in part:
            pct = f"{r['achieved_GFLOP_per_s']:.1f} ({100 * r['peak_fraction']:.0f} %)"
            lines.append(
                f"| {r['model']} | {_f(r['params_M'], '.2f')} | {_f(r.get('neck_params_M'), '.3f')} | "
                f"{_f(r['GFLOPs'], '.1f')} | {_f(r.get('neck_GFLOPs'), '.2f')} | {_f(r.get('neck_latency_ms'), '.1f')} | "
                f"{_f(r['latency_s'], '.3f')} | {pct} | {_f(r.get('train_images_per_s'), '.2f')} | "
                f"{_f(r.get('train_peak_rss_MiB'), '.0f')} | {_f(r.get('params_vs_D2'), '.3f')} | "
                f"{_f(r.get('GFLOPs_vs_D2'), '.3f')} | {_f(r.get('neck_latency_vs_D2'), '.3f')} | "
                f"{_f(r.get('latency_vs_D2'), '.3f')} | {_f(r.get('throughput_vs_D2'), '.3f')} | "
                f"{_f(r.get('peak_rss_vs_D2'), '.3f')} |")
        lines.append("")
        for r in part:
            if r.get("train_error"):
                lines += [f"Training benchmark of {r['model']} failed: `{r['train_error']}`", ""]
    return "\n".join(lines)


def write_rows_csv(path: str, rows: List[dict], first: Sequence[str] = ()) -> None:
    """Write ``rows`` as CSV (atomically): every key of any row a column, the ``first`` ones first,
    each group sorted by name."""
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k not in first, k))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def _check_positive(name, value, minimum=1):
    if value < minimum:
        raise SystemExit(f"{name} {value} is not valid: must be >= {minimum}")


def op_parity(settings: Sequence[str], keys: Sequence[str], batch: Optional[int]) -> int:
    """Print, per setting and model, how one training step's operators differ from Detectron2's FPN
    detector's (:func:`training_step_ops`); returns 1 if ``fpn_full``'s differ or its loss does."""
    status = 0
    for skey in settings:
        s = SETTINGS[skey]
        ref_ops, ref_loss = training_step_ops(s, REFERENCE, batch)
        print(f"[{skey}] {REFERENCE}: {sum(ref_ops.values())} operator calls, loss {ref_loss:.6f}")
        for key in keys:
            ops, loss = training_step_ops(s, key, batch)
            extra, missing = ops - ref_ops, ref_ops - ops
            same = not extra and not missing and loss == ref_loss
            print(f"[{skey}] {key}: {sum(ops.values())} operator calls, loss {loss:.6f}; "
                  + ("identical computation" if same else f"{sum(extra.values())} calls not in {REFERENCE}, "
                     f"{sum(missing.values())} of its calls missing"))
            if key == "fpn_full" and not same:
                status = 1
    return status


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/results")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), metavar="SETTING")
    p.add_argument("--models", nargs="+", default=list(MODELS), metavar="MODEL",
                   help=f"default: all of {', '.join(MODELS)} (Detectron2's FPN is always measured)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--train-iters", type=int, default=3)
    p.add_argument("--train-warmup", type=int, default=1)
    p.add_argument("--train-rounds", type=int, default=1, help="training measurements per model, round-robin")
    p.add_argument("--train-batch", type=int, help="images per training step (default: see the settings)")
    p.add_argument("--no-train", action="store_true", help="skip training throughput and RSS")
    p.add_argument("--op-parity", action="store_true",
                   help="instead of timing: compare the operators (with shapes) of one training step of each "
                        "model with Detectron2's FPN (training_step_ops); exit 1 if fpn_full differs")
    p.add_argument("--train-worker", nargs=2, metavar=("SETTING", "MODEL"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for s in a.settings if not a.train_worker else [a.train_worker[0]]:
        if s not in SETTINGS:
            raise SystemExit(f"unknown setting {s!r}; valid: {', '.join(SETTINGS)}")
    for m in a.models if not a.train_worker else [a.train_worker[1]]:
        if m not in MODELS:
            raise SystemExit(f"unknown model {m!r}; valid: {', '.join(repr(k) for k in MODELS)}")
    _check_positive("--repeats", a.repeats)
    _check_positive("--train-iters", a.train_iters)
    _check_positive("--warmup", a.warmup, 0)
    _check_positive("--train-warmup", a.train_warmup, 0)
    _check_positive("--train-rounds", a.train_rounds)
    if a.train_batch is not None:
        _check_positive("--train-batch", a.train_batch)
    if a.train_worker:
        skey, mkey = a.train_worker
        print(json.dumps(train_worker(SETTINGS[skey], mkey, a.train_iters, a.train_warmup, a.train_batch)))
        return 0
    keys = [REFERENCE] + [m for m in a.models if m != REFERENCE]
    if a.op_parity:
        return op_parity(a.settings, keys[1:], a.train_batch)
    peak = matmul_peak_gflops()
    rows = []
    for skey in a.settings:
        s = SETTINGS[skey]
        print(f"[benchmark] {s.title}: inference", file=sys.stderr)
        res = measure_inference(s, keys, a.repeats, a.warmup)
        if not a.no_train:
            print(f"[benchmark] {s.title}: training", file=sys.stderr)
            for key, t in measure_training(s, keys, a.train_iters, a.train_warmup, a.train_batch,
                                            a.train_rounds).items():
                res[key].update(t)
        rows += list(res.values())
    add_ratios(rows, peak)
    argv_s = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
    meta = dict(command=f".venv/bin/python benchmarks/benchmark.py {argv_s}".strip(), date=time.strftime("%Y-%m-%d"),
                torch=torch.__version__, threads=torch.get_num_threads(),
                cpu=f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
                matmul_peak_GFLOP_per_s=peak, settings=a.settings)
    os.makedirs(a.out, exist_ok=True)
    write_rows_csv(os.path.join(a.out, "benchmark.csv"), rows, first=("setting", "model"))
    write_json_atomic(os.path.join(a.out, "benchmark.json"), dict(meta=meta, rows=rows))
    md = markdown(rows, meta)
    write_text_atomic(os.path.join(a.out, "benchmark.md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
