"""The paper's three tables in two regimes side by side: from scratch and ImageNet-pretrained (issue 16),
with a control regime for the gap test: the pretrained recipe without the ImageNet weights.

Usage::

    python -m fpn_variants.experiments.regimes                      # docs/results -> docs/results/regimes
    python -m fpn_variants.experiments.regimes --results output/sweeps --output output/regimes

Reads the result folders of the table suites (``<results>/table{1,2,3}-neon`` from scratch,
``<results>/table{1,2,3}-neon-pretrained``, the controls ``<results>/table1-neon-lite2-scratch`` and
``<results>/table1-neon-lite2-scratch-3x`` (the same, trained 3x as long); sweep
folders or committed result folders, through
:func:`fpn_variants.experiments.report.collect`), measures nothing, and writes, each atomically:

* ``regimes.json`` — per table, regime and row: mean / std / runs of every metric; per table and
  regime: Kendall tau of the rows' order against the paper's, per metric; every pair of rows the paper
  orders, with each regime's verdict; the gap test (below);
* ``report.md`` — for every table, row and metric: paper | from scratch | pretrained | control | 3x
  control; the taus; the pair verdicts; the gap test; then ``discussion.md`` of the output folder, if there is one;
* ``regimes.png`` — the headline metric of every row per regime (mean, error bar = std, dots = runs)
  with the paper's value, and the gap test's differences.

**The difference of two rows** (a - b) in one regime is paired run by run: the runs of both rows with
the same seed (and, where a sweep has folds, the same fold) give one difference each; its mean, the
sample std of those differences (ddof = 1: the spread of one run's difference) and their count. A pair
the paper orders a > b is **agrees** where mean > std, **disagrees** where mean < -std, **unresolved**
where |mean| <= std (within the seeds' spread) or fewer than 2 paired runs; "not run" without runs.

**What would resolve an unresolved pair** (issue 16: seeds up to :data:`MAX_SEEDS`, then the data's other
region folds): per table and regime, the rows of every unresolved pair; while a pair has fewer than
``MAX_SEEDS`` paired runs, the sweep command that adds seeds to those rows only (``--seeds MAX_SEEDS
--rows ...``); once it has them, the command that adds the suite's other folds for those rows
(``--folds ... --rows ...``). The report lists these as the next runs; nothing is run. The command
sweeps into the sweep's own folder ``output/sweeps/<suite>``; where the runs were read from a committed
result folder (``docs/results/<suite>``), it first copies that folder there without overwriting
(``cp -rn``: finished runs and a Fast R-CNN suite's proposals are resumed, not redone) and ends by
publishing the report back (``report --publish``), so that no log or checkpoint lands in the
committed folder.

**The gap test** (Lin et al. §5.1: "the semantic gap" between levels, closed by the top-down pathway
and the lateral connections): the gain of FPN (c) over the bottom-up pyramid (d) and over the top-down
pyramid without laterals (e), in Table 1's AR1k and AR1k_s and Table 2's AP and AP_s, per regime; and
whether pretraining widens it (:data:`WIDENINGS`): the pretrained gap minus the from-scratch (R-18) gap —
the pretrained recipe as a whole: weights, bottom-up network, normalisation and optimiser settings — and
the pretrained gap minus the control's (Lite2 from scratch, the same recipe: the ImageNet weights alone),
and minus the 3x control's (the same, trained three times as long: whether the weights' effect outlives a
control that has fitted more);
each with spread sqrt(std_1^2 + std_2^2), "wider" / "narrower" beyond it, "within the spread" inside, "no
spread yet (1 run)" where a gap has a single paired run.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from ..fileio import write_bytes_atomic, write_json_atomic, write_text_atomic
from .folder import SweepFolder
from .report import collect, other_folds, ranking_agreement, summarize
from .suites import SUITES, get_suite

__all__ = ["REGIMES", "TABLES", "GAPS", "WIDENINGS", "MAX_SEEDS", "paired_difference", "pair_verdict", "next_runs", "build",
           "write_regimes", "cli"]

# (key, label, suite-name suffix)
REGIMES: Tuple[Tuple[str, str, str], ...] = (
    ("scratch", "from scratch (R-18)", "-neon"),
    ("pretrained", "ImageNet-pretrained (Lite2)", "-neon-pretrained"),
    ("control", "Lite2 from scratch (control)", "-neon-lite2-scratch"),
    ("control-3x", "Lite2 from scratch, 3x schedule (control)", "-neon-lite2-scratch-3x"),
)
TABLES = ("table1", "table2", "table3")
# seeds per row before a pair within the seeds' spread is called unresolved and the data's folds are next
MAX_SEEDS = 5
# (table, a, b, metrics): the gain of a over b
GAPS: Tuple[Tuple[str, str, str, Tuple[str, ...]], ...] = (
    ("table1", "c_fpn", "d_bottom_up", ("AR1k", "AR1k_s")),
    ("table1", "c_fpn", "e_top_down", ("AR1k", "AR1k_s")),
    ("table2", "c_fpn", "d_bottom_up", ("AP", "AP_s")),
    ("table2", "c_fpn", "e_top_down", ("AP", "AP_s")),
)
# (key, regime, minus regime, what the difference of their gaps measures)
WIDENINGS: Tuple[Tuple[str, str, str, str], ...] = (
    ("recipe", "pretrained", "scratch", "the pretrained recipe as a whole (weights, network, normalisation, optimiser)"),
    ("weights", "pretrained", "control", "the ImageNet weights alone (the same recipe from random init)"),
    ("weights-3x", "pretrained", "control-3x",
     "the ImageNet weights against the same network trained from random init for 3x the schedule"),
)


def _run_key(run: dict) -> tuple:
    return run.get("fold"), run["seed"]


def _std(xs: Sequence[float]) -> Optional[float]:
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _value(run: dict, metric: str) -> Optional[float]:
    v = run["metrics"].get(metric)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def paired_difference(runs_a: List[dict], runs_b: List[dict], metric: str) -> dict:
    """``{diff, std, n}``: the mean over runs paired by (fold, seed) of ``a - b`` in ``metric``, the sample
    std of those differences (``None`` below 2 pairs) and the number of pairs (``diff`` ``None`` at 0).
    Only finished runs with a value count."""
    b = {_run_key(r): _value(r, metric) for r in runs_b if r["status"] == "done"}
    diffs = [va - b[k] for r in runs_a if r["status"] == "done"
             for k, va in [(_run_key(r), _value(r, metric))] if va is not None and b.get(k) is not None]
    return dict(diff=sum(diffs) / len(diffs) if diffs else None, std=_std(diffs), n=len(diffs))


def pair_verdict(d: dict) -> str:
    """"agrees" / "disagrees" / "unresolved" / "not run" for a difference that the paper says is > 0."""
    if d["diff"] is None:
        return "not run"
    if d["std"] is None or abs(d["diff"]) <= d["std"]:
        return "unresolved"
    return "agrees" if d["diff"] > 0 else "disagrees"


def next_runs(suite_name: str, folder: str, pairs: List[Tuple[str, str, int]], folds: Sequence[int] = (),
              default_fold: Optional[int] = None) -> List[dict]:
    """The sweep commands that would resolve the unresolved ``pairs`` (``(row a, row b, paired runs)``)
    of suite ``suite_name`` whose runs are in ``folder`` (the sweep folder ``output/sweeps/<suite>``, or a
    committed result folder, which the command copies there first and publishes back to at the end):
    ``{step: "seeds" | "folds", rows, command}``, at most one of each step.
    Pairs with fewer than :data:`MAX_SEEDS` paired runs need seeds (``--seeds MAX_SEEDS --rows ...``);
    the others need the suite's ``folds`` other than ``default_fold`` (``--folds ... --seeds
    MAX_SEEDS --rows ...``), or nothing more can be run when the suite has no folds."""
    out = []
    sweep_dir = f"output/sweeps/{suite_name}"
    committed = os.path.normpath(folder) != sweep_dir
    output = f"--output {sweep_dir}"
    for step, wanted in (("seeds", [p for p in pairs if p[2] < MAX_SEEDS]),
                         ("folds", [p for p in pairs if p[2] >= MAX_SEEDS])):
        rows = sorted({k for a, b, _ in wanted for k in (a, b)})
        if not rows:
            continue
        if step == "seeds":
            cmd = f"python -m fpn_variants.sweep {suite_name} --seeds {MAX_SEEDS} --rows {' '.join(rows)} {output}"
        else:
            other = [j for j in folds if j != default_fold]
            if not other:
                out.append(dict(step=step, rows=rows, command=None))
                continue
            cmd = (f"python -m fpn_variants.sweep {suite_name} --folds {' '.join(map(str, other))} --seeds {MAX_SEEDS} "
                   f"--rows {' '.join(rows)} {output}")
        if committed:
            cmd = (f"mkdir -p {sweep_dir} && cp -rn {folder}/. {sweep_dir}/ && {cmd} && "
                   f"python -m fpn_variants.report {sweep_dir} --publish {folder}")
        out.append(dict(step=step, rows=rows, command=cmd))
    return out


def _load(results: str, table: str, suffix: str) -> Optional[dict]:
    path = os.path.join(results, table + suffix)
    if not SweepFolder(path).exists():
        return None
    col = collect(path)
    return dict(path=path, collected=col, rows={r["row"]: r for r in summarize(col)},
                runs={row.key: [r for r in col["runs"] if r["row"] == row.key] for row in col["suite"].rows})


def build(results: str) -> dict:
    """Everything the report shows, from the result folders under ``results`` (see the module
    docstring); a regime whose folder is missing has ``None`` in its place."""
    out = dict(regimes=[dict(key=k, label=label, suffix=sfx) for k, label, sfx in REGIMES], tables={}, gaps=[])
    loaded = {}
    for table in TABLES:
        suite = get_suite(table + REGIMES[0][2])  # rows, metrics and paper numbers (the same in every regime)
        names = [m.name for m in suite.metrics]
        t = dict(title=suite.title, source=suite.source, headline=suite.headline, metrics=names,
                 rows=[dict(key=r.key, label=r.label, paper=dict(r.paper)) for r in suite.rows],
                 regimes={}, pairs=[])
        for key, _, sfx in REGIMES:
            data = loaded[table, key] = _load(results, table, sfx)
            if data is None:
                t["regimes"][key] = None
                continue
            rows = [data["rows"].get(r.key) or dict(row=r.key, mean={}, std={}, paper=dict(r.paper), n_done=0)
                    for r in suite.rows]
            t["regimes"][key] = dict(
                folder=os.path.relpath(data["path"], results),
                proposals=_proposals_note(data["path"], data["collected"]),
                rows={r["row"]: dict(mean=r["mean"], std=r["std"], n=r.get("n_done", 0)) for r in rows},
                kendall_tau={m: ranking_agreement(rows, m)["kendall_tau"] for m in names},
            )
        h = suite.headline
        paper_rows = [r for r in suite.rows if h in r.paper]
        for i, ra in enumerate(paper_rows):
            for rb in paper_rows[i + 1:]:
                if ra.paper[h] == rb.paper[h]:
                    continue
                hi, lo = (ra, rb) if ra.paper[h] > rb.paper[h] else (rb, ra)
                pair = dict(higher=hi.key, lower=lo.key, paper_diff=hi.paper[h] - lo.paper[h], regimes={})
                for key, _, _ in REGIMES:
                    data = loaded[table, key]
                    d = (paired_difference(data["runs"].get(hi.key, []), data["runs"].get(lo.key, []), h) if data
                         else dict(diff=None, std=None, n=0))
                    pair["regimes"][key] = dict(d, verdict=pair_verdict(d))
                t["pairs"].append(pair)
        t["next_runs"] = {}
        for key, _, sfx in REGIMES:
            open_pairs = [(p["higher"], p["lower"], p["regimes"][key]["n"]) for p in t["pairs"]
                          if p["regimes"][key]["verdict"] == "unresolved"]
            t["next_runs"][key] = []
            if open_pairs:  # a regime with runs has its suite
                s, data = get_suite(table + sfx), loaded[table, key]
                t["next_runs"][key] = next_runs(s.name, data["path"], open_pairs, range(s.folds), s.default_fold)
        out["tables"][table] = t
    for table, a, b, metrics in GAPS:
        suite = get_suite(table + REGIMES[0][2])
        by = {r.key: r for r in suite.rows}
        for m in metrics:
            g = dict(table=table, a=a, b=b, metric=m, paper=by[a].paper.get(m, math.nan) - by[b].paper.get(m, math.nan),
                     regimes={})
            for key, _, _ in REGIMES:
                data = loaded[table, key]
                g["regimes"][key] = (paired_difference(data["runs"].get(a, []), data["runs"].get(b, []), m) if data
                                     else dict(diff=None, std=None, n=0))
            g["widening"] = {key: _widening(g["regimes"][hi], g["regimes"][lo]) for key, hi, lo, _ in WIDENINGS}
            out["gaps"].append(g)
    return out


def _widening(p: dict, s: dict) -> dict:
    """``{diff, spread, verdict}``: gap ``p`` minus gap ``s`` (paired differences), spread
    sqrt(std_p^2 + std_s^2); "wider" / "narrower" beyond it, "within the spread" inside it, "no spread
    yet (1 run)" where a gap has one paired run, "not run" where either gap is."""
    if s["diff"] is None or p["diff"] is None:
        return dict(diff=None, spread=None, verdict="not run")
    spread = math.sqrt(s["std"] ** 2 + p["std"] ** 2) if s["std"] is not None and p["std"] is not None else None
    w = p["diff"] - s["diff"]
    verdict = ("no spread yet (1 run)" if spread is None else "within the spread" if abs(w) <= spread
               else "wider" if w > 0 else "narrower")
    return dict(diff=w, spread=spread, verdict=verdict)


