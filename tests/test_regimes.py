"""The two-regime report (issue 16): the paper's tables from scratch and pretrained side by side, each
pair the paper orders judged per regime against the seeds' spread, and the gap test."""
import json
import math
import os

import pytest

from fpn_variants.experiments.folder import SweepFolder
from fpn_variants.experiments.regimes import MAX_SEEDS, build, next_runs, paired_difference, pair_verdict, write_regimes
from fpn_variants.experiments.suites import get_suite


def fake_sweep(results, name, values):
    """A sweep folder of suite ``name`` whose run (row, seed) finished with AR1k / AR1k_s = values[row][seed]
    (every other metric 1.0 below AR1k)."""
    suite = get_suite(name)
    folder = SweepFolder(os.path.join(results, name))
    seeds = sorted({s for per in values.values() for s in range(len(per))})
    folder.update_manifest(suite, [], seeds, f"python -m fpn_variants.sweep {name}")
    for row in suite.rows:
        for seed, v in enumerate(values.get(row.key, [])):
            metrics = {m.key: v - 1.0 for m in suite.metrics}
            metrics.update({"box_proposals/AR@1000": v, "box_proposals/ARs@1000": v / 2})
            run_dir = folder.run_dir(row.key, seed)
            os.makedirs(run_dir)
            SweepFolder.write_record(run_dir, dict(row=row.key, seed=seed, status="done", seconds=1.0, s_per_it=1.0,
                                                   train_loss=0.5, error=None, metrics=metrics))


def test_paired_difference_pairs_runs_by_seed_and_judges_against_its_spread():
    run = lambda seed, v, status="done": dict(seed=seed, status=status, metrics={"AP": v})
    a = [run(0, 10.0), run(1, 12.0), run(2, 11.0), run(3, 50.0)]
    b = [run(0, 9.0), run(1, 10.0), run(2, 10.5, "failed")]  # seed 2 failed, seed 3 absent: 2 pairs
    d = paired_difference(a, b, "AP")
    assert d == pytest.approx(dict(diff=1.5, std=0.7071067811865476, n=2))
    assert pair_verdict(d) == "agrees"
    assert pair_verdict(dict(diff=-0.5, std=0.7, n=3)) == "unresolved"
    assert pair_verdict(dict(diff=-1.5, std=0.7, n=3)) == "disagrees"
    assert pair_verdict(dict(diff=2.0, std=None, n=1)) == "unresolved"  # one pair: no spread
    assert pair_verdict(paired_difference(a, [], "AP")) == "not run"
    # a fold axis pairs (fold, seed): the same seed on another fold is another run
    fa = [dict(run(0, 10.0), fold=0), dict(run(0, 20.0), fold=1)]
    fb = [dict(run(0, 9.0), fold=0), dict(run(0, 18.0), fold=1)]
    assert paired_difference(fa, fb, "AP") == pytest.approx(dict(diff=1.5, std=0.7071067811865476, n=2))


