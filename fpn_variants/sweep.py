"""Ablation sweeps: every row of a suite x every seed as an ordinary ``train_net`` run, then a report.

Usage (also the ``fpn-variants-sweep`` command)::

    python -m fpn_variants.sweep table1-neon --seeds 3                    # this machine, one run at a time
    python -m fpn_variants.sweep table1-neon --seeds 3 --jobs 2           # two runs at once, 1 thread each
    python -m fpn_variants.sweep table3 --executor slurm --partition gpu --gpus-per-run 8 --timeout-min 1440
    python -m fpn_variants.sweep my_suite.json --output out/mine SOLVER.MAX_ITER 1000   # own suite, overrides

Layout: ``OUTPUT/sweep.json`` (what was asked: suite, seeds, overrides), one folder per run
``OUTPUT/<row key>/seed<k>/`` holding Detectron2's own files (``config.yaml``, ``log.txt``,
``metrics.json``, checkpoints), ``stdout.txt`` and ``run.json`` (status, command, seconds, error,
final metrics); then ``results.csv`` / ``results.json`` / ``report.md`` / ``<suite>.png`` from
:mod:`fpn_variants.report`.

Behaviour:

* every run is ``python -m fpn_variants.train_net --config-file ROW.config --resume OUTPUT_DIR
  <run dir> SEED <k> [ROW.opts] [your KEY VALUE overrides]``: ``--resume`` continues an
  interrupted run from its ``last_checkpoint`` and is a no-op for a fresh one;
* re-running the same command skips runs whose ``run.json`` says ``done``, resumes interrupted
  ones, and retries failed ones (from their last checkpoint); a failed run is recorded (exit code,
  the error line, the log tail) and the others go on;
* ``run.json`` and every report file are written atomically; a lock file stops two sweeps from
  writing into one folder; runs of this machine die with the sweep (Linux ``PR_SET_PDEATHSIG``), so
  a killed sweep leaves no orphan training behind;
* executors: ``local`` (subprocesses of this process, ``--jobs`` at a time), ``submitit-local``
  (submitit's ``LocalExecutor``: the same job function as ``slurm``, runnable without a cluster)
  and ``slurm`` (submitit's ``SlurmExecutor``; one job per run, ``--gpus-per-run`` GPUs on one node,
  passed on as ``--num-gpus``).
"""
from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from .results import final_metrics, last_iteration, write_json_atomic
from .suites import Suite, config_root, get_suite

__all__ = ["RunSpec", "EXECUTORS", "plan_runs", "execute_run", "execute_proposals", "run_status", "run_sweep", "cli"]

EXECUTORS = ("local", "submitit-local", "slurm")
RUN_FILE = "run.json"
MANIFEST = "sweep.json"


@dataclass(frozen=True)
class RunSpec:
    """One training run of a sweep: ``config_file`` + ``opts`` (``KEY VALUE`` overrides, ending in
    ``OUTPUT_DIR run_dir SEED seed``) for ``fpn_variants.train_net``. ``threads``: ``OMP_NUM_THREADS``
    for the run (``None``: the library default); ``num_gpus``: processes of the run (``--num-gpus``)."""

    suite: str
    row: str
    seed: int
    run_dir: str
    config_file: str
    opts: tuple
    metric_keys: tuple
    num_gpus: int = 1
    threads: Optional[int] = None
    keep_checkpoints: bool = False

    @property
    def command(self) -> List[str]:
        gpus = ["--num-gpus", str(self.num_gpus)] if self.num_gpus != 1 else []
        return [sys.executable, "-m", "fpn_variants.train_net", "--config-file", self.config_file, "--resume",
                *gpus, *self.opts]


def _resolve_config(path: str) -> str:
    full = path if os.path.isabs(path) else os.path.join(config_root(), path)
    if not os.path.isfile(full):
        raise FileNotFoundError(f"config {path!r} of the suite not found (looked at {full}; configs are "
                                "relative to $FPN_VARIANTS_CONFIGS or the repository's configs/)")
    return full