def _proposals_note(path: str, col: dict) -> str:
    """Which RPN made a Fast R-CNN suite's proposals, and its AR (from the proposals stage's run record);
    then, for each other data fold with runs, that fold's own RPN (same config, trained on the fold's
    train tiles) and its AR on the fold's val tiles."""
    suite = col["suite"]
    if not suite.proposals:
        return ""
    folder = SweepFolder(path)

    def ar(fold):
        rec = SweepFolder.read_record(folder.fold_proposals_dir(fold)) or {}
        m = rec.get("metrics") or {}
        ars = [f"{name} {m[k]:.1f}" for name, k in (("AR100", "box_proposals/AR@100"), ("AR1k", "box_proposals/AR@1000"))
               if m.get(k) is not None]
        return " / ".join(ars) if ars else "its record is not in the folder"

    overrides = " with the suite's overrides" if suite.opts else ""
    note = f"{suite.proposals}{overrides}, seed 0 (the regime's Table 1(c) RPN): {ar(None)}"
    folds = other_folds(col)
    if folds:
        note += "; on " + ", ".join(f"fold {j} its own RPN (`proposals_fold{j}`): {ar(j)}" for j in folds)
    return note


def _f(x, digits=1, sign=False):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _cell(mean, std, n, sign=False):
    if mean is None:
        return "not run" if not n else "—"
    s = _f(mean, sign=sign)
    return (s + f" ± {std:.1f}" if std is not None else s) + f" ({n})"


