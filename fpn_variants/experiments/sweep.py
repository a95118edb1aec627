"""Ablation sweeps: every row of a suite x every seed as an ordinary ``train_net`` run, then a report.

Usage (also the ``fpn-variants-sweep`` command)::

    python -m fpn_variants.sweep table1-neon --seeds 3                    # this machine, one run at a time
    python -m fpn_variants.sweep table1-neon --seeds 3 --jobs 2           # two runs at once, 1 thread each
    python -m fpn_variants.sweep table3 --executor slurm --partition gpu --gpus-per-run 8 --timeout-min 1440
    python -m fpn_variants.sweep my_suite.json --output out/mine SOLVER.MAX_ITER 1000   # own suite, overrides
    python -m fpn_variants.sweep table1-neon --seeds 1 --folds 0 1 2 --rows c_fpn d_bottom_up   # other data folds
    python -m fpn_variants.sweep table1-neon --seeds 3 --time-limit-min 150   # a session of 3 h: no run cut off

Layout: a :class:`~fpn_variants.experiments.folder.SweepFolder` (``OUTPUT/sweep.json``, one folder
per run ``OUTPUT/<row key>/seed<k>/`` or, on another data fold, ``OUTPUT/<row key>/fold<j>/seed<k>/``
with its run record ``run.json``), which the report
(:mod:`fpn_variants.experiments.report`) then reads; one run is
:func:`fpn_variants.experiments.runner.execute_run`.

Behaviour:

* every run is ``python -m fpn_variants.train_net --config-file ROW.config --resume OUTPUT_DIR
  <run dir> SEED <k> [SUITE.opts] [ROW.opts] [your KEY VALUE overrides]``: ``--resume`` continues an
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
import json
import os
import shlex
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Sequence

from .folder import SweepFolder, load_run_config, resolve_config
from .records import last_iteration
from .runner import (PROPOSAL_METRICS, RunSpec, execute_proposals, execute_run, failed_record, proposals_done,
                     verify_proposals)
from .suites import Suite, get_suite

__all__ = ["EXECUTORS", "plan_runs", "proposals_spec", "run_sweep", "load_suite", "cli"]

EXECUTORS = ("local", "submitit-local", "slurm")


def plan_runs(suite: Suite, seeds: Sequence[int], output: str, opts: Sequence[str] = (),
              threads: Optional[int] = None, num_gpus: int = 1, keep_checkpoints: bool = False,
              folds: Optional[Sequence[int]] = None) -> List[RunSpec]:
    """One :class:`~fpn_variants.experiments.runner.RunSpec` per (fold, seed, row): every row of seed 0
    first, then seed 1, ... (a partial sweep already holds one seed of every row), fold by fold.

    ``folds``: the data folds to run (``None``: the suite's configs as they are, i.e. its default
    fold, whose runs are the same whether asked for by number or not).

    Raises:
        FileNotFoundError: a row's config file does not exist.
        ValueError: ``opts`` is not a list of KEY VALUE pairs; a fold the suite does not have.
    """
    if len(opts) % 2:
        raise ValueError(f"overrides must be KEY VALUE pairs; got an odd number: {list(opts)}")
    folder = SweepFolder(output)
    keys = tuple(m.key for m in suite.metrics)
    cfgs = {row.key: resolve_config(row.config) for row in suite.rows}
    return [RunSpec(suite.name, row.key, int(seed), folder.run_dir(row.key, seed, fold), cfgs[row.key],
                    suite.run_opts(row), tuple(opts), keys, num_gpus, threads, keep_checkpoints, fold=fold,
                    fold_opts=suite.fold_overrides(fold))
            for fold in _run_folds(suite, folds) for seed in seeds for row in suite.rows]


def _run_folds(suite: Suite, folds: Optional[Sequence[int]]) -> List[Optional[int]]:
    """The folds as runs store them (the default one as ``None``), each once, in the order given."""
    out = []
    for f in ([None] if folds is None else folds):
        f = suite.run_fold(f)
        if f not in out:
            out.append(f)
    return out


def proposals_spec(suite: Suite, output: str, opts: Sequence[str] = (), threads: Optional[int] = None,
                   num_gpus: int = 1, keep_checkpoints: bool = False, fold: Optional[int] = None) -> RunSpec:
    """The run of a Fast R-CNN suite's proposals RPN on ``fold`` (``suite.proposals`` with the suite's,
    the fold's and the sweep's overrides, seed 0) in ``OUTPUT/proposals`` (default fold) or
    ``OUTPUT/proposals_fold<j>``: every row of that fold reads its proposals.

    Raises:
        ValueError: the suite has no proposals stage, or no such fold. FileNotFoundError: its config
            does not exist.
    """
    if not suite.proposals:
        raise ValueError(f"suite {suite.name!r} has no proposals stage (only a Fast R-CNN suite has one)")
    fold = suite.run_fold(fold)
    return RunSpec(suite.name, "proposals", 0, SweepFolder(output).fold_proposals_dir(fold),
                   resolve_config(suite.proposals), suite.opts, tuple(opts), PROPOSAL_METRICS, num_gpus, threads,
                   keep_checkpoints, fold=fold, fold_opts=suite.fold_overrides(fold))


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


def run_sweep(suite, seeds: int | Sequence[int] = 3, executor: str = "local", output: Optional[str] = None,
              opts: Sequence[str] = (), jobs: int = 1, threads: Optional[int] = None, num_gpus: int = 1,
              slurm: Optional[dict] = None, report: bool = True, keep_checkpoints: bool = False,
              poll_s: float = 5.0, command: Optional[str] = None, rows: Optional[Sequence[str]] = None,
              folds: Optional[Sequence[int]] = None, time_limit_min: Optional[float] = None) -> List[Optional[dict]]:
    """Run (or resume) every row x seed of ``suite`` and write the report.

    Args:
        suite: a :class:`Suite`, a suite name (:data:`fpn_variants.experiments.suites.SUITES`) or a suite JSON path.
        seeds: a count ``n`` (seeds ``0..n-1``) or the seeds themselves (Detectron2 ``SEED``).
        executor: one of :data:`EXECUTORS`.
        output: sweep folder (default ``output/sweeps/<suite name>``).
        opts: ``KEY VALUE`` config overrides applied to every run (after the row's own).
        jobs: runs at once for ``local`` / ``submitit-local`` (each with ``cpu_count // jobs``
            threads unless ``threads`` is given); ``slurm`` submits all and lets the scheduler queue.
        num_gpus: processes per run (``--num-gpus``; GPUs per run on slurm).
        slurm: ``partition``, ``timeout_min``, ``cpus_per_run``, ``mem_gb`` for submitit.
        report: write the report (:func:`fpn_variants.experiments.report.write_report`) at the end.
        command: the command line to record in ``sweep.json`` (the CLI passes its own).
        rows: run only these row keys (e.g. more seeds for the rows whose difference is within the
            seed spread); ``None``: every row. The folder's manifest still holds the whole suite, and
            the report every run in the folder.
        folds: run these data folds of the suite (e.g. ``[0, 1, 2, 3]``; the runs of its default fold
            are those made without ``folds``); ``None``: the configs' own data. A Fast R-CNN suite
            trains one proposals RPN per fold.
        time_limit_min: start no run that would end later than this many minutes (wall clock) after the
            sweep started, judged by the median ``seconds`` of the runs already done in this folder
            (with none done yet, a run starts while the limit has not passed); runs in flight finish,
            the report is written, and re-running the same command goes on. For a session or an
            allocation of fixed length, so that its end interrupts no run. ``None``: no limit.

    Returns:
        every run's record (``run.json``), in plan order; ``None`` for a run the time limit left
        unstarted.

    Raises:
        KeyError: unknown suite name or a row key the suite does not have (its keys listed).
        ValueError: unknown executor, bad seeds / jobs / overrides / folds, or an output folder holding a
        sweep with other overrides, a time limit <= 0. RuntimeError: another sweep holds the folder.
    """
    started = time.time()
    if isinstance(suite, str):
        suite = load_suite(suite)
    selected = _select_rows(suite, rows)
    run_folds = _run_folds(suite, folds)
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r} is not valid; valid: {', '.join(EXECUTORS)}")
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seeds or min(seeds) < 0:
        raise ValueError(f"seeds must be a count >= 1 or non-negative seeds; got {seeds}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1; got {jobs}")
    if time_limit_min is not None and not time_limit_min > 0:
        raise ValueError(f"the time limit must be > 0 minutes; got {time_limit_min}")
    deadline = None if time_limit_min is None else started + 60 * time_limit_min
    if len(opts) % 2:
        raise ValueError(f"overrides must be KEY VALUE pairs; got an odd number: {list(opts)}")
    output = os.path.abspath(output or os.path.join("output", "sweeps", suite.name))
    os.makedirs(output, exist_ok=True)
    if threads is None and jobs > 1 and executor != "slurm":
        threads = max(1, (os.cpu_count() or 1) // jobs)
    slurm = dict(slurm or {})
    if executor == "slurm":
        slurm.setdefault("gpus_per_run", num_gpus if num_gpus > 1 else None)

    folder = SweepFolder(output)
    with folder.lock():
        folder.update_manifest(suite, opts, seeds, command, selected, run_folds)
        folder.adopt_committed_runs(suite)  # a committed folder's runs are not run again
        specs = [sp for sp in plan_runs(suite, seeds, output, opts, threads, num_gpus, keep_checkpoints, folds)
                 if sp.row in selected]
        ex = _make_executor(executor, output, jobs, slurm)
        try:
            not_run = []
            at_once = None if executor == "slurm" else jobs  # slurm: submit all, the scheduler queues
            if suite.proposals:
                specs, not_run = _proposals_stages(ex, folder, suite, specs, run_folds, opts, threads, num_gpus,
                                                   keep_checkpoints, poll_s, deadline, at_once)
            out = not_run + _drive(ex, specs, execute_run, _run_done, at_once or len(specs), suite.name, poll_s, deadline)
        finally:
            if isinstance(ex, ThreadPoolExecutor):
                ex.shutdown(wait=True)
    if report:
        from .report import write_report

        paths = write_report(output)
        print(f"[sweep] report: {paths['report.md']}")
    return out


def _run_done(spec: RunSpec, record: Optional[dict]) -> bool:
    return bool(record and record.get("status") == "done")


def _proposals_done(spec: RunSpec, record: Optional[dict]) -> bool:
    return proposals_done(record, spec.run_dir)


def _proposals_stages(ex, folder: SweepFolder, suite: Suite, specs: List[RunSpec], run_folds, opts, threads,
                      num_gpus, keep_checkpoints, poll_s, deadline, at_once: Optional[int]):
    """Train the proposals RPN of every fold in ``run_folds`` and dump its proposals (once per folder and
    fold), up to ``at_once`` stages at once (``--jobs`` locally, so that with several folds no lane idles
    while one fold's RPN trains; ``None``: all), before any row runs; returns ``(specs ready to run, records of specs
    that will not run)``. A fold whose stage fails: its runs not yet done are recorded as failed, naming
    why (the sweep goes on with the other folds and writes its report). A fold whose stage the time limit
    left unstarted: its runs are ``None``.

    Raises:
        ValueError: a done stage's files are not the ones its record pinned (:func:`verify_proposals`).
    """
    props = [proposals_spec(suite, folder.path, opts, threads, num_gpus, keep_checkpoints, f) for f in run_folds]
    recs = _drive(ex, props, execute_proposals, _proposals_done, at_once or len(props), f"{suite.name} proposals",
                  poll_s, deadline)
    ready, not_run = [], []
    for f, prop, rec in zip(run_folds, props, recs):
        fold_specs = [sp for sp in specs if sp.fold == f]
        if rec is None:
            not_run += [None] * len(fold_specs)
        elif proposals_done(rec, prop.run_dir):
            files = verify_proposals(rec, prop.run_dir)
            ready += [sp.with_proposals(files) for sp in fold_specs]
        else:
            why = RuntimeError(f"not run: the proposals stage ({prop.run_dir}) failed: {rec.get('error')}")
            records = [SweepFolder.read_record(sp.run_dir) for sp in fold_specs]
            not_run += [r if _run_done(sp, r) else failed_record(sp, why) for sp, r in zip(fold_specs, records)]
    return ready, not_run


def _expected_seconds(durations: List[float]) -> float:
    """The median of ``durations`` (seconds of the runs done), 0 with none."""
    return statistics.median(durations) if durations else 0.0


def _drive(ex, specs: List[RunSpec], fn: Callable[[RunSpec], dict], done: Callable[[RunSpec, Optional[dict]], bool],
           limit: int, desc: str, poll_s: float, deadline: Optional[float] = None) -> List[Optional[dict]]:
    """Run ``fn(spec)`` for every spec whose record is not ``done`` yet, at most ``limit`` at once, with
    a progress bar of runs done / total and each running run's iteration; returns the records in
    ``specs`` order. With a ``deadline`` (``time.time()`` seconds), a run starts only if it is expected
    (:func:`_expected_seconds` of the runs done) to end by then; the others are left unstarted and
    their entry is ``None``."""
    from tqdm import tqdm

    records: Dict[str, dict] = {}
    pending = []
    durations: List[float] = []
    for s in specs:
        st = SweepFolder.read_record(s.run_dir)
        if done(s, st):
            records[s.run_dir] = st
            if st.get("seconds"):
                durations.append(float(st["seconds"]))
        else:
            pending.append(s)
    max_iter = _max_iter(specs[0]) if specs else None
    tty = sys.stderr.isatty()
    bar = tqdm(total=len(specs), initial=len(specs) - len(pending), unit="run", desc=desc, dynamic_ncols=True,
               mininterval=1 if tty else 60)
    running = {}
    unstarted = set()
    try:
        while pending or running:
            if pending and deadline is not None and time.time() + _expected_seconds(durations) > deadline:
                tqdm.write(f"[sweep] time limit: {len(pending)} run(s) of {desc} not started (each takes about "
                           f"{_expected_seconds(durations) / 60:.0f} min); the same command goes on from here")
                unstarted.update(s.run_dir for s in pending)
                pending = []
                continue
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
                    rec = failed_record(spec, e)
                records[key] = rec
                if rec.get("status") == "done" and rec.get("seconds"):
                    durations.append(float(rec["seconds"]))
                bar.update(1)
                name = f"{spec.row}" + ("" if spec.fold is None else f" fold {spec.fold}") + f" seed {spec.seed}"
                if rec["status"] != "done":
                    tqdm.write(f"[sweep] {name} failed: {rec.get('error')}")
                else:
                    vals = ", ".join(f"{k.split('/')[-1]} {v:.1f}" for k, v in rec["metrics"].items())
                    tqdm.write(f"[sweep] {name} done in {rec.get('seconds', 0):.0f} s: {vals}")
            bar.set_postfix({f"{s.row}/{'' if s.fold is None else f'f{s.fold}'}s{s.seed}": f"{last_iteration(s.run_dir) or 0}/{max_iter}"
                             for s, _ in running.values()}, refresh=tty)
            if running:
                time.sleep(poll_s)
    finally:
        bar.close()
    return [None if s.run_dir in unstarted else records.get(s.run_dir) or SweepFolder.read_record(s.run_dir)
            for s in specs]


def _max_iter(spec: RunSpec) -> Optional[int]:
    try:
        return load_run_config(spec.config_file, spec.opts).SOLVER.MAX_ITER
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
    any failed (the report still lists them), 3 if none failed but ``--time-limit-min`` left runs
    unstarted."""
    p = argparse.ArgumentParser(prog="python -m fpn_variants.sweep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite", nargs="?", help="suite name (table1, table1-neon, table2, ..., see --list) or a suite .json file")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per row (default 3)")
    p.add_argument("--rows", nargs="+", metavar="KEY", help="run only these rows (e.g. more seeds where rows differ "
                   "by less than their seed spread); the report still shows every run in the folder")
    p.add_argument("--folds", type=int, nargs="+", metavar="J", help="run these data folds of the suite (NEON: 0..3, "
                   "fold 3 = the default split; every tile is in val once over the four): a stronger lever than "
                   "seeds on a small validation set")
    p.add_argument("--executor", default="local", choices=EXECUTORS)
    p.add_argument("--output", help="sweep folder (default output/sweeps/SUITE)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once for local executors (default 1)")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS per run (default: cpu_count // jobs when jobs > 1)")
    p.add_argument("--num-gpus", type=int, default=1, help="processes (GPUs) per run, passed to train_net")
    p.add_argument("--partition", help="slurm partition")
    p.add_argument("--timeout-min", type=int, help="per-run time limit for submitit (minutes)")
    p.add_argument("--cpus-per-run", type=int, help="slurm cpus per task")
    p.add_argument("--mem-gb", type=int, help="slurm memory per run (GB)")
    p.add_argument("--time-limit-min", type=float, metavar="MIN", help="start no run that would end later than MIN "
                   "minutes after the sweep started (judged by the runs done so far); runs in flight finish, the "
                   "report is written, exit status 3; the same command goes on later")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep intermediate model_*.pth of finished runs")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--list", action="store_true", help="list the suites and exit")
    p.add_argument("--dry-run", action="store_true", help="print the runs (and whether each is done) and exit")
    p.add_argument("opts", nargs="*", default=[], help="KEY VALUE config overrides for every run (after the options)")
    a = p.parse_intermixed_args(argv)
    if a.list:
        from .suites import SUITES

        width = max(map(len, SUITES))
        for name, s in SUITES.items():
            print(f"{name:{width}s} {s.source}: {s.title} ({len(s.rows)} rows; {s.headline})")
        return 0
    if not a.suite:
        p.error("give a suite name or a suite .json file (--list shows the suites)")
    try:
        suite = load_suite(a.suite)
        if a.dry_run:
            output = a.output or os.path.join("output", "sweeps", suite.name)
            selected = _select_rows(suite, a.rows)
            for f in (_run_folds(suite, a.folds) if suite.proposals else ()):
                prop = proposals_spec(suite, output, a.opts, a.threads, a.num_gpus, fold=f)
                st = (SweepFolder.read_record(prop.run_dir) or {}).get("status", "todo")
                print(f"{st:7s} (proposals) {shlex.join(prop.command)}")
            for s in plan_runs(suite, range(a.seeds), output, a.opts, a.threads, a.num_gpus, folds=a.folds):
                if s.row not in selected:
                    continue
                st = SweepFolder(output).status(s.row, s.seed, s.fold)
                print(f"{st:7s} {shlex.join(s.command)}")
            return 0
        slurm = dict(partition=a.partition, timeout_min=a.timeout_min, cpus_per_run=a.cpus_per_run, mem_gb=a.mem_gb)
        records = run_sweep(suite, a.seeds, a.executor, a.output, a.opts, a.jobs, a.threads, a.num_gpus, slurm,
                            report=not a.no_report, keep_checkpoints=a.keep_checkpoints,
                            command=_reproduce_command(argv if argv is not None else sys.argv[1:]), rows=a.rows,
                            folds=a.folds, time_limit_min=a.time_limit_min)
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as e:
        p.error(str(e.args[0]) if isinstance(e, KeyError) else str(e))
    failed = [r for r in records if r and r.get("status") != "done"]
    for r in failed:
        print(f"[sweep] FAILED {r['row']} seed {r['seed']}: {r.get('error')}", file=sys.stderr)
    unstarted = sum(r is None for r in records)
    if unstarted:
        print(f"[sweep] {unstarted} run(s) not started within the time limit; run the same command again to go on",
              file=sys.stderr)
    return 1 if failed else 3 if unstarted else 0


if __name__ == "__main__":
    sys.exit(cli())