def plan_runs(suite: Suite, seeds: Sequence[int], output: str, opts: Sequence[str] = (),
              threads: Optional[int] = None, num_gpus: int = 1, keep_checkpoints: bool = False) -> List[RunSpec]:
    """One :class:`RunSpec` per (seed, row): every row of seed 0 first, then seed 1, ...

    Raises:
        FileNotFoundError: a row's config file does not exist.
        ValueError: ``opts`` is not a list of KEY VALUE pairs.
    """
    if len(opts) % 2:
        raise ValueError(f"overrides must be KEY VALUE pairs; got an odd number: {list(opts)}")
    specs = []
    keys = tuple(m.key for m in suite.metrics)
    cfgs = {row.key: _resolve_config(row.config) for row in suite.rows}
    for seed in seeds:  # seed-major: a partial sweep already holds one seed of every row
        for row in suite.rows:
            cfg = cfgs[row.key]
            run_dir = os.path.abspath(os.path.join(output, row.key, f"seed{seed}"))
            run_opts = (*row.opts, *opts, "OUTPUT_DIR", run_dir, "SEED", str(seed))
            specs.append(RunSpec(suite.name, row.key, int(seed), run_dir, cfg, run_opts, keys, num_gpus, threads,
                                 keep_checkpoints))
    return specs


