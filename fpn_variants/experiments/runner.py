"""One run of a sweep, and the proposals stage of a Fast R-CNN suite: the job functions every executor
runs (a thread of this process, submitit's local executor, or a Slurm node).

A run is an ordinary ``python -m fpn_variants.train_net --config-file ROW.config --resume`` in a
subprocess, its output appended to ``<run dir>/stdout.txt``; when it ends, its run record
(``run.json``, :class:`~fpn_variants.experiments.folder.SweepFolder`) is written atomically.
"""
from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .folder import SweepFolder, load_run_config
from .records import run_summary

__all__ = ["RunSpec", "execute_run", "execute_proposals", "proposals_done", "proposal_paths", "verify_proposals",
           "sha256_file", "failed_record"]

PROPOSAL_METRICS = ("box_proposals/AR@100", "box_proposals/AR@1000")


@dataclass(frozen=True)
class RunSpec:
    """One training run of a sweep.

    ``config_file`` + :attr:`opts` for ``fpn_variants.train_net``, where ``opts`` is ``row_opts`` (the
    suite's overrides, then the row's own: :meth:`Suite.run_opts`), then ``fold_opts`` (the data fold
    ``fold``'s datasets; none on the suite's default fold, ``fold`` ``None``), then the sweep's, then (Fast R-CNN rows) ``DATASETS.PROPOSAL_FILES_TRAIN / _TEST`` from
    ``proposal_files``, then ``OUTPUT_DIR run_dir SEED seed``. ``threads``: ``OMP_NUM_THREADS`` of the
    run (``None``: the library default); ``num_gpus``: processes of the run (``--num-gpus``).
    """

    suite: str
    row: str
    seed: int
    run_dir: str
    config_file: str
    row_opts: Tuple[str, ...]
    sweep_opts: Tuple[str, ...]
    metric_keys: Tuple[str, ...]
    num_gpus: int = 1
    threads: Optional[int] = None
    keep_checkpoints: bool = False
    proposal_files: Optional[Tuple[Tuple[str, ...], Tuple[str, ...]]] = None  # (train files, test files)
    fold: Optional[int] = None
    fold_opts: Tuple[str, ...] = ()

    @property
    def config_opts(self) -> Tuple[str, ...]:
        """The overrides that define the run's model and data: row, fold, sweep (no output, seed, proposals)."""
        return (*self.row_opts, *self.fold_opts, *self.sweep_opts)

    @property
    def opts(self) -> Tuple[str, ...]:
        proposals = ()
        if self.proposal_files is not None:
            train, test = self.proposal_files
            proposals = ("DATASETS.PROPOSAL_FILES_TRAIN", repr(train), "DATASETS.PROPOSAL_FILES_TEST", repr(test))
        return (*self.config_opts, *proposals, "OUTPUT_DIR", self.run_dir, "SEED", str(self.seed))

    @property
    def command(self) -> List[str]:
        gpus = ["--num-gpus", str(self.num_gpus)] if self.num_gpus != 1 else []
        return [sys.executable, "-m", "fpn_variants.train_net", "--config-file", self.config_file, "--resume",
                *gpus, *self.opts]

    def with_proposals(self, files: Dict[str, str]) -> "RunSpec":
        """This run reading the dumped proposals ``files`` (``{dataset: path}``) for its training and
        test datasets.

        Raises:
            ValueError: one of the run's datasets has no dumped proposals (a Fast R-CNN row must train
                and test on the proposals RPN's datasets).
        """
        from dataclasses import replace

        cfg = load_run_config(self.config_file, self.config_opts)
        missing = [d for d in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST) if d not in files]
        if missing:
            raise ValueError(f"{self.config_file}: datasets {missing} have no dumped proposals (have {sorted(files)}); "
                             "a Fast R-CNN row must train and test on the proposals RPN's datasets")
        return replace(self, proposal_files=(tuple(files[d] for d in cfg.DATASETS.TRAIN),
                                             tuple(files[d] for d in cfg.DATASETS.TEST)))


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


