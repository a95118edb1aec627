"""The report of a sweep folder: every run's metrics in one table, in the paper's layout.

Usage (also run at the end of every sweep; the ``fpn-variants-report`` command)::

    python -m fpn_variants.report output/sweeps/table1-neon
    python -m fpn_variants.report output/sweeps/table1-neon --publish docs/results/table1-neon   # commit-ready copy

Reads the sweep folder through :class:`~fpn_variants.experiments.folder.SweepFolder`: the manifest
(suite, seeds, overrides) and each row x seed's run record (status, error, seconds, final metrics,
training speed and loss; in a committed result folder without run folders, the records that
``results.json`` holds). It measures nothing but the rows' costs, once per config
(:func:`row_costs`, cached), and renders in small functions (table, claims, ranking, failures) with
the citation and the paper's dataset taken from the suite. Writes, each atomically:

* ``results.csv`` — one line per run: row, seed, status, seconds, error, one column per metric;
* ``results.json`` — the same runs, plus per row: mean, sample standard deviation (ddof = 1) and
  count over the seeds that finished, and the paper's value;
* ``report.md`` — the paper's table with ``mean ± std`` beside the paper's number in each cell and
  each row's cost (parameters, GFLOPs: :func:`row_costs`, cached in ``costs.json``), the
  ranking of rows by the suite's headline metric against the paper's, failed runs with their error;
* ``report.md`` also carries ``discussion.md`` of the sweep folder, if there is one (a person's
  reading of the results: why the ordering does or does not match the paper's);
* ``<suite>.png`` — the headline metric per row (mean, error bar = std over seeds, x = each seed),
  with the paper's value where it has one.

Metrics are in % (Detectron2's COCO evaluator and :class:`fpn_variants.evaluation.ProposalRecallEvaluator`
both report percentages, as the paper does).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence

from ..fileio import write_bytes_atomic, write_json_atomic, write_text_atomic
from .costs import LATENCY_REPEATS, LATENCY_WARMUP, model_cost
from .folder import SweepFolder, load_run_config, resolve_config
from .suites import Suite

__all__ = ["collect", "summarize", "ranking_agreement", "versus_baseline", "row_costs", "write_report", "cli"]

AR_NOTE = (
    "Proposal AR (fpn_variants.evaluation.ProposalRecallEvaluator) is averaged over IoU 0.50:0.05:0.95 and "
    "over every ground-truth box of *all* evaluation images: an image with no proposals counts all its boxes "
    "as missed (Detectron2's COCOEvaluator proposal path skips such images). Each box is matched greedily to "
    "at most one of the top-k proposals by objectness (k = 100 or 1000); AR_s/m/l use COCO's area ranges "
    "(< 32^2, 32^2..96^2, > 96^2 px) on the ground truth."
)


def collect(sweep_dir: str) -> dict:
    """Every run of the sweep in ``sweep_dir`` as its :class:`~fpn_variants.experiments.folder.SweepFolder`
    records them: ``{"suite": Suite, "seeds", "opts", "commands", "runs": [...]}``, each run ``{row,
    seed, status ("done" | "failed" | "not finished"), seconds (wall time of the last attempt),
    s_per_it (training seconds per iteration), train_loss (final training loss), error, metrics:
    {metric name: value}}``.

    Raises:
        FileNotFoundError: ``sweep_dir`` has no ``sweep.json``.
    """
    folder = SweepFolder(sweep_dir)
    man = folder.manifest()
    suite = folder.suite(man)
    return dict(suite=suite, seeds=man["seeds"], opts=man.get("opts", []), commands=man.get("commands", []),
                runs=folder.runs(suite, man))


def row_costs(sweep_dir: str, suite: Suite, opts: List[str]) -> Dict[str, dict]:
    """:func:`~fpn_variants.experiments.costs.model_cost` of every row's model (with the sweep's
    overrides), cached in ``sweep_dir/costs.json`` by config file content + overrides, so a report is
    cheap to rewrite. A row whose model cannot be built gets ``{"error": ...}``."""
    import hashlib

    path = SweepFolder(sweep_dir).file(SweepFolder.COSTS)
    cache = {}
    if os.path.isfile(path):
        try:
            with open(path) as f:
                cache = json.load(f)
        except ValueError:
            cache = {}
    out = {}
    for row in suite.rows:
        row_opts = [*suite.run_opts(row), *opts]
        try:
            cfg_file = resolve_config(row.config)
            with open(cfg_file, "rb") as f:
                key = hashlib.sha256(f.read() + json.dumps(row_opts).encode()).hexdigest()
        except OSError as e:
            out[row.key] = {"error": str(e)}
            continue
        if cache.get(row.key, {}).get("key") == key and "latency_s" in cache[row.key]:
            out[row.key] = cache[row.key]
            continue
        try:
            out[row.key] = dict(model_cost(load_run_config(cfg_file, row_opts)), key=key)
        except Exception as e:  # reported in the table, never fatal for the report
            out[row.key] = {"error": f"{type(e).__name__}: {e}", "key": key}
    write_json_atomic(path, out)
    return out


def _mean_std(xs: List[float]):
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return None, None, 0
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return m, sd, len(xs)


def done_by_fold(collected: dict) -> Dict[str, Dict[Optional[int], List[dict]]]:
    """``{row: {fold: [its done runs]}}`` (``None``: the default fold), rows without a done run absent."""
    out: Dict[str, Dict[Optional[int], List[dict]]] = {}
    for r in collected["runs"]:
        if r["status"] == "done":
            out.setdefault(r["row"], {}).setdefault(r.get("fold"), []).append(r)
    return out


def other_folds(collected: dict) -> List[int]:
    """The data folds other than the default one that any run of the sweep is on, sorted."""
    return sorted({r["fold"] for r in collected.get("runs", ()) if r.get("fold") is not None})


def table_folds(collected: dict) -> set:
    """The data folds a suite's table averages over: those on which every row with a finished run has
    one (``None`` stands for the default fold), so that every row's mean is over the same val tiles; if
    the rows share no fold, every fold. Runs on the other folds (e.g. ``--folds`` for the rows of an
    unresolved pair only) enter the paired differences of the regimes report and the per-fold table."""
    folds = [set(by) for by in done_by_fold(collected).values()]
    if not folds:
        return set()
    return set.intersection(*folds) or set.union(*folds)


def summarize(collected: dict) -> List[dict]:
    """Per row: ``{row, label, n_done, n_failed, mean: {metric: m}, std: {metric: s}, paper: {...},
    seconds, ...}`` over the row's runs that are ``done`` on the folds of :func:`table_folds` (std is
    ``None`` for fewer than 2 runs), and ``n_other_folds``, only for a row that has them: its finished
    runs on other folds, left out of the means."""
    suite: Suite = collected["suite"]
    folds = table_folds(collected)
    out = []
    for row in suite.rows:
        runs = [r for r in collected["runs"] if r["row"] == row.key]
        done_all = [r for r in runs if r["status"] == "done"]
        done = [r for r in done_all if r.get("fold") in folds]
        mean, std = {}, {}
        for m in suite.metrics:
            mu, sd, _ = _mean_std([r["metrics"].get(m.name) for r in done])
            mean[m.name], std[m.name] = mu, sd
        secs = [r["seconds"] for r in done if r.get("seconds")]
        speeds = [r["s_per_it"] for r in done if r.get("s_per_it")]
        loss, loss_sd, _ = _mean_std([r.get("train_loss") for r in done])
        out.append(dict(
            row=row.key, label=row.label, n_done=len(done), n_failed=sum(r["status"] == "failed" for r in runs),
            **({"n_other_folds": len(done_all) - len(done)} if len(done_all) > len(done) else {}),
            mean=mean, std=std, paper=dict(row.paper), seconds=sum(secs) / len(secs) if secs else None,
            s_per_it=sum(speeds) / len(speeds) if speeds else None, train_loss=loss, train_loss_std=loss_sd,
            per_seed={_run_label(r): r["metrics"].get(suite.headline) for r in done},
        ))
    return out


def per_fold(collected: dict) -> List[dict]:
    """For each row with finished runs on more than one data fold: ``{row, label, folds: {fold: (mean, std,
    n)}}`` of the suite's headline metric, the default fold as ``suite.default_fold``; empty for a sweep
    without ``--folds`` runs."""
    suite: Suite = collected["suite"]
    runs = done_by_fold(collected)
    out = []
    for row in suite.rows:
        by = runs.get(row.key, {})
        if len(by) > 1:
            folds = {suite.default_fold if f is None else f: _mean_std([r["metrics"].get(suite.headline) for r in rs])
                     for f, rs in by.items()}
            out.append(dict(row=row.key, label=row.label, folds=dict(sorted(folds.items()))))
    return out


def _run_label(run: dict):
    """A run's key among its row's runs: its seed, or ``"f<fold>s<seed>"`` on a non-default data fold."""
    return run["seed"] if run.get("fold") is None else f"f{run['fold']}s{run['seed']}"


def ranking_agreement(rows: List[dict], metric: str) -> dict:
    """Compare the order of rows by our mean of ``metric`` with the paper's order, over rows having both.

    Returns ``{ours: [row keys, best first], paper: [...], concordant, discordant, kendall_tau,
    swapped: [(a, b, our difference, combined seed std)]}``; a swapped pair is one the paper ranks a > b
    and we rank b > a; ``within_spread`` marks swaps whose difference is below the seeds' spread
    (sqrt(std_a^2 + std_b^2)), i.e. not resolved by our runs.
    """
    both = [r for r in rows if r["mean"].get(metric) is not None and metric in r["paper"]]
    ours = [r["row"] for r in sorted(both, key=lambda r: -r["mean"][metric])]
    paper = [r["row"] for r in sorted(both, key=lambda r: -r["paper"][metric])]
    by = {r["row"]: r for r in both}
    conc = disc = 0
    swapped = []
    for i, a in enumerate(paper):
        for b in paper[i + 1:]:
            pa, pb = by[a]["paper"][metric], by[b]["paper"][metric]
            if pa == pb:
                continue
            d = by[a]["mean"][metric] - by[b]["mean"][metric]
            if d > 0:
                conc += 1
            else:
                disc += 1
                sa, sb = by[a]["std"][metric], by[b]["std"][metric]
                spread = math.sqrt((sa or 0) ** 2 + (sb or 0) ** 2) if sa is not None and sb is not None else None
                swapped.append(dict(paper_higher=a, paper_lower=b, ours_diff=d, spread=spread,
                                    within_spread=spread is not None and abs(d) <= spread))
    n = conc + disc
    return dict(ours=ours, paper=paper, concordant=conc, discordant=disc,
                kendall_tau=(conc - disc) / n if n else None, swapped=swapped)


def versus_baseline(rows: List[dict], suite: Suite) -> List[dict]:
    """For a suite with a ``baseline`` row: each other row's difference from the baseline in the
    headline metric, ``diff = mean_row - mean_base`` and ``spread = sqrt(std_row^2 + std_base^2)``
    (the seeds' spread of that difference); ``resolved`` when ``|diff| > spread`` (both rows with >= 2
    seeds), ``None`` when it cannot be said."""
    if not suite.baseline:
        return []
    h = suite.headline
    by = {r["row"]: r for r in rows}
    base = by[suite.baseline]
    claims = {r.key: r.claim for r in suite.rows}
    out = []
    for r in rows:
        if r["row"] == suite.baseline:
            continue
        mb, mr = base["mean"].get(h), r["mean"].get(h)
        diff = None if mb is None or mr is None else mr - mb
        sb, sr = base["std"].get(h), r["std"].get(h)
        spread = math.sqrt(sb ** 2 + sr ** 2) if sb is not None and sr is not None else None
        out.append(dict(row=r["row"], label=r["label"], claim=claims.get(r["row"], ""), mean=mr, std=sr, diff=diff,
                        spread=spread, resolved=None if diff is None or spread is None else abs(diff) > spread))
    return out


def _fmt(m, s, digits=1):
    if m is None:
        return "—"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if s is not None else f"{m:.{digits}f}"


def _csv(collected: dict) -> str:
    suite: Suite = collected["suite"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    names = [m.name for m in suite.metrics]
    folds = any(r.get("fold") is not None for r in collected["runs"])  # the column only where a sweep has folds
    w.writerow(["suite", "row", "label", *(["fold"] if folds else []), "seed", "status", "seconds", "train_s_per_it",
                "train_loss", *names, "error"])
    labels = {r.key: r.label for r in suite.rows}
    for r in collected["runs"]:
        vals = [("" if r["metrics"].get(n) is None else repr(r["metrics"][n])) for n in names]
        fold = [suite.default_fold if r.get("fold") is None else r["fold"]] if folds else []
        w.writerow([suite.name, r["row"], labels[r["row"]], *fold, r["seed"], r["status"], r.get("seconds") or "",
                    "" if r.get("s_per_it") is None else round(r["s_per_it"], 4),
                    "" if r.get("train_loss") is None else round(r["train_loss"], 5), *vals,
                    r.get("error") or ""])
    return buf.getvalue()


def _plot(path: str, suite: Suite, rows: List[dict], per_seed: Dict[str, Dict[int, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = suite.headline
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 5.0))
    xs = range(len(rows))
    means = [r["mean"][h] if r["mean"][h] is not None else float("nan") for r in rows]
    stds = [r["std"][h] or 0.0 for r in rows]
    ax.bar(xs, means, yerr=stds, capsize=4, color="#7aa6c2", label="ours: mean ± std over seeds")
    for i, r in enumerate(rows):
        pts = [v for v in per_seed.get(r["row"], {}).values() if v is not None]
        ax.plot([i] * len(pts), pts, "k.", ms=4, label="ours: each seed" if i == 0 else None)
        if h in r["paper"]:
            paper = f"paper ({suite.dataset})" if suite.dataset else "paper"
            ax.plot([i], [r["paper"][h]], "r_", ms=22, mew=2,
                    label=paper if paper not in [line.get_label() for line in ax.lines] else None)
        if r["n_done"] == 0:
            ax.text(i, 0, "failed" if r["n_failed"] else "not run", ha="center", va="bottom", color="crimson", fontsize=8)
    base = next((r for r in rows if r["row"] == suite.baseline and r["mean"][h] is not None), None)
    if base is not None:  # differences of a few points from the baseline are what a beyond suite is about
        m, sd = base["mean"][h], base["std"][h] or 0.0
        ax.axhline(m, color="0.3", ls="--", lw=1, label="baseline: mean ± std")
        if sd:
            ax.axhspan(m - sd, m + sd, color="0.5", alpha=0.15, lw=0)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["label"] for r in rows], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(f"{h} (%)")
    ax.set_title(f"{suite.name}: {suite.title}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def _cost_ratio(row: dict, base: dict) -> str:
    """``"1.10x, 1.25x"``: the row's GFLOPs and latency over the baseline's (``—`` where either is missing)."""
    out = []
    for k in ("gflops", "latency_s"):
        a, b = row.get(k), base.get(k)
        out.append(f"{a / b:.2f}x" if a is not None and b else "—")
    return ", ".join(out)


def _header(collected: dict) -> List[str]:
    suite: Suite = collected["suite"]
    L = [f"# {suite.name}: {suite.title}", ""]
    if suite.citation:
        src = f"Paper: {suite.citation}, {suite.source}." if suite.source else f"Paper: {suite.citation}."
    else:
        src = f"Source: {suite.source}." if suite.source else ""
    L += [f"{src} {suite.notes}".strip(), ""]
    if collected["commands"]:
        L += ["Reproduce:", "", "```"] + collected["commands"] + ["```", ""]
    if suite.opts:
        L += ["Every run of the suite (the proposals RPN's too) has the overrides "
              f"`{' '.join(suite.opts)}`, before its row's own.", ""]
    folds = other_folds(collected)
    if folds:
        used = sorted(suite.default_fold if f is None else f for f in table_folds(collected))
        L += [f"Data folds: the default fold ({suite.default_fold}) and folds {folds} (`--folds`). The table's mean ± std "
              f"of a row is over its runs on fold{'s' if len(used) > 1 else ''} {', '.join(map(str, used))}, those "
              "every row has runs on, so that every row is measured on the same val tiles; its runs on other folds "
              "('+N on other folds' in its seeds column) are in the per-fold table and, paired by (fold, seed) with "
              "another row's, in the regimes report's differences.", ""]
    paper = ", then the paper's number in parentheses" if any(row.paper for row in suite.rows) else ""
    L += [f"Seeds: {collected['seeds']}; overrides: {collected['opts'] or 'none'}. Each cell: our mean ± sample "
          f"std over the seeds that finished (in %){paper}.", ""]
    return L


def _table(suite: Suite, rows: List[dict], costs: Dict[str, dict]) -> List[str]:
    """The suite's table: mean ± std per metric (the paper's number in parentheses), costs, seeds,
    speed, final training loss; then how costs and speed were measured."""
    names = [m.name for m in suite.metrics]
    img = next((c["image"] for c in costs.values() if "image" in c), "")
    cost_head = f" params (M) | GFLOPs ({img}) | latency (s) |" if costs else ""
    L = ["| row | " + " | ".join(names) + f" |{cost_head} seeds done | train s / it | final train loss |",
         "|---|" + "---|" * (len(names) + 3 + 3 * bool(costs))]
    for r in rows:
        cells = []
        for n in names:
            c = _fmt(r["mean"][n], r["std"][n])
            if n in r["paper"]:
                c += f" ({r['paper'][n]:.1f})"
            cells.append(c)
        note = f"{r['n_done']}" + (f" ({r['n_failed']} failed)" if r["n_failed"] else "") + (
            f" (+{r['n_other_folds']} on other folds)" if r.get("n_other_folds") else "")
        mins = f"{r['s_per_it']:.2f}" if r.get("s_per_it") else "—"
        c = costs.get(r["row"], {})
        cost = " | ".join([f"{c['params_m']:.2f}" if "params_m" in c else "—",
                           f"{c['gflops']:.2f}" if c.get("gflops") is not None else "—",
                           f"{c['latency_s']:.3f}" if c.get("latency_s") is not None else "—"])
        cost = f" {cost} |" if costs else ""
        loss = "—" if r.get("train_loss") is None else _fmt(r["train_loss"], r.get("train_loss_std"), 3)
        L.append(f"| {r['label']} | " + " | ".join(cells) + f" |{cost} {note} | {mins} | {loss} |")
    L.append("")
    speed = ("train s / it: median of Detectron2's logged iteration times over the run's attempts (so a resumed "
             "run keeps its training speed), mean over seeds, on the sweep's machine with its --jobs runs side by "
             "side; wall seconds of each run's last attempt are in results.csv. final train loss: Detectron2's "
             "total_loss over the last 20 % of iterations, mean ± std over seeds (a row that trails the "
             "baseline in accuracy with a higher loss had fitted less by the end of the schedule).")
    if costs:
        threads = next((c["threads"] for c in costs.values() if "threads" in c), "?")
        L.append("Costs: parameters, inference GFLOPs (fvcore, one multiply-add = 1 flop) and CPU latency (median of "
                 f"{LATENCY_REPEATS} calls after {LATENCY_WARMUP} warm-up, batch 1, {threads} torch threads, measured "
                 f"when the costs were first computed) of the whole model on one {img} image, random init (the RoI "
                 "head runs on every proposal kept by the RPN, trained or not); "
                 "benchmarks/benchmark.py measures these against Detectron2's FPN in one run. " + speed)
    else:
        L.append(speed)
    return L + [""]


def _claims(suite: Suite, rows: List[dict], claims: List[dict], costs: Dict[str, dict]) -> List[str]:
    """Each row against the suite's baseline: the literature's claim, our difference, resolved or not."""
    if not claims:
        return []
    h = suite.headline
    base = next(r for r in rows if r["row"] == suite.baseline)
    L = [f"## Each claim against the baseline ({h})", "",
         f"Baseline: {base['label']}, {h} {_fmt(base['mean'][h], base['std'][h])}. Difference = row mean − baseline "
         "mean; spread = sqrt(std_row² + std_baseline²) over seeds; *resolved* when |difference| > spread.", "",
         f"| design | what the literature says | ours: {h} | difference | resolved by the seeds? |"
         + (" cost vs baseline (GFLOPs, latency) |" if costs else ""), "|---|---|---|---|---|" + "---|" * bool(costs)]
    for c in claims:
        diff = "—" if c["diff"] is None else f"{c['diff']:+.1f}" + (f" (spread {c['spread']:.1f})" if c["spread"] is not None else "")
        res = {True: "**yes**", False: "no (within seed spread)", None: "— (needs ≥ 2 seeds of both)"}[c["resolved"]]
        cost = f" {_cost_ratio(costs.get(c['row'], {}), costs.get(suite.baseline, {}))} |" if costs else ""
        L.append(f"| {c['label']} | {c['claim']} | {_fmt(c['mean'], c['std'])} | {diff} | {res} |{cost}")
    if costs:
        L += ["", "Cost vs baseline: the row's GFLOPs and CPU latency divided by the baseline's (table above); "
              "the latency is that of a randomly initialised model, whose RPN post-processing (NMS over its "
              "pre-NMS boxes) does more or less work depending on its weights, so models with identical "
              "convs can differ by ~20 % here; GFLOPs is the pyramid's own cost, and "
              "benchmarks/benchmark.py times the pyramids with shared weights."]
    return L + [""]


def _ranking(suite: Suite, rows: List[dict], rank: dict) -> List[str]:
    """Our order of the rows by the headline metric against the paper's, each swapped pair named."""
    h = suite.headline
    L = [f"## Ranking by {h}", ""]
    if rank["ours"]:
        lab = {r["row"]: r["label"] for r in rows}
        L.append("- ours:  " + " > ".join(lab[k] for k in rank["ours"]))
        L.append("- paper: " + " > ".join(lab[k] for k in rank["paper"]))
        tau = rank["kendall_tau"]
        L.append(f"- pairs in the paper's order: {rank['concordant']} of {rank['concordant'] + rank['discordant']}"
                 + (f" (Kendall tau {tau:+.2f})" if tau is not None else ""))
        if not rank["swapped"]:
            L.append("- **Our ordering agrees with the paper's** on every pair of rows the paper reports.")
        for s in rank["swapped"]:
            spread = "" if s["spread"] is None else (
                f"; within the seed spread ({s['spread']:.1f}), so not resolved by these runs" if s["within_spread"]
                else f"; larger than the seed spread ({s['spread']:.1f})")
            L.append(f"- **Disagrees**: the paper has {lab[s['paper_higher']]} above {lab[s['paper_lower']]}; "
                     f"we measure {s['ours_diff']:+.1f}{spread}.")
        extra = [r["label"] for r in rows if r["mean"].get(h) is not None and h not in r["paper"]]
        if extra:
            L.append(f"- Not in the paper's table (no paper number to rank against): {', '.join(extra)}.")
    elif not any(h in r["paper"] for r in rows):
        ranked = sorted((r for r in rows if r["mean"].get(h) is not None), key=lambda r: -r["mean"][h])
        if ranked:
            L.append("- ours:  " + " > ".join(f"{r['label']} ({r['mean'][h]:.1f})" for r in ranked))
        L.append(f"- No row of this suite has a paper number for {h} to rank against; the order is ours only, "
                 "and neighbours closer than their seed spread are not resolved.")
    else:
        L.append("No row has both a finished run and a paper number yet.")
    return L + [""]