def run_status(run_dir: str) -> Optional[dict]:
    """The run's ``run.json`` record, or ``None`` if it has none (never started or interrupted)."""
    path = os.path.join(run_dir, RUN_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _die_with_parent():  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _error_line(tail: List[str]) -> str:
    for line in reversed(tail):
        s = line.strip()
        if s and (s.split(":")[0].endswith(("Error", "Exception")) or "Error: " in s):
            return s
    return next((s.strip() for s in reversed(tail) if s.strip()), "")


def execute_run(spec: RunSpec) -> dict:
    """Run ``spec`` to completion in a subprocess and record the outcome in ``run_dir/run.json``.

    This is the job function of every executor (on a cluster node for ``slurm``). It never raises
    for a failed training: the record says ``"status": "failed"`` with the exit code and the error.

    Returns:
        the record written: ``suite, row, seed, status ("done" | "failed"), command, seconds,
        metrics ({metrics.json key: final value}), error, log_tail``.
    """
    os.makedirs(spec.run_dir, exist_ok=True)
    env = dict(os.environ)
    if spec.threads:
        env["OMP_NUM_THREADS"] = str(spec.threads)
    record = dict(suite=spec.suite, row=spec.row, seed=spec.seed, command=shlex.join(spec.command),
                  host=os.uname().nodename, started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    t0 = time.time()
    log_path = os.path.join(spec.run_dir, "stdout.txt")
    try:
        with open(log_path, "a") as log:
            log.write(f"\n### {record['started']} {record['command']}\n")
            log.flush()
            rc = subprocess.run(spec.command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None).returncode
    except OSError as e:
        rc, tail = None, [f"{type(e).__name__}: {e}"]
    else:
        with open(log_path, errors="replace") as f:
            tail = f.readlines()[-40:]
    record["seconds"] = round(time.time() - t0, 1)
    metrics = final_metrics(spec.run_dir, spec.metric_keys)
    record["metrics"] = metrics
    missing = [k for k in spec.metric_keys if k not in metrics]
    if rc == 0 and not missing:
        record.update(status="done", error=None, log_tail=None)
    else:
        why = _error_line(tail) if rc != 0 else f"training finished but metrics.json has no {missing}"
        record.update(status="failed", returncode=rc, error=why, log_tail="".join(tail[-25:]))
    if record["status"] == "done" and not spec.keep_checkpoints:
        for name in os.listdir(spec.run_dir):  # intermediate checkpoints; model_final.pth stays
            if name.startswith("model_") and name.endswith(".pth") and name != "model_final.pth":
                os.unlink(os.path.join(spec.run_dir, name))
    write_json_atomic(os.path.join(spec.run_dir, RUN_FILE), record)
    return record


def _failed_record(spec: RunSpec, exc: BaseException) -> dict:
    record = dict(suite=spec.suite, row=spec.row, seed=spec.seed, command=shlex.join(spec.command),
                  status="failed", error=f"{type(exc).__name__}: {exc}", metrics=final_metrics(spec.run_dir, spec.metric_keys))
    write_json_atomic(os.path.join(spec.run_dir, RUN_FILE), record)
    return record


def _make_executor(kind: str, output: str, jobs: int, slurm: dict):
    if kind == "local":
        return ThreadPoolExecutor(max_workers=jobs)
    import submitit

    folder = os.path.join(output, "submitit", "%j")
    if kind == "submitit-local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=slurm.get("timeout_min") or 24 * 60)
        return ex
    ex = submitit.SlurmExecutor(folder=folder)
    params = dict(time=slurm.get("timeout_min") or 24 * 60, nodes=1, ntasks_per_node=1, job_name="fpn_variants")
    if slurm.get("partition"):
        params["partition"] = slurm["partition"]
    if slurm.get("gpus_per_run"):
        params["gpus_per_node"] = slurm["gpus_per_run"]
    if slurm.get("cpus_per_run"):
        params["cpus_per_task"] = slurm["cpus_per_run"]
    if slurm.get("mem_gb"):
        params["mem"] = f"{slurm['mem_gb']}GB"
    ex.update_parameters(**params)
    return ex


def _reproduce_command(argv: Sequence[str]) -> str:
    """The sweep's command line as the report's "Reproduce" shows it: flags that change no result
    (``--no-report``, ``--dry-run``) left out, so a re-run with them is not listed as another command."""
    return shlex.join(["python", "-m", "fpn_variants.sweep", *(a for a in argv if a not in ("--no-report", "--dry-run"))])


def _select_rows(suite: Suite, rows: Optional[Sequence[str]]) -> set:
    """The row keys to run: ``rows``, checked against the suite's keys, or all of them."""
    keys = [r.key for r in suite.rows]
    if rows is None:
        return set(keys)
    unknown = [r for r in rows if r not in keys]
    if unknown or not rows:
        raise KeyError(f"--rows {list(rows)}: suite {suite.name!r} has no row {unknown or '(none given)'}; its rows: "
                       f"{', '.join(keys)}")
    return set(rows)


def _seeds_run(output: str, manifest: dict) -> Dict[str, List[int]]:
    """Seeds per row of a manifest written before ``row_seeds`` existed: those with a run folder."""
    return {r["key"]: [k for k in manifest["seeds"] if os.path.isdir(os.path.join(output, r["key"], f"seed{k}"))]
            for r in manifest["suite"]["rows"]}


def _check_manifest(output: str, suite: Suite, opts: Sequence[str], seeds: Sequence[int],
                    command: Optional[str], rows: Optional[set] = None) -> List[int]:
    """Write ``sweep.json``; refuse to mix different overrides into one folder. Returns all seeds.

    ``row_seeds`` in the manifest: the seeds asked for each row over every call (``rows``: the rows of
    this call), so that the report expects seed 2 only of the rows that were given 3 seeds."""
    path = os.path.join(output, MANIFEST)
    old = None
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
        if old["suite"]["name"] != suite.name or list(old["opts"]) != list(opts):
            raise ValueError(
                f"{output} holds a sweep of suite {old['suite']['name']!r} with overrides {old['opts']}; this call "
                f"asks for {suite.name!r} with {list(opts)}. Use another --output (results of different settings "
                "must not be averaged together)."
            )
        # a row whose config or opts changed since its runs were made would average two settings;
        # rows added to a suite since are fine (they simply have no runs yet)
        before = {r["key"]: (r["config"], list(r["opts"])) for r in old["suite"]["rows"]}
        for row in suite.rows:
            if row.key in before and before[row.key] != (row.config, list(row.opts)):
                raise ValueError(
                    f"row {row.key!r} of {output} was run as {before[row.key][0]} {before[row.key][1]}; the suite "
                    f"now defines it as {row.config} {list(row.opts)}. Use another --output (results of different "
                    "settings must not be averaged together)."
                )
    all_seeds = sorted(set(seeds) | set(old["seeds"] if old else ()))
    row_seeds = dict(old.get("row_seeds") or _seeds_run(output, old)) if old else {}
    for row in suite.rows:
        asked = set(seeds) if rows is None or row.key in rows else set()
        row_seeds[row.key] = sorted(set(row_seeds.get(row.key, ())) | asked)
    commands = list(old.get("commands", [])) if old else []
    if command and command not in commands:
        commands.append(command)
    write_json_atomic(path, dict(suite=suite.to_dict(), seeds=all_seeds, opts=list(opts), commands=commands,
                                 row_seeds=row_seeds))
    return all_seeds


class _Lock:
    def __init__(self, output: str):
        self._f = open(os.path.join(output, ".sweep.lock"), "w")

    def __enter__(self):
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another sweep is running in {os.path.dirname(self._f.name)} (lock {self._f.name})") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._f, fcntl.LOCK_UN)
        self._f.close()


def run_sweep(suite, seeds: int | Sequence[int] = 3, executor: str = "local", output: Optional[str] = None,
              opts: Sequence[str] = (), jobs: int = 1, threads: Optional[int] = None, num_gpus: int = 1,
              slurm: Optional[dict] = None, report: bool = True, keep_checkpoints: bool = False,
              poll_s: float = 5.0, command: Optional[str] = None, rows: Optional[Sequence[str]] = None) -> List[dict]:
    """Run (or resume) every row x seed of ``suite`` and write the report.

    Args:
        suite: a :class:`Suite`, a suite name (:data:`fpn_variants.suites.SUITES`) or a suite JSON path.
        seeds: a count ``n`` (seeds ``0..n-1``) or the seeds themselves (Detectron2 ``SEED``).
        executor: one of :data:`EXECUTORS`.
        output: sweep folder (default ``output/sweeps/<suite name>``).
        opts: ``KEY VALUE`` config overrides applied to every run (after the row's own).
        jobs: runs at once for ``local`` / ``submitit-local`` (each with ``cpu_count // jobs``
            threads unless ``threads`` is given); ``slurm`` submits all and lets the scheduler queue.
        num_gpus: processes per run (``--num-gpus``; GPUs per run on slurm).
        slurm: ``partition``, ``timeout_min``, ``cpus_per_run``, ``mem_gb`` for submitit.
        report: write the report (:func:`fpn_variants.report.write_report`) at the end.
        command: the command line to record in ``sweep.json`` (the CLI passes its own).
        rows: run only these row keys (e.g. more seeds for the rows whose difference is within the
            seed spread); ``None``: every row. The folder's manifest still holds the whole suite, and
            the report every run in the folder.

    Returns:
        every run's record (``run.json``), in plan order.

    Raises:
        KeyError: unknown suite name or a row key the suite does not have (its keys listed).
        ValueError: unknown executor, bad seeds / jobs / overrides, or an output folder holding a sweep
        with other overrides. RuntimeError: another sweep holds the folder.
    """
    if isinstance(suite, str):
        suite = load_suite(suite)
    selected = _select_rows(suite, rows)
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r} is not valid; valid: {', '.join(EXECUTORS)}")
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seeds or min(seeds) < 0:
        raise ValueError(f"seeds must be a count >= 1 or non-negative seeds; got {seeds}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1; got {jobs}")
    if len(opts) % 2:
        raise ValueError(f"overrides must be KEY VALUE pairs; got an odd number: {list(opts)}")
    output = os.path.abspath(output or os.path.join("output", "sweeps", suite.name))
    os.makedirs(output, exist_ok=True)
    if threads is None and jobs > 1 and executor != "slurm":
        threads = max(1, (os.cpu_count() or 1) // jobs)
    slurm = dict(slurm or {})
    if executor == "slurm":
        slurm.setdefault("gpus_per_run", num_gpus if num_gpus > 1 else None)

    with _Lock(output):
        _check_manifest(output, suite, opts, seeds, command, selected)
        specs = [sp for sp in plan_runs(suite, seeds, output, opts, threads, num_gpus, keep_checkpoints)
                 if sp.row in selected]
        ex = _make_executor(executor, output, jobs, slurm)
        try:
            if suite.proposals:
                prop = _proposal_spec(suite, output, opts, threads, num_gpus, keep_checkpoints)
                rec = run_status(prop.run_dir)
                if not _proposals_done(rec):
                    (rec,) = _drive(ex, [prop], execute_proposals, 1, f"{suite.name} proposals", poll_s)
                if not _proposals_done(rec):
                    why = f"not run: the proposals stage ({prop.run_dir}) failed: {rec.get('error')}"
                    for sp in specs:
                        if (run_status(sp.run_dir) or {}).get("status") != "done":
                            _failed_record(sp, RuntimeError(why))
                    specs_done = [run_status(sp.run_dir) for sp in specs]
                    if report:
                        from .report import write_report

                        write_report(output)
                    return specs_done
                specs = [_with_proposals(sp, rec["proposal_files"]) for sp in specs]
            out = _drive(ex, specs, execute_run, len(specs) if executor == "slurm" else jobs, suite.name, poll_s)
        finally:
            if isinstance(ex, ThreadPoolExecutor):
                ex.shutdown(wait=True)
    if report:
        from .report import write_report

        paths = write_report(output)
        print(f"[sweep] report: {paths['report.md']}")
    return out


def _drive(ex, specs: List[RunSpec], fn, limit: int, desc: str, poll_s: float) -> List[dict]:
    """Run ``fn(spec)`` for every spec not yet done, at most ``limit`` at once, with a progress bar of
    runs done / total and each running run's iteration; returns the records in ``specs`` order."""
    from tqdm import tqdm

    records: Dict[str, dict] = {}
    pending = []
    for s in specs:
        st = run_status(s.run_dir)
        if st and st.get("status") == "done" and fn is execute_run:
            records[s.run_dir] = st
        else:
            pending.append(s)
    max_iter = _max_iter(specs[0]) if specs else None
    tty = sys.stderr.isatty()
    bar = tqdm(total=len(specs), initial=len(specs) - len(pending), unit="run", desc=desc, dynamic_ncols=True,
               mininterval=1 if tty else 60)
    running = {}
    try:
        while pending or running:
            while pending and len(running) < limit:
                spec = pending.pop(0)
                running[spec.run_dir] = (spec, ex.submit(fn, spec))
            for key, (spec, fut) in list(running.items()):
                if not fut.done():
                    continue
                del running[key]
                try:
                    rec = fut.result()
                except Exception as e:  # the job itself died (scheduler, pickling, OOM kill)
                    rec = _failed_record(spec, e)
                records[key] = rec
                bar.update(1)
                if rec["status"] != "done":
                    tqdm.write(f"[sweep] {spec.row} seed {spec.seed} failed: {rec.get('error')}")
                else:
                    vals = ", ".join(f"{k.split('/')[-1]} {v:.1f}" for k, v in rec["metrics"].items())
                    tqdm.write(f"[sweep] {spec.row} seed {spec.seed} done in {rec.get('seconds', 0):.0f} s: {vals}")
            bar.set_postfix({f"{s.row}/s{s.seed}": f"{last_iteration(s.run_dir) or 0}/{max_iter}"
                             for s, _ in running.values()}, refresh=tty)
            if running:
                time.sleep(poll_s)
    finally:
        bar.close()
    return [records.get(s.run_dir) or run_status(s.run_dir) for s in specs]


def _proposal_spec(suite: Suite, output: str, opts, threads, num_gpus, keep_checkpoints) -> RunSpec:
    run_dir = os.path.abspath(os.path.join(output, "proposals"))
    keys = ("box_proposals/AR@100", "box_proposals/AR@1000")
    return RunSpec(suite.name, "proposals", 0, run_dir, _resolve_config(suite.proposals),
                   (*opts, "OUTPUT_DIR", run_dir, "SEED", "0"), keys, num_gpus, threads, keep_checkpoints)


def _proposals_done(rec: Optional[dict]) -> bool:
    return bool(rec and rec.get("status") == "done" and rec.get("proposal_files")
                and all(os.path.isfile(p) for p in rec["proposal_files"].values()))


def execute_proposals(spec: RunSpec) -> dict:
    """Job function of a Fast R-CNN suite's first stage: train the proposals RPN (:func:`execute_run`,
    skipped if already done), then dump its proposals on ``DATASETS.TRAIN + DATASETS.TEST`` with
    ``python -m fpn_variants.proposals`` into ``run_dir``. The record gains ``proposal_files``
    (``{dataset: path}``); a failure of either step gives ``status "failed"``."""
    from .config import load_config
    from .proposals import proposal_file

    rec = run_status(spec.run_dir)
    if not rec or rec.get("status") != "done":
        rec = execute_run(spec)
        if rec["status"] != "done":
            return rec
    cfg = load_config(spec.config_file, list(spec.opts))
    files = {d: proposal_file(spec.run_dir, d) for d in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST)}
    cmd = [sys.executable, "-m", "fpn_variants.proposals", "--config-file", spec.config_file, "--output-dir",
           spec.run_dir, *spec.opts, "MODEL.WEIGHTS", os.path.join(spec.run_dir, "model_final.pth")]
    with open(os.path.join(spec.run_dir, "stdout.txt"), "a") as log:
        log.write(f"\n### {shlex.join(cmd)}\n")
        log.flush()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None).returncode
    if rc != 0 or not all(os.path.isfile(p) for p in files.values()):
        with open(os.path.join(spec.run_dir, "stdout.txt"), errors="replace") as f:
            tail = f.readlines()[-40:]
        rec.update(status="failed", returncode=rc, error="dumping proposals failed: " + _error_line(tail),
                   log_tail="".join(tail[-25:]))
    else:
        rec.update(proposal_files=files, dump_command=shlex.join(cmd))
    write_json_atomic(os.path.join(spec.run_dir, RUN_FILE), rec)
    return rec