def test_regimes_report_puts_both_regimes_beside_the_paper(tmp_path):
    results = str(tmp_path / "results")
    # scratch: (d) above (c), as on NEON; pretrained: (c) clearly above (d) and (e)
    fake_sweep(results, "table1-neon", {"a_C4": [40, 41, 39], "b_C5": [25, 26, 24], "c_fpn": [49, 50, 48],
                                        "d_bottom_up": [50, 51, 50], "e_top_down": [43, 44, 42],
                                        "f_p2_only": [48.8, 50.1, 48.4]})
    fake_sweep(results, "table1-neon-pretrained", {"a_C4": [50, 51, 50], "b_C5": [45, 46, 44],
                                                   "c_fpn": [60, 61, 60], "d_bottom_up": [53, 55, 54],
                                                   "e_top_down": [50, 51, 49], "f_p2_only": [57, 58, 57]})
    data = build(results)
    t1 = data["tables"]["table1"]
    pairs = {(p["higher"], p["lower"]): p for p in t1["pairs"]}
    assert len(t1["pairs"]) == 15  # 6 rows with paper numbers
    cd = pairs["c_fpn", "d_bottom_up"]
    assert cd["paper_diff"] == pytest.approx(6.8)
    assert cd["regimes"]["scratch"]["diff"] == pytest.approx(-4 / 3) and cd["regimes"]["scratch"]["verdict"] == "disagrees"
    assert cd["regimes"]["pretrained"]["diff"] == pytest.approx(19 / 3) and cd["regimes"]["pretrained"]["verdict"] == "agrees"
    assert pairs["c_fpn", "f_p2_only"]["regimes"]["scratch"]["verdict"] == "unresolved"  # +0.23 within 0.29
    assert t1["regimes"]["pretrained"]["kendall_tau"]["AR1k"] > t1["regimes"]["scratch"]["kendall_tau"]["AR1k"]
    assert data["tables"]["table2"]["regimes"] == {"scratch": None, "pretrained": None, "control": None,
                                                   "control-3x": None}
    gap = next(g for g in data["gaps"] if (g["table"], g["b"], g["metric"]) == ("table1", "d_bottom_up", "AR1k"))
    assert gap["paper"] == pytest.approx(6.8)
    recipe = gap["widening"]["recipe"]
    assert recipe["diff"] == pytest.approx(19 / 3 + 4 / 3) and recipe["verdict"] == "wider"
    assert gap["widening"]["weights"]["verdict"] == "not run"  # no control runs
    t2gap = next(g for g in data["gaps"] if g["table"] == "table2")
    assert t2gap["widening"] == {k: dict(diff=None, spread=None, verdict="not run") for k in ("recipe", "weights", "weights-3x")}

    out = str(tmp_path / "regimes")
    os.makedirs(out)
    with open(os.path.join(out, "discussion.md"), "w") as f:
        f.write("What the runs show.")
    paths = write_regimes(results, out, "python -m fpn_variants.experiments.regimes --results R")
    md = open(paths["report.md"]).read()
    assert "| (c) > (d) | +6.8 | -1.3 ± 0.6 (3) disagrees | +6.3 ± 0.6 (3) agrees | not run |" in md
    assert ("| (c) FPN {P2..P6} | 44.0 / 48.0 ± 1.0 (3) / 59.3 ± 0.6 (3) / not run / not run | "
            "56.3 / 49.0 ± 1.0 (3) / 60.3 ± 0.6 (3) / not run / not run |") in md
    assert "| table2 | (c) - (d) | AP | +9.0 | not run | not run | not run | not run | not run | not run | not run |" in md
    assert "- Lite2 from scratch (control): no such suite (this regime is Table 1 only)" in md
    assert "+7.7 ± 0.8: wider" in md and "## Discussion\n\nWhat the runs show." in md
    # the one unresolved pair (scratch (c) vs (f), 3 seeds) gets the command that adds seeds to its rows only
    # each unresolved pair (scratch (c) vs (f); pretrained (a) vs (e): +0.3 within 0.6), 3 seeds each, gets the
    # command that adds seeds to its rows only
    assert [s["rows"] for s in t1["next_runs"]["pretrained"]] == [["a_C4", "e_top_down"]]
    assert (f"- from scratch (R-18), seeds for (c), (f): `mkdir -p output/sweeps/table1-neon && cp -rn {results}/table1-neon/. "
            f"output/sweeps/table1-neon/ && python -m fpn_variants.sweep table1-neon --seeds {MAX_SEEDS} "
            f"--rows c_fpn f_p2_only --output output/sweeps/table1-neon && python -m fpn_variants.report "
            f"output/sweeps/table1-neon --publish {results}/table1-neon`") in md
    assert json.load(open(paths["regimes.json"]))["tables"]["table1"]["pairs"][0]["regimes"]["scratch"]["n"] == 3
    assert os.path.getsize(paths["regimes.png"]) > 20000


