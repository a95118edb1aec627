"""The one owner of a sweep folder's layout: the sweep writes through it, the report reads through it.

Layout of ``SweepFolder(path)``::

    sweep.json                 the manifest: suite, seeds (per row and fold), overrides, the commands that ran
    .sweep.lock                held by the one sweep writing into the folder
    <row key>/seed<k>/         one run: Detectron2's own files (config.yaml, log.txt, metrics.json,
                               model_final.pth), stdout.txt and run.json, the run record
    <row key>/fold<j>/seed<k>/ one run on the data's fold j (a suite's folds other than its default one)
    proposals/                 a Fast R-CNN suite's proposals RPN and its dumped proposals
    proposals_fold<j>/         the same for fold j
    costs.json                 each row's parameters, GFLOPs and latency (cached by config content)
    discussion.md              a person's reading of the results, carried into report.md
    results.csv, results.json, report.md, <suite>.png    the report

The **run record** (``run.json``) is the one source of a run's final metrics and speed: the sweep
writes it when the run ends (status, command, seconds, final metrics, training seconds per iteration,
final training loss, error); the report reads nothing else of a run. A committed result folder
(``docs/results/<suite>/``) keeps the report but not the run folders: there the records of
``results.json`` stand in for the missing ``run.json`` files, so its report regenerates from it.
"""
from __future__ import annotations

import fcntl
import functools
import json
import os
from typing import Dict, List, Optional, Sequence

from ..fileio import write_json_atomic
from .records import run_summary
from .suites import SUITES, Suite, config_root

__all__ = ["SweepFolder", "resolve_config", "load_run_config"]


def resolve_config(path: str) -> str:
    """The absolute path of a suite's config file (relative ones are under :func:`config_root`).

    Raises:
        FileNotFoundError: the file does not exist (the path looked at is named).
    """
    full = path if os.path.isabs(path) else os.path.join(config_root(), path)
    if not os.path.isfile(full):
        raise FileNotFoundError(f"config {path!r} of the suite not found (looked at {full}; configs are "
                                "relative to $FPN_VARIANTS_CONFIGS or the repository's configs/)")
    return full


@functools.lru_cache(maxsize=256)
def _load_run_config(config_file: str, opts: tuple, mtime: float):
    from ..config import load_config

    cfg = load_config(config_file, list(opts))
    cfg.freeze()
    return cfg


def load_run_config(config_file: str, opts: Sequence[str]):
    """The frozen Detectron2 config of a run (``config_file`` + ``opts``), parsed once per file
    content and overrides (a Fast R-CNN row's datasets, its iterations and its costs read the same one).

    Raises:
        the errors of :func:`fpn_variants.config.load_config` (unknown key, invalid value).
    """
    return _load_run_config(config_file, tuple(opts), os.path.getmtime(config_file))


