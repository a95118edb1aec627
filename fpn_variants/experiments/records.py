"""Reading a run's own Detectron2 ``metrics.json`` robustly: what a run record (``run.json``) stores.

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
import os
from typing import Dict, Iterable, Optional, Tuple

__all__ = ["read_metrics", "run_summary", "last_iteration"]


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


def _final_values(merged: Dict[int, Dict[str, float]], keys: Iterable[str]) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for key in keys:
        its = [it for it, d in merged.items() if key in d]
        if its:
            v = merged[max(its)][key]
            out[key] = float("nan") if v is None else float(v)
    return out


def _merged(run_dir: str) -> Optional[Dict[int, Dict[str, float]]]:
    """:func:`read_metrics` of ``run_dir/metrics.json``, or ``None`` if there is none."""
    path = os.path.join(run_dir, "metrics.json")
    return read_metrics(path)[0] if os.path.isfile(path) else None


def _seconds_per_iter(merged: Dict[int, Dict[str, float]]) -> Optional[float]:
    """Median of the ``time`` values Detectron2 logged (each itself a median over its last 20
    iterations), over every attempt of the run, so a resumed or re-evaluated run keeps the speed of its
    training."""
    times = sorted(d["time"] for d in merged.values() if isinstance(d.get("time"), (int, float)))
    if not times:
        return None
    n = len(times)
    return times[n // 2] if n % 2 else (times[n // 2 - 1] + times[n // 2]) / 2


def _train_loss(merged: Dict[int, Dict[str, float]], fraction: float = 0.2) -> Optional[float]:
    """Mean of the ``total_loss`` values Detectron2 logged (each a median over its last 20 iterations)
    at iterations in the last ``fraction`` of training. A higher value than another row's at equal
    schedule means that design had fitted the training set less by the end (under-fitting), as opposed
    to fitting it as well and generalising worse."""
    losses = {it: d["total_loss"] for it, d in merged.items() if isinstance(d.get("total_loss"), (int, float))}
    if not losses:
        return None
    start = (1 - fraction) * max(losses)
    tail = [v for it, v in losses.items() if it >= start]
    return sum(tail) / len(tail)


def run_summary(run_dir: str, keys: Iterable[str]) -> dict:
    """What a run record stores of the run in ``run_dir``, from one read of its ``metrics.json``:

    * ``metrics``: the final value of each of ``keys`` (its value at the highest iteration holding it;
      keys never logged are left out; NaN stays NaN, e.g. AP_l with no large objects);
    * ``s_per_it``: training seconds per iteration (median of Detectron2's logged ``time`` values over
      every attempt of the run);
    * ``train_loss``: mean ``total_loss`` over the last 20 % of the logged training iterations.

    Without ``metrics.json``: ``{"metrics": {}, "s_per_it": None, "train_loss": None}``."""
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