def test_the_committed_regimes_report_is_what_the_committed_results_give(tmp_path, monkeypatch):
    """docs/results/regimes is generated, never edited by hand: re-rendering it from docs/results gives
    the same report.md and regimes.json."""
    from conftest import REPO

    monkeypatch.chdir(REPO)  # the commands it prints name docs/results/..., as the CLI's default

    src = os.path.join(REPO, "docs", "results", "regimes")
    out = str(tmp_path / "regimes")
    os.makedirs(out)
    if os.path.isfile(os.path.join(src, "discussion.md")):
        with open(os.path.join(src, "discussion.md")) as f, open(os.path.join(out, "discussion.md"), "w") as g:
            g.write(f.read())
    paths = write_regimes(os.path.join("docs", "results"), out, "python -m fpn_variants.experiments.regimes")
    for name in ("report.md", "regimes.json"):
        assert open(paths[name]).read() == open(os.path.join(src, name)).read(), name


def test_next_runs_add_seeds_up_to_the_maximum_then_the_other_folds():
    """Issue 16's order: a pair within the spread gets seeds up to MAX_SEEDS, then the data's other folds;
    a suite without folds has nothing more to run."""
    pairs = [("c_fpn", "d_bottom_up", 3), ("c_fpn", "f_p2_only", MAX_SEEDS), ("d_bottom_up", "f_p2_only", 3)]
    steps = next_runs("table1-neon", "output/sweeps/table1-neon", pairs, folds=range(4), default_fold=3)
    assert steps == [
        dict(step="seeds", rows=["c_fpn", "d_bottom_up", "f_p2_only"],
             command=f"python -m fpn_variants.sweep table1-neon --seeds {MAX_SEEDS} --rows c_fpn d_bottom_up f_p2_only "
                     "--output output/sweeps/table1-neon"),
        dict(step="folds", rows=["c_fpn", "f_p2_only"],
             command=f"python -m fpn_variants.sweep table1-neon --folds 0 1 2 --seeds {MAX_SEEDS} --rows c_fpn f_p2_only "
                     "--output output/sweeps/table1-neon"),
    ]
    # runs read from a committed folder: resumed from a no-clobber copy in the sweep folder, published back
    [seeds] = next_runs("table1-neon", "docs/results/table1-neon", pairs[:1], folds=range(4), default_fold=3)
    assert seeds["command"] == (
        "mkdir -p output/sweeps/table1-neon && cp -rn docs/results/table1-neon/. output/sweeps/table1-neon/ && "
        f"python -m fpn_variants.sweep table1-neon --seeds {MAX_SEEDS} --rows c_fpn d_bottom_up "
        "--output output/sweeps/table1-neon && "
        "python -m fpn_variants.report output/sweeps/table1-neon --publish docs/results/table1-neon")
    assert next_runs("table1", "out/coco", [("c_fpn", "d_bottom_up", MAX_SEEDS)]) == [
        dict(step="folds", rows=["c_fpn", "d_bottom_up"], command=None)]
    assert next_runs("table1-neon", "out/t1", []) == []