class SweepFolder:
    """A sweep folder (see the module docstring for its layout).

    Args:
        path: the folder (made absolute; it need not exist yet).
    """

    MANIFEST = "sweep.json"
    RUN_FILE = "run.json"
    COSTS = "costs.json"
    DISCUSSION = "discussion.md"

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def __repr__(self) -> str:
        return f"SweepFolder({self.path!r})"

    # -- paths -------------------------------------------------------------------------------------
    def file(self, name: str) -> str:
        """``path/name``."""
        return os.path.join(self.path, name)

    def run_dir(self, row: str, seed: int, fold: Optional[int] = None) -> str:
        """The folder of one run: ``path/<row>/seed<seed>``, or ``path/<row>/fold<fold>/seed<seed>`` on a
        fold other than the suite's default one (``fold`` ``None``)."""
        if fold is None:
            return os.path.join(self.path, row, f"seed{seed}")
        return os.path.join(self.path, row, f"fold{fold}", f"seed{seed}")

    @property
    def proposals_dir(self) -> str:
        """The folder of a Fast R-CNN suite's proposals RPN: ``path/proposals``."""
        return self.fold_proposals_dir(None)

    def fold_proposals_dir(self, fold: Optional[int]) -> str:
        """The proposals RPN of ``fold``: ``path/proposals`` (default fold) or ``path/proposals_fold<fold>``."""
        return os.path.join(self.path, "proposals" if fold is None else f"proposals_fold{fold}")

    def report_paths(self, suite: Suite) -> Dict[str, str]:
        """``{"results.csv", "results.json", "report.md", "png"}`` -> paths of the report's files."""
        paths = {n: self.file(n) for n in ("results.csv", "results.json", "report.md")}
        paths["png"] = self.file(f"{suite.name}.png")
        return paths

    # -- the run record ----------------------------------------------------------------------------
    @classmethod
    def read_record(cls, run_dir: str) -> Optional[dict]:
        """The run record ``run_dir/run.json``, or ``None`` if it has none (never started or
        interrupted before its end)."""
        try:
            with open(os.path.join(run_dir, cls.RUN_FILE)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    @classmethod
    def write_record(cls, run_dir: str, record: dict) -> None:
        """Write the run record ``run_dir/run.json`` atomically."""
        write_json_atomic(os.path.join(run_dir, cls.RUN_FILE), record)

    # -- the manifest ------------------------------------------------------------------------------
    def exists(self) -> bool:
        return os.path.isfile(self.file(self.MANIFEST))

    def manifest(self) -> dict:
        """``sweep.json`` as written by :meth:`update_manifest`.

        Raises:
            FileNotFoundError: the folder has no ``sweep.json``.
        """
        if not self.exists():
            raise FileNotFoundError(f"{self.path} is not a sweep folder: it has no {self.MANIFEST} "
                                    "(run fpn_variants.sweep first)")
        with open(self.file(self.MANIFEST)) as f:
            return json.load(f)

    def suite(self, manifest: Optional[dict] = None) -> Suite:
        """The suite the folder's runs were made with. A manifest written before suites carried their
        ``citation`` / ``dataset`` takes them from the registered suite of the same name."""
        d = dict((manifest or self.manifest())["suite"])
        known = SUITES.get(d["name"])
        if known is not None:
            for k in ("citation", "dataset"):
                d.setdefault(k, getattr(known, k))
        return Suite.from_dict(d)

    def update_manifest(self, suite: Suite, opts: Sequence[str], seeds: Sequence[int], command: Optional[str],
                        rows: Optional[set] = None, folds: Sequence[Optional[int]] = (None,)) -> List[int]:
        """Write ``sweep.json`` for a call running ``seeds`` of ``rows`` (``None``: every row) on ``folds``
        (``None``: the suite's default fold) with the overrides ``opts``; returns every seed of the folder.

        ``row_seeds`` in the manifest: the seeds asked for each row over every call on the default fold,
        so that the report expects seed 2 only of the rows that were given 3 seeds; ``fold_seeds``: the
        same per other fold (``{"<fold>": {row: seeds}}``, absent while no call asked for one).

        Raises:
            ValueError: the folder holds a sweep of another suite or other overrides, or a row whose
                config or overrides changed since its runs (results of different settings must not be
                averaged together). Rows added to the suite since are fine.
        """
        old = self.manifest() if self.exists() else None
        if old:
            if old["suite"]["name"] != suite.name or list(old["opts"]) != list(opts):
                raise ValueError(
                    f"{self.path} holds a sweep of suite {old['suite']['name']!r} with overrides {old['opts']}; this "
                    f"call asks for {suite.name!r} with {list(opts)}. Use another --output (results of different "
                    "settings must not be averaged together)."
                )
            old_suite_opts = list(old["suite"].get("opts", []))
            before = {r["key"]: (r["config"], old_suite_opts + list(r["opts"])) for r in old["suite"]["rows"]}
            for row in suite.rows:
                if row.key in before and before[row.key] != (row.config, list(suite.run_opts(row))):
                    raise ValueError(
                        f"row {row.key!r} of {self.path} was run as {before[row.key][0]} {before[row.key][1]}; the "
                        f"suite now defines it as {row.config} {list(suite.run_opts(row))}. Use another --output "
                        "(results of different settings must not be averaged together)."
                    )
        all_seeds = sorted(set(seeds) | set(old["seeds"] if old else ()))
        row_seeds = dict(old.get("row_seeds") or self._seeds_with_a_folder(old)) if old else {}
        fold_seeds = {f: dict(v) for f, v in (old.get("fold_seeds") or {}).items()} if old else {}
        for fold in folds:
            per_row = row_seeds if fold is None else fold_seeds.setdefault(str(fold), {})
            for row in suite.rows:
                asked = set(seeds) if rows is None or row.key in rows else set()
                per_row[row.key] = sorted(set(per_row.get(row.key, ())) | asked)
        for per_row in fold_seeds.values():  # rows added to the suite since
            for row in suite.rows:
                per_row.setdefault(row.key, [])
        for row in suite.rows:
            row_seeds.setdefault(row.key, [])
        commands = list(old.get("commands", [])) if old else []
        if command and command not in commands:
            commands.append(command)
        manifest = dict(suite=suite.to_dict(), seeds=all_seeds, opts=list(opts), commands=commands, row_seeds=row_seeds)
        if fold_seeds:
            manifest["fold_seeds"] = {f: fold_seeds[f] for f in sorted(fold_seeds, key=int)}
        write_json_atomic(self.file(self.MANIFEST), manifest)
        return all_seeds

    def _seeds_with_a_folder(self, manifest: dict) -> Dict[str, List[int]]:
        """Seeds per row of a manifest written before ``row_seeds`` existed: those with a run folder."""
        return {r["key"]: [k for k in manifest["seeds"] if os.path.isdir(self.run_dir(r["key"], k))]
                for r in manifest["suite"]["rows"]}

    # -- what the report reads ---------------------------------------------------------------------
    def runs(self, suite: Suite, manifest: dict) -> List[dict]:
        """Every run the manifest asks for, in suite row order, then the default fold's seeds, then those
        of each other fold: ``{row, seed, fold (only on a fold other than the default one), status
        ("done" | "failed" | "not finished"), seconds, s_per_it, train_loss, error, metrics: {metric
        name: value}}``, from its run record. Where the run folder is absent (a committed result folder),
        the run as ``results.json`` last recorded it; a record written before records stored the speed
        and loss gets them from the run's ``metrics.json``."""
        committed = self._committed_runs()
        out = []
        for row in suite.rows:
            planned = [(None, seed) for seed in manifest.get("row_seeds", {}).get(row.key, manifest["seeds"])]
            planned += [(int(fold), seed) for fold, per_row in (manifest.get("fold_seeds") or {}).items()
                        for seed in per_row.get(row.key, ())]
            for fold, seed in planned:
                run_dir = self.run_dir(row.key, seed, fold)
                if not os.path.isdir(run_dir) and (row.key, fold, seed) in committed:
                    out.append(committed[(row.key, fold, seed)])
                    continue
                rec = self.read_record(run_dir) or {}
                if "s_per_it" not in rec or "train_loss" not in rec:  # no record yet, or an older one
                    rec = {**rec, **run_summary(run_dir, [m.key for m in suite.metrics])}
                vals = rec.get("metrics") or {}
                out.append(dict(
                    row=row.key, seed=seed, **({} if fold is None else {"fold": fold}),
                    status=rec.get("status", "not finished"), seconds=rec.get("seconds"),
                    s_per_it=rec["s_per_it"], train_loss=rec["train_loss"], error=rec.get("error"),
                    metrics={m.name: vals[m.key] for m in suite.metrics if m.key in vals},
                ))
        return out

    def _committed_runs(self) -> Dict[tuple, dict]:
        """The runs of ``results.json``, keyed by (row, fold (``None``: the default one), seed). A metric stored as ``null`` was NaN (strict
        JSON has none; e.g. AP_l without large objects): a metric never logged is absent instead."""
        try:
            with open(self.file("results.json")) as f:
                runs = json.load(f).get("runs", [])
        except (OSError, ValueError):
            return {}
        nan = float("nan")
        return {(r["row"], r.get("fold"), r["seed"]): {**r, "metrics": {k: nan if v is None else v for k, v in r["metrics"].items()}}
                for r in runs}

    def status(self, row: str, seed: int, fold: Optional[int] = None) -> str:
        """A run's status as a sweep into this folder would find it: its record's (``done`` /
        ``failed``), else, where the run folder is absent, what ``results.json`` records (the runs
        :meth:`adopt_committed_runs` adopts), else ``todo``. Writes nothing."""
        run_dir = self.run_dir(row, seed, fold)
        rec = self.read_record(run_dir)
        if rec is None and not os.path.isdir(run_dir):
            rec = self._committed_runs().get((row, fold, seed))
        return (rec or {}).get("status", "todo")

    def adopt_committed_runs(self, suite: Suite) -> List[str]:
        """Write a run record (``run.json``) for every run that ``results.json`` records as ended but
        whose run folder is absent — a committed result folder made before :meth:`publish` copied the
        records — from what ``results.json`` holds (metrics under their Detectron2 keys again, the
        record marked ``"adopted": "results.json"``). A sweep resuming into the folder then skips those
        runs, as it skips published ones, instead of running them again, and every later report reads
        them like any other run. Unfinished runs are left to the sweep. Returns the run folders written.
        """
        keys = {m.name: m.key for m in suite.metrics}
        written = []
        for (row, fold, seed), r in self._committed_runs().items():
            run_dir = self.run_dir(row, seed, fold)
            if r.get("status") not in ("done", "failed") or os.path.isdir(run_dir):
                continue
            metrics = {keys[n]: v for n, v in r["metrics"].items() if n in keys}
            os.makedirs(run_dir)
            self.write_record(run_dir, dict(
                suite=suite.name, row=row, seed=seed, **({} if fold is None else {"fold": fold}), command=None,
                seconds=r.get("seconds"), metrics=metrics, s_per_it=r.get("s_per_it"),
                train_loss=r.get("train_loss"), status=r["status"], error=r.get("error"), adopted="results.json"))
            written.append(run_dir)
        return written

    def discussion(self) -> str:
        """The folder's ``discussion.md`` ("" without one)."""
        try:
            with open(self.file(self.DISCUSSION)) as f:
                return f.read()
        except OSError:
            return ""

    # -- committing results ------------------------------------------------------------------------
    RECORD_FILES = ("run.json", "metrics.json", "config.yaml")

    def publish(self, dest: str) -> List[str]:
        """Copy what a committed result folder keeps into ``dest`` (made if missing; files overwritten
        atomically, so publishing again after more runs finished updates it): the manifest, costs and
        discussion, and of every run that ended (its run record says ``done`` or ``failed``) its record,
        ``metrics.json``, ``config.yaml`` and ``inference/**/*.json`` (the evaluator's detections), the
        proposals RPNs' records included, with the proposal files they dumped (``proposals_<dataset>.pkl``, a
        few MB: the data every Fast R-CNN row of the folder read, pinned by SHA-256 in the stage's record);
        never checkpoints or logs. A sweep given ``--output dest`` (or a copy of ``dest``, on any machine)
        later resumes from these records without re-running the published runs, its rows reading the same
        proposals.
        ``discussion.md`` is a person's text, often edited in ``dest`` (the committed folder) after the sweep
        folder was copied from it: it is copied only where ``dest`` has none, or the same text, or an older
        file (modification time) than this folder's; otherwise ``dest``'s is kept, so that resuming from a
        copy and publishing again never puts an older discussion over a newer one.
        Returns the paths written, relative to ``dest``.

        Raises:
            FileNotFoundError: this folder has no ``sweep.json``.
        """
        from ..fileio import write_bytes_atomic

        self.manifest()  # raises for a folder that is not a sweep
        wanted = [n for n in (self.MANIFEST, self.COSTS) if os.path.isfile(self.file(n))]
        if os.path.isfile(self.file(self.DISCUSSION)) and not self._newer_discussion_in(dest):
            wanted.append(self.DISCUSSION)
        for root, dirs, files in os.walk(self.path):
            dirs.sort()
            rec = self.read_record(root) if self.RUN_FILE in files else None
            if not rec or rec.get("status") not in ("done", "failed"):
                continue
            rel = os.path.relpath(root, self.path)
            wanted += [os.path.join(rel, n) for n in self.RECORD_FILES if n in files]
            dumped = sorted(os.path.basename(p) for p in (rec.get("proposal_files") or {}).values())
            wanted += [os.path.join(rel, n) for n in dumped if n in files]  # base names: runner.proposal_paths
            for sub, _, names in os.walk(os.path.join(root, "inference")):
                wanted += [os.path.relpath(os.path.join(sub, n), self.path) for n in sorted(names) if n.endswith(".json")]
        for rel in wanted:
            with open(self.file(rel), "rb") as f:
                data = f.read()
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            write_bytes_atomic(os.path.join(dest, rel), data)
        return wanted

    def _newer_discussion_in(self, dest: str) -> bool:
        """Whether ``dest`` holds a discussion.md that differs from this folder's and is not older."""
        theirs = os.path.join(dest, self.DISCUSSION)
        if not os.path.isfile(theirs):
            return False
        with open(theirs, "rb") as f, open(self.file(self.DISCUSSION), "rb") as g:
            if f.read() == g.read():
                return False
        return os.path.getmtime(theirs) >= os.path.getmtime(self.file(self.DISCUSSION))

    # -- the writers' lock -------------------------------------------------------------------------
    def lock(self) -> "_Lock":
        """A context manager holding the folder for one sweep.

        Raises:
            RuntimeError: on entering, when another sweep holds the folder.
        """
        os.makedirs(self.path, exist_ok=True)
        return _Lock(self.file(".sweep.lock"))


class _Lock:
    def __init__(self, path: str):
        self._path = path
        self._f = None

    def __enter__(self):
        self._f = open(self._path, "w")
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._f.close()
            raise RuntimeError(f"another sweep is running in {os.path.dirname(self._path)} (lock {self._path})") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._f, fcntl.LOCK_UN)
        self._f.close()