def _fold_table(suite: Suite, rows: List[dict]) -> List[str]:
    """The per-fold table (:func:`per_fold`): a row's headline mean ± std (runs) on each data fold."""
    if not rows:
        return []
    folds = sorted({f for r in rows for f in r["folds"]})
    L = [f"## Per data fold ({suite.headline})", "",
         f"Each fold's val tiles are other trees (fold {suite.default_fold} is the default split): compare rows within a "
         "fold, not a fold with another.", "",
         "| row | " + " | ".join(f"fold {f}" + (" (default)" if f == suite.default_fold else "") for f in folds) + " |",
         "|---|" + "---|" * len(folds)]
    for r in rows:
        cells = []
        for f in folds:
            m, sd, n = r["folds"].get(f, (None, None, 0))
            cells.append("—" if m is None else f"{_fmt(m, sd)} ({n})")
        L.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return L + [""]


def _failures(runs: List[dict]) -> List[str]:
    """The runs not done, with their error."""
    bad = [r for r in runs if r["status"] != "done"]
    if not bad:
        return []
    L = ["## Runs not done", "", "| row | seed | status | error |", "|---|---|---|---|"]
    for r in bad:
        err = (r.get("error") or "").replace("|", "\\|")
        L.append(f"| {r['row']} | {_run_label(r)} | {r['status']} | {err} |")
    return L + [""]