def _with_proposals(spec: RunSpec, files: Dict[str, str]) -> RunSpec:
    """``spec`` reading the dumped proposals: ``DATASETS.PROPOSAL_FILES_TRAIN / _TEST`` inserted before
    ``OUTPUT_DIR`` (the row's datasets must be the proposals RPN's)."""
    from dataclasses import replace

    from .config import load_config

    cfg = load_config(spec.config_file, list(spec.opts))
    missing = [d for d in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST) if d not in files]
    if missing:
        raise ValueError(f"{spec.config_file}: datasets {missing} have no dumped proposals (have {sorted(files)}); "
                         "a Fast R-CNN row must train and test on the proposals RPN's datasets")
    train = tuple(files[d] for d in cfg.DATASETS.TRAIN)
    test = tuple(files[d] for d in cfg.DATASETS.TEST)
    i = spec.opts.index("OUTPUT_DIR")
    opts = (*spec.opts[:i], "DATASETS.PROPOSAL_FILES_TRAIN", repr(train), "DATASETS.PROPOSAL_FILES_TEST", repr(test),
            *spec.opts[i:])
    return replace(spec, opts=opts)


def _max_iter(spec: RunSpec) -> Optional[int]:
    from .config import load_config

    try:
        return load_config(spec.config_file, list(spec.opts)).SOLVER.MAX_ITER
    except Exception:  # only for the progress display; the run itself reports a bad config
        return None