def _run_logged(cmd: List[str], run_dir: str, env: Optional[dict] = None) -> Tuple[Optional[int], List[str]]:
    """Run ``cmd`` with its output appended to ``run_dir/stdout.txt`` (after a ``### <time> <command>``
    line); the child dies with this process on Linux. Returns ``(exit code or None if it could not
    start, the last 40 lines of the log)``."""
    log_path = os.path.join(run_dir, "stdout.txt")
    try:
        with open(log_path, "a") as log:
            log.write(f"\n### {time.strftime('%Y-%m-%dT%H:%M:%S')} {shlex.join(cmd)}\n")
            log.flush()
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None).returncode
    except OSError as e:
        return None, [f"{type(e).__name__}: {e}"]
    with open(log_path, errors="replace") as f:
        return rc, f.readlines()[-40:]


def _record_head(spec: RunSpec) -> dict:
    fold = {} if spec.fold is None else {"fold": spec.fold}
    return dict(suite=spec.suite, row=spec.row, seed=spec.seed, **fold, command=shlex.join(spec.command))


def _failure(rc: Optional[int], tail: List[str], why: Optional[str] = None) -> dict:
    return dict(status="failed", returncode=rc, error=why or _error_line(tail), log_tail="".join(tail[-25:]))


def execute_run(spec: RunSpec) -> dict:
    """Run ``spec`` to completion in a subprocess and write its run record ``run_dir/run.json``.

    Never raises for a failed training: the record says ``"status": "failed"`` with the exit code,
    the error line and the log tail.

    Returns:
        the record written: ``suite, row, seed, command, host, started, seconds (wall time of this
        attempt), metrics ({metrics.json key: final value}), s_per_it (training seconds per
        iteration), train_loss (final training loss), status ("done" | "failed"), error, log_tail``.
    """
    os.makedirs(spec.run_dir, exist_ok=True)
    env = dict(os.environ)
    if spec.threads:
        env["OMP_NUM_THREADS"] = str(spec.threads)
    record = dict(_record_head(spec), host=os.uname().nodename, started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    t0 = time.time()
    rc, tail = _run_logged(spec.command, spec.run_dir, env)
    record["seconds"] = round(time.time() - t0, 1)
    record.update(run_summary(spec.run_dir, spec.metric_keys))
    missing = [k for k in spec.metric_keys if k not in record["metrics"]]
    if rc == 0 and not missing:
        record.update(status="done", error=None, log_tail=None)
    else:
        record.update(_failure(rc, tail, None if rc != 0 else f"training finished but metrics.json has no {missing}"))
    if record["status"] == "done" and not spec.keep_checkpoints:
        for name in os.listdir(spec.run_dir):  # intermediate checkpoints; model_final.pth stays
            if name.startswith("model_") and name.endswith(".pth") and name != "model_final.pth":
                os.unlink(os.path.join(spec.run_dir, name))
    SweepFolder.write_record(spec.run_dir, record)
    return record


def failed_record(spec: RunSpec, exc: BaseException) -> dict:
    """Write and return the record of a run whose job died outside the training (scheduler, pickling,
    a failed proposals stage)."""
    record = dict(_record_head(spec), status="failed", error=f"{type(exc).__name__}: {exc}",
                  **run_summary(spec.run_dir, spec.metric_keys))
    os.makedirs(spec.run_dir, exist_ok=True)
    SweepFolder.write_record(spec.run_dir, record)
    return record


def proposal_paths(record: dict, run_dir: str) -> Dict[str, str]:
    """``{dataset: path}`` of the proposal files a proposals stage's ``record`` names, in its ``run_dir``.

    A record names each file by its name in the stage's folder (records written before stop 30 named
    absolute paths: their base name is taken), so a result folder that was published and copied elsewhere
    (``cp -r docs/results/<suite> output/sweeps/``) still finds its files."""
    return {d: os.path.join(run_dir, os.path.basename(p)) for d, p in (record.get("proposal_files") or {}).items()}


def sha256_file(path: str) -> str:
    """The SHA-256 hex digest of the file at ``path``."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def proposals_done(record: Optional[dict], run_dir: str) -> bool:
    """The proposals stage in ``run_dir`` is done: its RPN trained and every dumped proposal file its
    ``record`` names exists there (:func:`proposal_paths`)."""
    if not (record and record.get("status") == "done" and record.get("proposal_files")):
        return False
    return all(os.path.isfile(p) for p in proposal_paths(record, run_dir).values())


def verify_proposals(record: dict, run_dir: str) -> Dict[str, str]:
    """The proposal files of a done proposals stage, checked against the SHA-256 digests its record pins
    (the files every Fast R-CNN row of the folder read); a record without digests gets them now.

    Returns:
        ``{dataset: path}`` (:func:`proposal_paths`).

    Raises:
        ValueError: a file differs from the one the record pinned (e.g. the RPN was retrained elsewhere:
            its rows would read other proposals than the runs already done); names the file and both digests.
    """
    paths = proposal_paths(record, run_dir)
    digests = {d: sha256_file(p) for d, p in paths.items()}
    pinned = record.get("proposal_sha256")
    if pinned is None:
        SweepFolder.write_record(run_dir, {**record, "proposal_sha256": digests})
        return paths
    for d, p in paths.items():
        if pinned.get(d) != digests[d]:
            raise ValueError(f"{p}: sha256 {digests[d]} differs from the {pinned.get(d)} its stage's run.json pinned: "
                             "the Fast R-CNN runs of this folder read other proposals. Restore the file (e.g. from "
                             "the published docs/results/<suite>/proposals*/), or sweep into a new folder")
    return paths


def execute_proposals(spec: RunSpec) -> dict:
    """Job function of a Fast R-CNN suite's first stage: train the proposals RPN (:func:`execute_run`,
    skipped if already done), then dump its proposals on ``DATASETS.TRAIN + DATASETS.TEST`` with
    ``python -m fpn_variants.proposals`` into ``run_dir``. The record gains ``proposal_files``
    (``{dataset: file name in run_dir}``, :func:`proposal_paths`), ``proposal_sha256`` (their digests,
    :func:`verify_proposals`) and ``dump_command``; a failure of either step gives ``status "failed"``. An RPN
    done whose checkpoint and files are both gone (a published folder keeps no checkpoints) is not retrained:
    the returned record is failed, naming them, and ``run.json`` is left as it was."""
    from ..proposals import proposal_file

    rec = SweepFolder.read_record(spec.run_dir)
    if not rec or rec.get("status") != "done":
        rec = execute_run(spec)
        if rec["status"] != "done":
            return rec
    cfg = load_run_config(spec.config_file, spec.opts)
    files = {d: proposal_file(spec.run_dir, d) for d in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST)}
    weights = os.path.join(spec.run_dir, "model_final.pth")
    if not os.path.isfile(weights):
        # not written: run.json stays "done" with its pinned digests, so a retry fails the same way
        return {**rec, "status": "failed", "error": (
            f"dumping proposals failed: {weights} is gone (the RPN is done, but a published folder keeps no "
            f"checkpoints) and so are the proposal files {sorted(files.values())}: restore those files (the "
            "published docs/results/<suite>/proposals*/ holds them) or sweep into a new folder")}
    cmd = [sys.executable, "-m", "fpn_variants.proposals", "--config-file", spec.config_file, "--output-dir",
           spec.run_dir, *spec.opts, "MODEL.WEIGHTS", weights]
    rc, tail = _run_logged(cmd, spec.run_dir)
    if rc != 0 or not all(os.path.isfile(p) for p in files.values()):
        rec.update(_failure(rc, tail))
        rec["error"] = "dumping proposals failed: " + rec["error"]
    else:
        rec.update(proposal_files={d: os.path.basename(p) for d, p in files.items()},
                   proposal_sha256={d: sha256_file(p) for d, p in files.items()}, dump_command=shlex.join(cmd))
    SweepFolder.write_record(spec.run_dir, rec)
    return rec