def _render(data: dict, discussion: str, command: str) -> str:
    regimes = data["regimes"]
    L = ["# The paper's tables in two regimes: from scratch and ImageNet-pretrained (and controls)", "",
         "Lin et al., FPN, CVPR 2017, Tables 1-3 (COCO, ImageNet-pretrained R-50) beside this project's NEON "
         "ablations: " + "; ".join(f"**{r['label']}** = the `*{r['suffix']}` suites" for r in regimes) + ". "
         "Generated by `fpn_variants.experiments.regimes` from the committed result folders; nothing here is "
         "typed by hand.", "", "Reproduce:", "", "```", command, "```", "",
         "Cells: mean ± sample std over runs (number of runs); the paper's COCO number first. Compare orderings, "
         "not values: the data, the backbones and the schedules differ from the paper's.", ""]
    for table, t in data["tables"].items():
        L += [f"## {t['source']}: {t['title']}", ""]
        for r in regimes:
            info = t["regimes"][r["key"]]
            where = (f"`{info['folder']}`" if info else "not run yet" if table + r["suffix"] in SUITES
                     else "no such suite (this regime is Table 1 only)")
            L.append(f"- {r['label']}: {where}" + (f"; proposals: {info['proposals']}" if info and info["proposals"] else ""))
        L.append("")
        head = " | ".join(f"{m}: paper / " + " / ".join(r["key"] for r in regimes) for m in t["metrics"])
        L += [f"| row | {head} |", "|---|" + "---|" * len(t["metrics"])]
        for row in t["rows"]:
            cells = []
            for m in t["metrics"]:
                parts = [_f(row["paper"].get(m))]
                for r in regimes:
                    info = t["regimes"][r["key"]]
                    s = info["rows"][row["key"]] if info else None
                    parts.append(_cell(s["mean"].get(m), s["std"].get(m), s["n"]) if s else "not run")
                cells.append(" / ".join(parts))
            L.append(f"| {row['label']} | " + " | ".join(cells) + " |")
        L += ["", "Kendall tau of the rows' order (by mean) against the paper's, over the rows with a paper number:", "",
              "| metric | " + " | ".join(r["label"] for r in regimes) + " |", "|---|" + "---|" * len(regimes)]
        for m in t["metrics"]:
            taus = [_f((t["regimes"][r["key"]] or {}).get("kendall_tau", {}).get(m), 2, sign=True)
                    for r in regimes]
            L.append(f"| {m} | " + " | ".join(taus) + " |")
        labels = {row["key"]: row["label"].split(" ")[0] for row in t["rows"]}
        L += ["", f"Every pair the paper orders ({t['headline']}; a > b in the paper), our paired difference a - b "
              "± std (runs) and the verdict:", "",
              "| pair | paper | " + " | ".join(r["label"] for r in regimes) + " |", "|---|---|" + "---|" * len(regimes)]
        for p in t["pairs"]:
            cells = [d["verdict"] if d["verdict"] == "not run" else
                     f"{_cell(d['diff'], d['std'], d['n'], sign=True)} {d['verdict']}"
                     for d in (p["regimes"][r["key"]] for r in regimes)]
            L.append(f"| {labels[p['higher']]} > {labels[p['lower']]} | {_f(p['paper_diff'], sign=True)} | "
                     + " | ".join(cells) + " |")
        counts = {r["key"]: {v: sum(p["regimes"][r["key"]]["verdict"] == v for p in t["pairs"])
                             for v in ("agrees", "disagrees", "unresolved", "not run")} for r in regimes}
        L += ["", "; ".join(f"{r['label']}: " + ", ".join(f"{n} {v}" for v, n in counts[r["key"]].items() if n)
                            for r in regimes) + ".", ""]
        todo = [(r, step) for r in regimes for step in t["next_runs"].get(r["key"], [])]
        if todo:
            L += [f"What would resolve the unresolved pairs (seeds up to {MAX_SEEDS} per row, then the data's other "
                  "folds; not run yet):", ""]
            for r, step in todo:
                rows = ", ".join(labels.get(k, k) for k in step["rows"])
                what = (f"`{step['command']}`" if step["command"] else
                        "nothing more: the suite has no other data folds")
                L.append(f"- {r['label']}, {step['step']} for {rows}: {what}")
            L.append("")
    L += ["## The gap test: does pretraining open the gap the paper reports?", "",
          "The gain of FPN (c) over the bottom-up pyramid (d) — the top-down pathway's worth — and over the "
          "top-down pyramid without lateral connections (e), paired by run. 'widening': one regime's gap minus "
          "another's, beyond or within sqrt(std_1^2 + std_2^2): "
          + "; ".join(f"**{k}** = {hi} - {lo}, {what}" for k, hi, lo, what in WIDENINGS) + ".", "",
          "| table | gain | metric | paper | " + " | ".join(r["label"] for r in regimes) + " | "
          + " | ".join(f"widening: {k}" for k, *_ in WIDENINGS) + " |",
          "|---|---|---|---|" + "---|" * (len(regimes) + len(WIDENINGS))]
    for g in data["gaps"]:
        labels = {row["key"]: row["label"].split(" ")[0] for row in data["tables"][g["table"]]["rows"]}
        cells = [_cell(d["diff"], d["std"], d["n"], sign=True) for d in (g["regimes"][r["key"]] for r in regimes)]
        wc = ["not run" if w["diff"] is None else f"{_f(w['diff'], sign=True)} ± {_f(w['spread'])}: {w['verdict']}"
              for w in (g["widening"][k] for k, *_ in WIDENINGS)]
        L.append(f"| {g['table']} | {labels[g['a']]} - {labels[g['b']]} | {g['metric']} | {_f(g['paper'], sign=True)} | "
                 + " | ".join(cells + wc) + " |")
    L += ["", "A difference is paired by run (same seed; same fold where a sweep has folds): its std is that of one "
          "run's difference, the seeds' spread. 'unresolved': |mean| within that spread or fewer than 2 paired runs.",
          ""]
    if discussion.strip():
        L += ["## Discussion", "", discussion.strip(), ""]
    return "\n".join(L)


