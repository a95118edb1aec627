#!/usr/bin/env python
"""How the cost of every pyramid grows with image size and ``d``, against Detectron2's FPN.

For every image size ``s`` (``--sizes``, square s x s images, pixels) and pyramid width ``d``
(``--ds``, ``MODEL.FPN.OUT_CHANNELS``), on the paper's R-50 Faster R-CNN (``configs/COCO/
faster_rcnn_c_fpn.yaml``, randomly initialised, weights shared with Detectron2's FPN wherever names
and shapes match, batch-norm statistics calibrated, as in ``benchmarks/benchmark.py``), it measures
for Detectron2's ``build_resnet_fpn_backbone`` and each pyramid of ``--models``:

* ``neck_ms``: the neck alone in inference (``torch.inference_mode``) on precomputed C2..C5,
  median milliseconds;
* ``neck_train_ms``: the neck's forward + backward on the same maps (loss = sum of the mean of each
  output level), median milliseconds: the neck's share of a training step;
* ``e2e_ms`` (``--parts e2e``): the whole detector's inference on one image, median milliseconds;
* ``e2e_train_ms`` (``--parts e2e``): one SGD step of the whole detector on ``--train-batch``
  synthetic images (Detectron2's optimizer with learning rate 0, as ``benchmark.TrainingStep``, so
  every step does the same work).

Every time is also given as a ratio to Detectron2's FPN at the same ``(s, d)``: a design whose ratio
rises with ``s`` or ``d`` costs more than FPN the bigger the work. Models are interleaved
round-robin within each ``(s, d)`` so drift of the machine hits all alike; on CUDA every timing
synchronises the device. ``--device cuda`` runs on a GPU (a CPU run at the larger sizes takes hours
end to end, so ``--parts neck`` is the CPU default).

    .venv/bin/python benchmarks/scaling.py [--device cpu] [--sizes 200 400 800 1333] [--ds 64 128 256]
        [--parts neck] [--models fpn_full fpn_panet ...] [--repeats 5] [--warmup 2] [--out docs/results/scaling]

Writes ``scaling.csv``, ``scaling.json``, ``scaling.md`` and ``scaling.png`` (atomically) under
``--out``. Errors: an unknown model / part / device, a non-positive size, ``d`` or count exits naming
the bad value and the valid ones.
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from typing import Dict, List, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark as bench  # noqa: E402

from fpn_variants.fileio import write_bytes_atomic, write_json_atomic, write_text_atomic  # noqa: E402

PARTS = ("neck", "e2e")
REFERENCE = bench.REFERENCE
PYRAMIDS = [k for k in bench.MODELS if not k.startswith(("C4", "C5"))]


def setting_for(size: int, d: int, device: str, train_batch: int) -> "bench.Setting":
    return bench.Setting(f"r50-{size}-d{d}", f"R-50, d={d}, {size}x{size}", "COCO", size, size, train_batch,
                         d=d, device=device)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: str) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def measure_point(size: int, d: int, keys: Sequence[str], parts: Sequence[str], device: str, repeats: int,
                  warmup: int, train_batch: int) -> List[dict]:
    """All measurements of one ``(size, d)`` for ``keys`` (module docstring); one row per model."""
    from detectron2.utils.events import EventStorage

    setting = setting_for(size, d, device, train_batch)
    image = bench.synthetic_image(setting)
    inputs = [{"image": image, "height": size, "width": size}]
    rows = {k: dict(size=size, d=d, model=k, device=device) for k in keys}
    necks, models, bottom_ups = {}, {}, {}
    for key in keys:
        model = bench.build_benchmark_model(setting, key)[0].eval()
        bench.calibrate_norms(model, inputs)
        with torch.no_grad():
            feats = model.backbone.bottom_up(model.preprocess_image(inputs).tensor)
        neck = model.backbone
        bottom_ups[key] = neck.bottom_up
        neck.bottom_up = bench._Fixed(feats, neck.bottom_up.output_shape())
        necks[key] = (neck, feats)
        if "e2e" in parts:
            models[key] = model
        rows[key]["neck_params_M"] = sum(p.numel() for n, p in neck.named_parameters()
                                         if not n.startswith("bottom_up.")) / 1e6
    times: Dict[str, Dict[str, list]] = {k: {} for k in keys}

    def run(name, fns):
        for i in range(warmup + repeats):
            for key, fn in fns.items():
                dt = _timed(fn, device)
                if i >= warmup:
                    times[key].setdefault(name, []).append(dt)

    x_dummy = torch.zeros(1, 3, size, size, device=device)
    with torch.inference_mode():
        run("neck_ms", {k: (lambda n=n: n(x_dummy)) for k, (n, _) in necks.items()})

    def neck_train(n):
        out = n(x_dummy)
        sum(v.float().mean() for v in out.values()).backward()

    for n, _ in necks.values():
        n.train()
    run("neck_train_ms", {k: (lambda n=n: neck_train(n)) for k, (n, _) in necks.items()})
    del necks
    if "e2e" in parts:
        for key, model in models.items():  # the real bottom-up back for end-to-end timing
            model.backbone.bottom_up = bottom_ups[key]
            model.eval()
        with torch.inference_mode():
            run("e2e_ms", {k: (lambda m=m: m(inputs)) for k, m in models.items()})
        from detectron2.solver import build_optimizer

        data = bench.synthetic_batch(setting, train_batch)
        steps = {}
        for key, model in models.items():  # SGD with learning rate 0, as benchmark.TrainingStep
            cfg = bench.build_cfg(setting, key)
            cfg.defrost()
            cfg.SOLVER.BASE_LR = 0.0
            steps[key] = (model.train(), build_optimizer(cfg, model))

        def sgd_step(model, opt):
            loss = sum(model(data).values())
            opt.zero_grad()
            loss.backward()
            opt.step()

        with EventStorage(0) as storage:
            def step(m, o):
                sgd_step(m, o)
                storage.step()
            run("e2e_train_ms", {k: (lambda m=m, o=o: step(m, o)) for k, (m, o) in steps.items()})
        del steps, models
    for key, row in rows.items():
        for name, vals in times[key].items():
            row[name] = 1e3 * statistics.median(vals)
    ref = rows.get(REFERENCE)
    for row in rows.values():
        for name in ("neck_ms", "neck_train_ms", "e2e_ms", "e2e_train_ms"):
            if ref and row.get(name) is not None and ref.get(name):
                row[name.replace("_ms", "_vs_D2")] = row[name] / ref[name]
    if device == "cuda":
        torch.cuda.empty_cache()
    return list(rows.values())


def markdown(rows: List[dict], meta: dict) -> str:
    L = ["# How cost grows with image size and d: every pyramid against Detectron2's FPN", "",
         f"Command: `{meta['command']}`; {meta['date']}, torch {meta['torch']}, device {meta['device_name']}, "
         f"{meta['threads']} CPU threads. R-50 Faster R-CNN (COCO config, random weights shared with Detectron2's "
         f"FPN, calibrated batch norm), square images of side `size` px, `d` = pyramid channels. Median of "
         f"{meta['repeats']} calls after {meta['warmup']} warm-up calls, models round-robin. Times in ms; "
         "`x D2` = ratio to Detectron2's FPN at the same size and d (> 1 = slower).", ""]
    cols = [c for c in ("neck_ms", "neck_train_ms", "e2e_ms", "e2e_train_ms") if any(c in r for r in rows)]
    head = "| model | size | d | " + " | ".join(f"{c} | x D2" for c in cols) + " |"
    L += [head, "|" + "---|" * (3 + 2 * len(cols))]
    for r in sorted(rows, key=lambda r: (PYRAMIDS.index(r["model"]) if r["model"] in PYRAMIDS else 99,
                                         r["d"], r["size"])):
        cells = []
        for c in cols:
            v, q = r.get(c), r.get(c.replace("_ms", "_vs_D2"))
            cells += ["—" if v is None else f"{v:.1f}", "—" if q is None else f"{q:.2f}"]
        L.append(f"| {r['model']} | {r['size']} | {r['d']} | " + " | ".join(cells) + " |")
    L += ["", "## Growth against FPN", "",
          "Ratio to Detectron2's FPN at the largest size over the ratio at the smallest, per d (> 1: the design's "
          "cost grows faster with image size than FPN's):", ""]
    sizes = sorted({r["size"] for r in rows})
    for c in cols:
        q = c.replace("_ms", "_vs_D2")
        L.append(f"- `{c}`: " + "; ".join(
            f"{m} " + ", ".join(
                f"d={d} {_growth(rows, m, d, q, sizes):.2f}" for d in sorted({r['d'] for r in rows})
                if _growth(rows, m, d, q, sizes) is not None)
            for m in PYRAMIDS if m != REFERENCE and any(r["model"] == m for r in rows)))
    L.append("")
    return "\n".join(L)


def _growth(rows, model, d, q, sizes):
    def get(s):
        return next((r.get(q) for r in rows if r["model"] == model and r["d"] == d and r["size"] == s), None)
    lo, hi = get(sizes[0]), get(sizes[-1])
    return hi / lo if lo and hi else None


def plot(rows: List[dict], path: str) -> None:
    """One panel per (time, d): ratio to Detectron2's FPN against image size, one line per pyramid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in ("neck_ms", "neck_train_ms", "e2e_ms", "e2e_train_ms") if any(c in r for r in rows)]
    ds = sorted({r["d"] for r in rows})
    fig, axes = plt.subplots(len(cols), len(ds), figsize=(4 * len(ds), 3.2 * len(cols)), squeeze=False, sharex=True)
    for i, c in enumerate(cols):
        q = c.replace("_ms", "_vs_D2")
        for j, d in enumerate(ds):
            ax = axes[i][j]
            for m in PYRAMIDS:
                pts = sorted((r["size"], r[q]) for r in rows if r["model"] == m and r["d"] == d and r.get(q))
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=m, lw=2.5 if m == REFERENCE else 1.2)
            ax.set_title(f"{c}, d={d}", fontsize=9)
            ax.set_xscale("log")
            ax.axhline(1.0, color="k", lw=0.5)
            if j == 0:
                ax.set_ylabel("time / Detectron2 FPN")
            if i == len(cols) - 1:
                ax.set_xlabel("image side (px)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--sizes", nargs="+", type=int, default=[200, 400, 800, 1333])
    p.add_argument("--ds", nargs="+", type=int, default=[64, 128, 256])
    p.add_argument("--parts", nargs="+", default=None, help=f"of {', '.join(PARTS)} (default: neck on CPU, all on CUDA)")
    p.add_argument("--models", nargs="+", default=PYRAMIDS, metavar="MODEL")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--out", default="docs/results/scaling")
    a = p.parse_args(argv)
    if a.device not in ("cpu", "cuda"):
        raise SystemExit(f"--device {a.device!r}: valid: cpu, cuda")
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    a.parts = a.parts or (["neck"] if a.device == "cpu" else list(PARTS))
    for part in a.parts:
        if part not in PARTS:
            raise SystemExit(f"unknown part {part!r}; valid: {', '.join(PARTS)}")
    for m in a.models:
        if m not in PYRAMIDS:
            raise SystemExit(f"unknown model {m!r}; valid: {', '.join(repr(k) for k in PYRAMIDS)}")
    for name, vals in (("--sizes", a.sizes), ("--ds", a.ds), ("--repeats", [a.repeats]),
                       ("--train-batch", [a.train_batch])):
        bad = [v for v in vals if v < 1]
        if bad:
            raise SystemExit(f"{name} {bad[0]} must be >= 1")
    if a.warmup < 0:
        raise SystemExit(f"--warmup {a.warmup} must be >= 0")
    keys = [REFERENCE] + [m for m in a.models if m != REFERENCE]
    rows: List[dict] = []
    for d in a.ds:
        for s in a.sizes:
            t = time.time()
            rows += measure_point(s, d, keys, a.parts, a.device, a.repeats, a.warmup, a.train_batch)
            print(f"[scaling] size {s} d {d}: {time.time() - t:.0f} s", file=sys.stderr, flush=True)
            write_results(rows, a, argv)  # after every point: a run cut short keeps what it measured
    print(markdown(rows, write_results(rows, a, argv)))
    return 0


def write_results(rows: List[dict], a, argv) -> dict:
    """Write scaling.csv / .json / .md / .png under ``a.out``; returns the metadata."""
    argv_s = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
    meta = dict(command=f"python benchmarks/scaling.py {argv_s}".strip(), date=time.strftime("%Y-%m-%d"),
                torch=torch.__version__, threads=torch.get_num_threads(), repeats=a.repeats, warmup=a.warmup,
                device_name=torch.cuda.get_device_name(0) if a.device == "cuda"
                else f"CPU ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()})")
    os.makedirs(a.out, exist_ok=True)
    bench.write_rows_csv(os.path.join(a.out, "scaling.csv"), rows, first=("model", "size", "d", "device"))
    write_json_atomic(os.path.join(a.out, "scaling.json"), dict(meta=meta, rows=rows))
    write_text_atomic(os.path.join(a.out, "scaling.md"), markdown(rows, meta))
    plot(rows, os.path.join(a.out, "scaling.png"))
    return meta


if __name__ == "__main__":
    sys.exit(main())
