#!/usr/bin/env python
"""Speed of the NEON CPU recipe under candidate speed-ups, each a real ``train_net`` run on the real data.

Every variant trains the same config (``--configs``, default the Table 3(c) and Table 1(c) NEON
recipes) for ``--iters`` iterations on ``neon_trees_train`` and then evaluates on ``neon_trees_val``;
the settings varied leave the computation unchanged (memory layout, data-loader workers), except
``bf16`` (mixed precision);
with several ``--configs`` the table also gives each config against the first one (e.g. the pretrained
recipe against the from-scratch demo), measured in the same round-robin:

* ``before``: the recipe as configured;
* ``channels_last``: ``FPN_VARIANTS.CHANNELS_LAST True`` (NHWC convolutions in oneDNN);
* ``workers0`` / ``workers2``: ``DATALOADER.NUM_WORKERS`` 0 / 2 instead of 1;
* ``jemalloc`` / ``tcmalloc``: that allocator preloaded (``LD_PRELOAD``) instead of glibc's malloc,
  jemalloc with the ``MALLOC_CONF`` of PyTorch's CPU performance-tuning guide (Debian packages
  ``libjemalloc2`` / ``libtcmalloc-minimal4``);
* ``iomp``: Intel's OpenMP runtime (PyPI ``intel-openmp``, ``libiomp5.so``) preloaded in place of
  GNU's, with ``KMP_BLOCKTIME=1``;
* ``bf16``: ``SOLVER.AMP.ENABLED True``, i.e. bf16 autocast in training and evaluation on a CPU with
  native bf16 (:mod:`fpn_variants.amp`; this one changes the arithmetic: its accuracy is measured by
  seeds, README "Mixed precision");
* ``jobs2``: two runs at once with one thread each, as ``fpn_variants.sweep --jobs 2`` runs a sweep
  (times are then machine time: per-run time / 2);
* ``channels_last+workers0`` etc.: any ``+``-joined combination.

Measured from each run's own ``log.txt`` (Detectron2's hooks): training seconds / iteration
(``IterationTimer``'s "Overall training speed", which leaves out the first iterations) and evaluation
seconds / image ("Total inference time"). Variants run ``--rounds`` times in round-robin order
(before, channels_last, ..., before, ...) so that drift of the machine hits all alike; the table
gives the median over rounds and each variant's ratio to ``before`` (< 1 = faster).

    .venv/bin/python benchmarks/bench_recipe.py [--variants before channels_last workers0]
        [--configs NEON/faster_rcnn_c_fpn.yaml] [--iters 40] [--rounds 2] [--out docs/results]

Writes ``recipe_speed.csv`` / ``recipe_speed.md`` (atomically) under ``--out``; run folders go to
``--work`` (default ``output/bench_recipe``; finished runs are reused, so a killed benchmark resumes).
Errors: an unknown variant part, a preload library that is not installed or a missing config exits
naming it and what is valid.
"""
from __future__ import annotations

import argparse
import csv
import ctypes.util as ctypes_util
import glob
import io
import os
import re
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from fpn_variants.fileio import write_text_atomic  # noqa: E402

PARTS = {  # config overrides
    "before": (),
    "channels_last": ("FPN_VARIANTS.CHANNELS_LAST", "True"),
    "workers0": ("DATALOADER.NUM_WORKERS", "0"),
    "workers2": ("DATALOADER.NUM_WORKERS", "2"),
    "jobs2": (),  # see variant_jobs
    "bf16": ("SOLVER.AMP.ENABLED", "True"),
}
# environment of the train_net process: (library to preload, other variables)
JEMALLOC_CONF = "oversize_threshold:1,background_thread:true,metadata_thp:auto,dirty_decay_ms:-1,muzzy_decay_ms:-1"
ENV_PARTS = {
    "jemalloc": ("jemalloc", {"MALLOC_CONF": JEMALLOC_CONF}),
    "tcmalloc": ("tcmalloc_minimal", {}),
    "iomp": ("iomp5", {"KMP_BLOCKTIME": "1"}),
}


def find_library(name: str) -> str:
    """Path of ``lib<name>.so*`` in the venv's ``lib`` (where pip puts ``intel-openmp``) or the
    system's library path. Raises ``FileNotFoundError`` naming the package that provides it."""
    hits = sorted(glob.glob(os.path.join(sys.prefix, "lib", f"lib{name}.so*")))
    if hits:
        return os.path.realpath(hits[0])
    found = ctypes_util.find_library(name)
    if found:
        return found
    raise FileNotFoundError(f"lib{name}.so not found; install it (jemalloc: apt-get install libjemalloc2; "
                            "tcmalloc_minimal: apt-get install libtcmalloc-minimal4; iomp5: pip install intel-openmp)")