def _plot(path: str, data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = data["regimes"]
    colours = {"scratch": "#7aa6c2", "pretrained": "#e0a45a", "control": "#9c9c9c", "control-3x": "#5f5f5f"}
    fig, axes = plt.subplots(1, len(data["tables"]) + 1, figsize=(19, 5.4), layout="constrained")
    for ax, (table, t) in zip(axes, data["tables"].items()):
        h, rows = t["headline"], t["rows"]
        width = 0.8 / len(regimes)
        for j, r in enumerate(regimes):
            info = t["regimes"][r["key"]]
            if info is None and table + r["suffix"] not in SUITES:
                continue
            xs = [i + (j - (len(regimes) - 1) / 2) * width for i in range(len(rows))]
            means = [(info["rows"][row["key"]]["mean"].get(h) if info else None) for row in rows]
            stds = [(info["rows"][row["key"]]["std"].get(h) if info else None) or 0.0 for row in rows]
            ax.bar(xs, [m if m is not None else float("nan") for m in means], width, yerr=stds, capsize=3,
                   color=colours.get(r["key"]), label=r["label"])
            for x, m in zip(xs, means):
                if m is None:
                    ax.text(x, 0, "not run", rotation=90, ha="center", va="bottom", fontsize=7, color="crimson")
        paper = [(i, row["paper"][h]) for i, row in enumerate(rows) if h in row["paper"]]
        if paper:
            ax.plot([i for i, _ in paper], [v for _, v in paper], "r_", ms=18, mew=2, label="paper (COCO)")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([row["label"].split(" ")[0] if row["label"].startswith("(") else row["key"] for row in rows],
                           fontsize=8, rotation=30, ha="right")
        ax.set_ylim(bottom=0)
        ax.set_ylabel(f"{h} (%)")
        ax.set_title(f"{t['source']}: {h}", fontsize=10)
    axes[0].legend(fontsize=8, loc="lower left")
    ax = axes[-1]
    gaps = data["gaps"]
    width = 0.8 / (len(regimes) + 1)
    for j, r in enumerate(regimes):
        ds = [g["regimes"][r["key"]] for g in gaps]
        xs = [i + (j - len(regimes) / 2) * width for i in range(len(gaps))]
        ax.bar(xs, [d["diff"] if d["diff"] is not None else float("nan") for d in ds], width,
               yerr=[d["std"] or 0.0 for d in ds], capsize=3, color=colours.get(r["key"]), label=r["label"])
    ax.bar([i + (len(regimes) / 2) * width for i in range(len(gaps))], [g["paper"] for g in gaps], width,
           color="#c44e52", label="paper (COCO)")
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(range(len(gaps)))
    ax.set_xticklabels([f"T{g['table'][-1]} {g['a'][0]}-{g['b'][0]}\n{g['metric']}" for g in gaps], fontsize=7)
    ax.set_title("gap test: gain of (c) over (d) / (e)", fontsize=10)
    ax.set_ylabel("difference (points)")
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def write_regimes(results: str, output: str, command: Optional[str] = None) -> Dict[str, str]:
    """Build the comparison from the result folders under ``results`` and write ``regimes.json``,
    ``report.md`` and ``regimes.png`` into ``output`` (created if missing); returns their paths.
    ``discussion.md`` of ``output`` is carried into the report."""
    data = build(results)
    os.makedirs(output, exist_ok=True)
    paths = {n: os.path.join(output, n) for n in ("regimes.json", "report.md", "regimes.png")}
    write_json_atomic(paths["regimes.json"], data)
    cmd = command or f"python -m fpn_variants.experiments.regimes --results {results} --output {output}"
    write_text_atomic(paths["report.md"], _render(data, SweepFolder(output).discussion(), cmd))
    _plot(paths["regimes.png"], data)
    return paths


def cli(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fpn_variants.experiments.regimes",
                                description="The paper's tables from scratch and pretrained, side by side.")
    p.add_argument("--results", default=os.path.join("docs", "results"),
                   help="folder holding table{1,2,3}-neon[-pretrained] and table1-neon-lite2-scratch (default docs/results)")
    p.add_argument("--output", help="where to write (default RESULTS/regimes)")
    a = p.parse_args(argv)
    if not os.path.isdir(a.results):
        p.error(f"--results {a.results!r} is not a folder")
    output = a.output or os.path.join(a.results, "regimes")
    command = "python -m fpn_variants.experiments.regimes" + ("" if a.results == os.path.join("docs", "results") else
                                                              f" --results {a.results}") + (
        f" --output {a.output}" if a.output else "")
    paths = write_regimes(a.results, output, command)
    print(f"[regimes] {paths['report.md']}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