def load_suite(name_or_path: str) -> Suite:
    """A registered suite by name, or a :class:`Suite` from a ``.json`` file (see :meth:`Suite.from_dict`)."""
    if name_or_path.endswith(".json"):
        with open(name_or_path) as f:
            return Suite.from_dict(json.load(f))
    return get_suite(name_or_path)


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m fpn_variants.sweep`` / ``fpn-variants-sweep``; returns 0 if every run is done, 1 if
    any failed (the report still lists them)."""
    p = argparse.ArgumentParser(prog="python -m fpn_variants.sweep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite", nargs="?", help="suite name (table1, table1-neon, table2, ..., see --list) or a suite .json file")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per row (default 3)")
    p.add_argument("--rows", nargs="+", metavar="KEY", help="run only these rows (e.g. more seeds where rows differ "
                   "by less than their seed spread); the report still shows every run in the folder")
    p.add_argument("--executor", default="local", choices=EXECUTORS)
    p.add_argument("--output", help="sweep folder (default output/sweeps/SUITE)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once for local executors (default 1)")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS per run (default: cpu_count // jobs when jobs > 1)")
    p.add_argument("--num-gpus", type=int, default=1, help="processes (GPUs) per run, passed to train_net")
    p.add_argument("--partition", help="slurm partition")
    p.add_argument("--timeout-min", type=int, help="per-run time limit for submitit (minutes)")
    p.add_argument("--cpus-per-run", type=int, help="slurm cpus per task")
    p.add_argument("--mem-gb", type=int, help="slurm memory per run (GB)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep intermediate model_*.pth of finished runs")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--list", action="store_true", help="list the suites and exit")
    p.add_argument("--dry-run", action="store_true", help="print the runs (and whether each is done) and exit")
    p.add_argument("opts", nargs="*", default=[], help="KEY VALUE config overrides for every run (after the options)")
    a = p.parse_intermixed_args(argv)
    if a.list:
        from .suites import SUITES

        for name, s in SUITES.items():
            print(f"{name:14s} {s.source}: {s.title} ({len(s.rows)} rows; {s.headline})")
        return 0
    if not a.suite:
        p.error("give a suite name or a suite .json file (--list shows the suites)")
    try:
        suite = load_suite(a.suite)
        if a.dry_run:
            output = a.output or os.path.join("output", "sweeps", suite.name)
            selected = _select_rows(suite, a.rows)
            for s in plan_runs(suite, range(a.seeds), output, a.opts, a.threads, a.num_gpus):
                if s.row not in selected:
                    continue
                st = (run_status(s.run_dir) or {}).get("status", "todo")
                print(f"{st:7s} {shlex.join(s.command)}")
            return 0
        slurm = dict(partition=a.partition, timeout_min=a.timeout_min, cpus_per_run=a.cpus_per_run, mem_gb=a.mem_gb)
        records = run_sweep(suite, a.seeds, a.executor, a.output, a.opts, a.jobs, a.threads, a.num_gpus, slurm,
                            report=not a.no_report, keep_checkpoints=a.keep_checkpoints,
                            command=_reproduce_command(argv if argv is not None else sys.argv[1:]), rows=a.rows)
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as e:
        p.error(str(e.args[0]) if isinstance(e, KeyError) else str(e))
    failed = [r for r in records if not r or r.get("status") != "done"]
    for r in failed:
        if r:
            print(f"[sweep] FAILED {r['row']} seed {r['seed']}: {r.get('error')}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(cli())