def variant_env(variant: str) -> dict:
    """Environment variables a ``+``-joined variant adds (``LD_PRELOAD`` joined with ``:``)."""
    env, preload = {}, []
    for part in variant.split("+"):
        if part in ENV_PARTS:
            lib, extra = ENV_PARTS[part]
            preload.append(find_library(lib))
            env.update(extra)
    if preload:
        env["LD_PRELOAD"] = ":".join(preload + [p for p in [os.environ.get("LD_PRELOAD")] if p])
    return env
TRAIN_RE = re.compile(r"Overall training speed: (\d+) iterations in \S+ \(([\d.]+) s / it\)")
EVAL_RE = re.compile(r"Total inference time: \S+ \(([\d.]+) s / iter per device")


def variant_opts(variant: str) -> tuple:
    """Overrides of a ``+``-joined variant name. Raises ``ValueError`` naming an unknown part."""
    opts = ()
    for part in variant.split("+"):
        if part not in PARTS and part not in ENV_PARTS:
            raise ValueError(f"unknown variant part {part!r} in {variant!r}; valid: "
                             f"{', '.join(list(PARTS) + list(ENV_PARTS))} (joined by +)")
        opts += PARTS.get(part, ())
    return opts


def parse_log(path: str) -> dict:
    """``{"train_s_per_it", "eval_s_per_img"}`` from a run's Detectron2 ``log.txt`` (last occurrence);
    ``None`` where the line is missing."""
    text = open(path).read() if os.path.isfile(path) else ""
    train = TRAIN_RE.findall(text)
    ev = EVAL_RE.findall(text)
    return dict(train_s_per_it=float(train[-1][1]) if train else None, eval_s_per_img=float(ev[-1]) if ev else None)


def variant_jobs(variant: str) -> int:
    """Runs in flight at once: 2 for a variant with ``jobs2``, else 1."""
    return 2 if "jobs2" in variant.split("+") else 1