def test_the_control_regime_separates_the_weights_from_the_recipe(tmp_path):
    """The gap test's control (Lite2 from scratch, the pretrained recipe): pretrained gap minus the
    control's is what the ImageNet weights alone do, beside pretrained minus the R-18 scratch regime."""
    from fpn_variants.experiments.suites import LITE2_FROM_SCRATCH, PRETRAINED_BOTTOM_UP

    control = get_suite("table1-neon-lite2-scratch")
    assert [(r.key, r.config) for r in control.rows] == [(r.key, r.config) for r in get_suite("table1-neon").rows]
    changed = {k: v for k, v, p in zip(LITE2_FROM_SCRATCH[::2], LITE2_FROM_SCRATCH[1::2], PRETRAINED_BOTTOM_UP[1::2])
               if v != p}
    assert control.opts == LITE2_FROM_SCRATCH and LITE2_FROM_SCRATCH[::2] == PRETRAINED_BOTTOM_UP[::2]
    assert changed == {"FPN_VARIANTS.TIMM.WEIGHTS": "", "FPN_VARIANTS.TIMM.NORM": "BN", "MODEL.BACKBONE.FREEZE_AT": "0"}

    results = str(tmp_path / "results")
    fake_sweep(results, "table1-neon", {"c_fpn": [49, 50, 48], "d_bottom_up": [50, 51, 50]})  # gap -4/3
    fake_sweep(results, "table1-neon-pretrained", {"c_fpn": [60, 61, 60], "d_bottom_up": [53, 55, 54]})  # +19/3
    fake_sweep(results, "table1-neon-lite2-scratch", {"c_fpn": [45, 46, 44], "d_bottom_up": [39.5, 40, 38]})  # +5.8 ± 0.3
    data = build(results)
    gap = next(g for g in data["gaps"] if (g["table"], g["b"], g["metric"]) == ("table1", "d_bottom_up", "AR1k"))
    assert gap["regimes"]["control"] == pytest.approx(dict(diff=35 / 6, std=math.sqrt(1 / 12), n=3))
    weights = gap["widening"]["weights"]
    assert weights["diff"] == pytest.approx(19 / 3 - 35 / 6)  # +0.5: the weights add little beyond the recipe
    assert weights["spread"] == pytest.approx(math.sqrt(1 / 12 + gap["regimes"]["pretrained"]["std"] ** 2))
    assert weights["verdict"] == "within the spread" and gap["widening"]["recipe"]["verdict"] == "wider"
    assert data["tables"]["table1"]["regimes"]["control"]["folder"] == "table1-neon-lite2-scratch"
    paths = write_regimes(results, str(tmp_path / "regimes"), "python -m fpn_variants.experiments.regimes --results R")
    md = open(paths["report.md"]).read()
    assert "| table1 | (c) - (d) | AR1k | +6.8 | -1.3 ± 0.6 (3) | +6.3 ± 0.6 (3) | +5.8 ± 0.3 (3) | " in md
    assert "+0.5 ± 0.6: within the spread |" in md
    assert gap["widening"]["weights-3x"]["verdict"] == "not run"  # the 3x control has no folder here

    fake_sweep(results, "table1-neon-lite2-scratch-3x", {"c_fpn": [52, 53, 51], "d_bottom_up": [50, 50, 49]})  # +7/3
    data = build(results)
    gap = next(g for g in data["gaps"] if (g["table"], g["b"], g["metric"]) == ("table1", "d_bottom_up", "AR1k"))
    assert gap["regimes"]["control-3x"]["diff"] == pytest.approx(7 / 3) and gap["regimes"]["control-3x"]["n"] == 3
    assert gap["widening"]["weights-3x"]["diff"] == pytest.approx(19 / 3 - 7 / 3)
    assert gap["widening"]["weights-3x"]["verdict"] == "wider"


