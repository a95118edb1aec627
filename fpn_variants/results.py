"""Reading a run's own result files robustly, and writing result files atomically.

Detectron2's ``OUTPUT_DIR/metrics.json`` is JSON *lines*: one object per logged iteration
(``{"iteration": 199, "total_loss": ..., "bbox/AP": ...}``), appended to again when a run is
resumed (so an iteration may appear twice) and holding evaluation-only lines (``EvalHook`` puts the
flattened results, e.g. ``"box_proposals/AR@1000"``, at the iteration where it evaluated). A killed
run can leave a truncated last line. The rules here:

* a line that is not a JSON object with an integer ``"iteration"`` is skipped (and counted);
* within one iteration, a later line's value of a key replaces an earlier one's ("the last value
  per iteration counts");
* a run's final value of a metric is its value at the *highest* iteration that has the metric.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Dict, Iterable, Optional, Tuple

__all__ = ["read_metrics", "final_metrics", "train_seconds_per_iter", "final_train_loss", "run_summary", "last_iteration", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def read_metrics(path: str) -> Tuple[Dict[int, Dict[str, float]], int]:
    """Merge the lines of a Detectron2 ``metrics.json`` by iteration.

    Args:
        path: a ``metrics.json`` file (JSON lines).

    Returns:
        ``(by_iteration, skipped)``: ``{iteration: {key: value}}`` with later lines overriding
        earlier ones within an iteration, and the number of unreadable lines skipped.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    merged: Dict[int, Dict[str, float]] = {}
    skipped = 0
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                skipped += 1
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("iteration"), int):
                skipped += 1
                continue
            it = obj.pop("iteration")
            merged.setdefault(it, {}).update(obj)
    return merged, skipped


def final_metrics(run_dir: str, keys: Iterable[str]) -> Dict[str, float]:
    """The final value of each of ``keys`` in ``run_dir/metrics.json`` (its value at the highest
    iteration holding it); keys never logged are left out. NaN stays NaN (e.g. AP_l with no large
    objects). Returns ``{}`` if the file does not exist."""
    merged = _merged(run_dir)
    return {} if merged is None else _final_values(merged, keys)


def _final_values(merged: Dict[int, Dict[str, float]], keys: Iterable[str]) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for key in keys:
        its = [it for it, d in merged.items() if key in d]
        if its:
            v = merged[max(its)][key]
            out[key] = float("nan") if v is None else float(v)
    return out


def train_seconds_per_iter(run_dir: str) -> Optional[float]:
    """Median training time per iteration (seconds) of the run in ``run_dir``: the median of the
    ``time`` values Detectron2 logged in ``metrics.json`` (each itself a median over its last 20
    iterations), over every attempt of the run, so a resumed or re-evaluated run keeps the speed of
    its training. ``None`` without ``metrics.json`` or ``time`` values."""
    merged = _merged(run_dir)
    return None if merged is None else _seconds_per_iter(merged)


def _merged(run_dir: str) -> Optional[Dict[int, Dict[str, float]]]:
    """:func:`read_metrics` of ``run_dir/metrics.json``, or ``None`` if there is none."""
    path = os.path.join(run_dir, "metrics.json")
    return read_metrics(path)[0] if os.path.isfile(path) else None


def _seconds_per_iter(merged: Dict[int, Dict[str, float]]) -> Optional[float]:
    times = sorted(d["time"] for d in merged.values() if isinstance(d.get("time"), (int, float)))
    if not times:
        return None
    n = len(times)
    return times[n // 2] if n % 2 else (times[n // 2 - 1] + times[n // 2]) / 2


def final_train_loss(run_dir: str, fraction: float = 0.2) -> Optional[float]:
    """Mean of the ``total_loss`` values Detectron2 logged in ``run_dir/metrics.json`` (each a median
    over its last 20 iterations) at iterations in the last ``fraction`` of training, i.e. at or after
    ``(1 - fraction) * last logged training iteration``. A higher value than another row's at equal
    schedule means that design had fitted the training set less by the end (under-fitting), as opposed
    to fitting it as well and generalising worse. ``None`` without ``total_loss`` values.

    Raises:
        ValueError: ``fraction`` is not in (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    merged = _merged(run_dir)
    return None if merged is None else _train_loss(merged, fraction)


def _train_loss(merged: Dict[int, Dict[str, float]], fraction: float = 0.2) -> Optional[float]:
    losses = {it: d["total_loss"] for it, d in merged.items() if isinstance(d.get("total_loss"), (int, float))}
    if not losses:
        return None
    start = (1 - fraction) * max(losses)
    tail = [v for it, v in losses.items() if it >= start]
    return sum(tail) / len(tail)


def run_summary(run_dir: str, keys: Iterable[str]) -> dict:
    """``{"metrics": final_metrics, "s_per_it": train_seconds_per_iter, "train_loss": final_train_loss}``
    of the run in ``run_dir``, reading its ``metrics.json`` once (values as those functions return,
    ``{}`` / ``None`` without the file)."""
    merged = _merged(run_dir)
    if merged is None:
        return dict(metrics={}, s_per_it=None, train_loss=None)
    return dict(metrics=_final_values(merged, keys), s_per_it=_seconds_per_iter(merged), train_loss=_train_loss(merged))


def last_iteration(run_dir: str) -> Optional[int]:
    """The highest iteration logged in ``run_dir/metrics.json`` (``None`` if nothing yet)."""
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(path):
        return None
    try:
        merged, _ = read_metrics(path)
    except OSError:
        return None
    return max(merged) if merged else None


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` would, racing other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync and ``os.replace``,
    so that a reader (or a kill at any moment) sees the old file or the new one, never a partial one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the mode open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    """:func:`write_bytes_atomic` of ``text`` (UTF-8)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json_atomic(path: str, obj) -> None:
    """:func:`write_text_atomic` of ``obj`` as strict JSON (NaN / inf written as ``null``)."""
    write_text_atomic(path, json.dumps(_json_safe(obj), indent=1, sort_keys=False) + "\n")