def run_once(config: str, variant: str, iters: int, run_dir: str) -> dict:
    """One measurement (skipped when ``run_dir`` already holds a finished one): ``train_net`` runs,
    ``variant_jobs(variant)`` of them at once with ``cpu_count / jobs`` threads each, as
    ``fpn_variants.sweep --jobs`` runs them. Times are per run divided by the runs in flight, i.e.
    machine seconds per iteration / image / run: what the throughput of a sweep sees."""
    done = os.path.join(run_dir, "done")
    jobs = variant_jobs(variant)
    dirs = [run_dir] if jobs == 1 else [os.path.join(run_dir, f"job{k}") for k in range(jobs)]
    if not os.path.isfile(done):
        env = {**os.environ, **variant_env(variant)}
        if jobs > 1:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
        procs = []
        t = time.perf_counter()
        for d in dirs:
            cmd = [sys.executable, "-m", "fpn_variants.train_net", "--config-file", os.path.join(REPO, "configs", config),
                   "OUTPUT_DIR", d, "SOLVER.MAX_ITER", str(iters), "SOLVER.CHECKPOINT_PERIOD", str(10 ** 6),
                   "TEST.EVAL_PERIOD", "0", *variant_opts(variant)]
            os.makedirs(d, exist_ok=True)
            if os.path.isfile(os.path.join(d, "log.txt")):
                os.remove(os.path.join(d, "log.txt"))  # an interrupted attempt: start over
            # stderr to a file, not a pipe: a pipe not yet read could fill and stall a concurrent run
            with open(os.path.join(d, "stderr.txt"), "w") as err:
                procs.append((cmd, d, subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, env=env)))
        for cmd, d, proc in procs:
            if proc.wait() != 0:
                with open(os.path.join(d, "stderr.txt"), errors="replace") as err:
                    tail = err.read()[-3000:]
                raise RuntimeError(f"{config} {variant} failed ({' '.join(cmd)}):\n{tail}")
        write_text_atomic(done, f"{time.perf_counter() - t:.1f}\n")
    logs = [parse_log(os.path.join(d, "log.txt")) for d in dirs]
    out = {}
    for k in ("train_s_per_it", "eval_s_per_img"):
        vals = [x[k] for x in logs if x[k] is not None]
        out[k] = statistics.mean(vals) / jobs if len(vals) == jobs else None
    out["wall_s"] = float(open(done).read()) / jobs
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=["before", "channels_last", "workers0", "workers2"])
    p.add_argument("--configs", nargs="+", default=["NEON/faster_rcnn_c_fpn.yaml", "NEON/rpn_c_fpn.yaml"])
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default="docs/results")
    p.add_argument("--work", default="output/bench_recipe")
    a = p.parse_args(argv)
    if "before" not in a.variants:
        a.variants = ["before"] + a.variants
    try:
        for v in a.variants:
            variant_opts(v)
            variant_env(v)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(str(e))
    for c in a.configs:
        if not os.path.isfile(os.path.join(REPO, "configs", c)):
            raise SystemExit(f"config {c!r} not found under configs/")
    if a.iters < 10 or a.rounds < 1:
        raise SystemExit(f"--iters {a.iters} must be >= 10 (Detectron2's timer skips the first iterations) "
                         f"and --rounds {a.rounds} >= 1")
    runs = []
    for r in range(a.rounds):
        for c in a.configs:
            for v in a.variants:
                run_dir = os.path.join(a.work, c.replace("/", "_").replace(".yaml", ""), v, f"round{r}")
                res = run_once(c, v, a.iters, run_dir)
                runs.append(dict(config=c, variant=v, round=r, **res))
                print(f"[bench_recipe] {c} {v} round {r}: {res}", file=sys.stderr)
    rows = []
    for c in a.configs:
        base = None
        for v in a.variants:
            mine = [x for x in runs if x["config"] == c and x["variant"] == v]
            row = dict(config=c, variant=v, rounds=len(mine))
            for k in ("train_s_per_it", "eval_s_per_img", "wall_s"):
                vals = [x[k] for x in mine if x[k] is not None]
                row[k] = statistics.median(vals) if vals else None
                row[k + "_all"] = " ".join(f"{x:.4f}" for x in vals)
            base = base or row
            for k in ("train_s_per_it", "eval_s_per_img", "wall_s"):
                row[k + "_ratio"] = row[k] / base[k] if row[k] and base[k] else None
            rows.append(row)
    first = rows[0]  # the first config's `before`: compares recipes (configs) with each other, round-robin too
    for row in rows:
        for k in ("train_s_per_it", "eval_s_per_img", "wall_s"):
            row[k + "_vs_first_config"] = row[k] / first[k] if row[k] and first[k] else None
    os.makedirs(a.out, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(os.path.join(a.out, "recipe_speed.csv"), buf.getvalue())
    cmd = ".venv/bin/python benchmarks/bench_recipe.py " + " ".join(sys.argv[1:] if argv is None else argv)
    L = ["# NEON CPU recipe: speed-ups (all but `bf16` leave the computation unchanged)", "",
         f"Command: `{cmd.strip()}`; {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs. Each variant: {a.iters} "
         f"training iterations of the config on neon_trees_train + evaluation on neon_trees_val, {a.rounds} "
         "round(s) in round-robin order; median over rounds (all rounds in brackets); ratio to `before` "
         "(< 1 is faster). Training s / it: Detectron2's IterationTimer (first iterations left out); eval s / img: "
         "Detectron2's inference_on_dataset; wall: the whole train_net process. A `jobs2` variant runs two "
         "train_net processes at once with one thread each (the sweep's `--jobs 2`); its times are machine time, "
         "per-run time / 2, so its ratio is the sweep's throughput gain.", ""]
    for c in a.configs:
        L += [f"## {c}", "", "| variant | train s / it | ratio | eval s / img | ratio | wall s | ratio |",
              "|---|---|---|---|---|---|---|"]
        for r in rows:
            if r["config"] == c:
                def f(k, d):
                    return "—" if r[k] is None else f"{r[k]:.{d}f}"
                L.append(f"| {r['variant']} | {f('train_s_per_it', 3)} [{r['train_s_per_it_all']}] | "
                         f"{f('train_s_per_it_ratio', 3)} | {f('eval_s_per_img', 4)} | {f('eval_s_per_img_ratio', 3)} | "
                         f"{f('wall_s', 0)} | {f('wall_s_ratio', 3)} |")
        L.append("")
    if len(a.configs) > 1:
        L += [f"## Configs against {a.configs[0]} (`before`)", "",
              "| config | variant | train s / it ratio | eval s / img ratio | wall ratio |", "|---|---|---|---|---|"]
        for r in rows:
            def g(k):
                return "—" if r[k] is None else f"{r[k]:.3f}"
            L.append(f"| {r['config']} | {r['variant']} | {g('train_s_per_it_vs_first_config')} | "
                     f"{g('eval_s_per_img_vs_first_config')} | {g('wall_s_vs_first_config')} |")
        L.append("")
    write_text_atomic(os.path.join(a.out, "recipe_speed.md"), "\n".join(L))
    print("\n".join(L))
    return 0


if __name__ == "__main__":
    sys.exit(main())