def _markdown(collected: dict, rows: List[dict], rank: dict, png: str, claims: List[dict] = (),
              costs: Optional[Dict[str, dict]] = None, discussion: str = "") -> str:
    suite: Suite = collected["suite"]
    costs = costs or {}
    L = _header(collected) + _table(suite, rows, costs)
    L += [f"![{suite.headline} per row]({os.path.basename(png)})", ""]
    L += _claims(suite, rows, claims, costs)
    if discussion:
        L += ["## Discussion", "", discussion.strip(), ""]
    L += _ranking(suite, rows, rank) + _fold_table(suite, per_fold(collected)) + _failures(collected["runs"])
    if any(m.key.startswith("box_proposals/") for m in suite.metrics):
        L += ["## How AR is computed", "", AR_NOTE, ""]
    L += ["## Files", "", "results.csv (one line per run), results.json (runs and per-row summary), "
          "each run's folder `<row>/seed<k>/` (config.yaml, log.txt, metrics.json, run.json, model_final.pth).", ""]
    return "\n".join(L)


def write_report(sweep_dir: str, with_costs: bool = True) -> Dict[str, str]:
    """Write ``results.csv``, ``results.json``, ``report.md`` and ``<suite>.png`` into ``sweep_dir``
    from its run records; with ``with_costs``, the table also carries each row's parameters, GFLOPs and
    latency (:func:`row_costs`).

    Returns:
        ``{file name: path}`` of the files written.

    Raises:
        FileNotFoundError: ``sweep_dir`` has no ``sweep.json``.
    """
    folder = SweepFolder(sweep_dir)
    col = collect(sweep_dir)
    suite: Suite = col["suite"]
    rows = summarize(col)
    rank = ranking_agreement(rows, suite.headline)
    claims = versus_baseline(rows, suite)
    costs = row_costs(sweep_dir, suite, col["opts"]) if with_costs else {}
    for r in rows:
        r["cost"] = costs.get(r["row"])
    paths = folder.report_paths(suite)
    write_text_atomic(paths["results.csv"], _csv(col))
    write_json_atomic(paths["results.json"], dict(
        suite=suite.name, headline=suite.headline, seeds=col["seeds"], opts=col["opts"], runs=col["runs"],
        rows=[{k: v for k, v in r.items() if k != "per_seed"} for r in rows], ranking=rank, versus_baseline=claims,
    ))
    _plot(paths["png"], suite, rows, {r["row"]: r["per_seed"] for r in rows})
    write_text_atomic(paths["report.md"], _markdown(col, rows, rank, paths["png"], claims, costs, folder.discussion()))
    return paths


def cli(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fpn_variants.report", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", nargs="+", help="sweep folder(s) holding sweep.json")
    p.add_argument("--no-costs", action="store_true", help="leave out the params / GFLOPs columns")
    p.add_argument("--publish", metavar="DEST", help="first copy the folder's run records (no checkpoints) into DEST, "
                   "e.g. docs/results/<suite>, and write the report there (one sweep_dir only)")
    a = p.parse_args(argv)
    if a.publish:
        if len(a.sweep_dir) != 1:
            p.error("--publish takes one sweep_dir")
        try:
            n = len(SweepFolder(a.sweep_dir[0]).publish(a.publish))
        except FileNotFoundError as e:
            p.error(str(e))
        print(f"published {n} files into {a.publish}")
        a.sweep_dir = [a.publish]
    for d in a.sweep_dir:
        try:
            paths = write_report(d, with_costs=not a.no_costs)
        except FileNotFoundError as e:
            p.error(str(e))
        print(paths["report.md"])
    return 0


if __name__ == "__main__":
    sys.exit(cli())