def test_the_report_names_the_rpn_behind_table2s_proposals_and_its_ar(tmp_path):
    """issue 16, item 4: every Table 2 row reads the regime's Table 1(c) RPN's dumped proposals; the
    report says which RPN made them and its AR100 / AR1k (from the proposals stage's run record)."""
    results = str(tmp_path / "results")
    fake_sweep(results, "table2-neon-pretrained", {"c_fpn": [14, 15, 16], "d_bottom_up": [6, 7, 6]})
    prop = SweepFolder(os.path.join(results, "table2-neon-pretrained")).proposals_dir
    os.makedirs(prop)
    SweepFolder.write_record(prop, dict(row="proposals", seed=0, status="done", seconds=1.0, error=None,
                                        metrics={"box_proposals/AR@100": 30.1, "box_proposals/AR@1000": 49.2}))
    t2 = build(results)["tables"]["table2"]
    assert t2["regimes"]["pretrained"]["proposals"] == (
        "NEON/rpn_c_fpn.yaml with the suite's overrides, seed 0 (the regime's Table 1(c) RPN): AR100 30.1 / AR1k 49.2")
    assert t2["regimes"]["scratch"] is None

    # rows run on another data fold read that fold's own RPN: the note names it and its AR on that fold
    folder = SweepFolder(os.path.join(results, "table2-neon-pretrained"))
    folder.update_manifest(get_suite("table2-neon-pretrained"), [], [0], "python -m fpn_variants.sweep "
                           "table2-neon-pretrained --folds 1 --seeds 1 --rows c_fpn d_bottom_up",
                           {"c_fpn", "d_bottom_up"}, [1])
    for row, v in (("c_fpn", 20.0), ("d_bottom_up", 9.0)):
        run_dir = folder.run_dir(row, 0, 1)
        os.makedirs(run_dir)
        SweepFolder.write_record(run_dir, dict(row=row, fold=1, seed=0, status="done", seconds=1.0, s_per_it=1.0,
                                               train_loss=0.5, error=None, metrics={"bbox/AP": v}))
    os.makedirs(folder.fold_proposals_dir(1))
    SweepFolder.write_record(folder.fold_proposals_dir(1), dict(
        row="proposals", fold=1, seed=0, status="done", seconds=1.0, error=None,
        metrics={"box_proposals/AR@100": 27.5, "box_proposals/AR@1000": 47.0}))
    t2 = build(results)["tables"]["table2"]
    assert t2["regimes"]["pretrained"]["proposals"].endswith(
        "AR100 30.1 / AR1k 49.2; on fold 1 its own RPN (`proposals_fold1`): AR100 27.5 / AR1k 47.0")
    # every row with runs has them on fold 1 too: the table's means are over both folds
    assert t2["regimes"]["pretrained"]["rows"]["c_fpn"]["n"] == 4
    cd = next(p for p in t2["pairs"] if (p["higher"], p["lower"]) == ("c_fpn", "d_bottom_up"))
    assert cd["regimes"]["pretrained"]["n"] == 4
    # a row without fold-1 runs: the table's means go back to the default fold (the val tiles every row
    # was measured on), while the fold-1 runs still enter the (c) - (d) pair
    fake_sweep(results, "table2-neon-pretrained", {"f_p2_only": [13, 14, 13]})
    t2 = build(results)["tables"]["table2"]
    assert t2["regimes"]["pretrained"]["rows"]["c_fpn"]["n"] == 3
    assert t2["regimes"]["pretrained"]["rows"]["c_fpn"]["mean"]["AP"] == pytest.approx(14.0)
    cd = next(p for p in t2["pairs"] if (p["higher"], p["lower"]) == ("c_fpn", "d_bottom_up"))
    assert cd["regimes"]["pretrained"]["n"] == 4


def test_a_widening_with_one_run_has_no_spread_yet():
    from fpn_variants.experiments.regimes import _widening

    assert _widening(dict(diff=7.4, std=1.0, n=3), dict(diff=-3.0, std=None, n=1)) == dict(
        diff=pytest.approx(10.4), spread=None, verdict="no spread yet (1 run)")
    assert _widening(dict(diff=1.0, std=1.0, n=3), dict(diff=0.5, std=1.0, n=3))["verdict"] == "within the spread"


def test_readme_carries_the_committed_gap_table_verbatim():
    """README's two-regime section shows the gap test as the generated report has it (issue 16, deliverable
    3): every line of the committed report's gap table, header included, is a line of README.md, so a
    re-rendered report with new runs fails this test until README is updated with it."""
    from conftest import REPO

    with open(os.path.join(REPO, "docs", "results", "regimes", "report.md")) as f:
        report = f.read().splitlines()
    start = report.index("## The gap test: does pretraining open the gap the paper reports?")
    table = []
    for line in report[start:]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    assert len(table) >= 2 + 8, table  # header, rule and the 8 gaps (2 tables x 2 gains x 2 metrics)
    with open(os.path.join(REPO, "README.md")) as f:
        readme = set(f.read().splitlines())
    missing = [line for line in table if line not in readme]
    assert not missing, "README.md lacks these lines of docs/results/regimes/report.md's gap table:\n" + "\n".join(missing)
