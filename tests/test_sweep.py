"""Sweeps end to end on the real NEON data with a tiny recipe: the local executor and submitit's
LocalExecutor run every row x seed; a killed sweep loses no finished run and resumes the interrupted
one; a failed run is recorded and reported; the report's numbers are the runs' own metrics.json
values; metrics.json is read robustly."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from fpn_variants.experiments.folder import SweepFolder
from fpn_variants.experiments.records import read_metrics, run_summary
from fpn_variants.experiments.report import ranking_agreement, write_report
from fpn_variants.experiments.suites import PRETRAINED_BOTTOM_UP, SUITES, Metric, Row, Suite, config_root, get_suite
from fpn_variants.experiments.sweep import plan_runs, run_sweep

run_status = SweepFolder.read_record


def final_train_loss(run_dir):
    return run_summary(run_dir, [])["train_loss"]

# RPN-only on 96-px tiles, d = 32, 2 iterations of 2 tiles: ~10 s per run on 2 cores.
TINY = (
    "MODEL.FPN.OUT_CHANNELS", "32", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.STEPS", "()", "DATALOADER.NUM_WORKERS", "0", "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MIN_SIZE_TEST", "96",
)
AR = (Metric("box_proposals/AR@100", "AR100"), Metric("box_proposals/AR@1000", "AR1k"))


def tiny_suite(name="tiny", bad_row=False):
    rows = [
        Row("c_fpn", "(c) FPN", "NEON/rpn_c_fpn.yaml", paper={"AR100": 44.0, "AR1k": 56.3}),
        Row("d_bottom_up", "(d) bottom-up", "NEON/rpn_d_bottom_up.yaml", paper={"AR100": 37.4, "AR1k": 49.5},
            claim="the top-down pathway matters"),
    ]
    if bad_row:
        rows[1] = Row("bad", "misspelt backbone", "NEON/rpn_c_fpn.yaml", opts=("MODEL.BACKBONE.NAME", "build_fpn_ful_backbone"))
    return Suite(name, "tiny test suite", AR, "AR1k", tuple(rows), source="Table 1", baseline="c_fpn")


@pytest.fixture(autouse=True)
def _datasets(neon_root, monkeypatch):
    monkeypatch.setenv("FPN_VARIANTS_DATASETS", os.path.dirname(neon_root))


def eval_values_from_metrics_json(run_dir, key):
    """Independent of fpn_variants.results: the value of ``key`` in the last line holding it."""
    last = None
    with open(os.path.join(run_dir, "metrics.json")) as f:
        for line in f:
            d = json.loads(line)
            if key in d:
                last = d[key]
    return last


def check_complete_sweep(out, suite, seeds):
    with open(os.path.join(out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [(r["row"], int(r["seed"])) for r in rows] == [(row.key, s) for row in suite.rows for s in seeds]
    for r in rows:
        assert r["status"] == "done"
        run_dir = os.path.join(out, r["row"], f"seed{r['seed']}")
        for m in suite.metrics:
            assert float(r[m.name]) == eval_values_from_metrics_json(run_dir, m.key)
        assert os.path.isfile(os.path.join(run_dir, "model_final.pth"))
        assert not [n for n in os.listdir(run_dir) if n.startswith("model_0")], "intermediate checkpoints kept"
    res = json.load(open(os.path.join(out, "results.json")))
    for row in res["rows"]:
        vals = [float(r["AR1k"]) for r in rows if r["row"] == row["row"]]
        assert row["n_done"] == len(seeds)
        assert row["mean"]["AR1k"] == pytest.approx(sum(vals) / len(vals))
    md = open(os.path.join(out, "report.md")).read()
    assert "| (c) FPN |" in md and "(56.3)" in md and "## Ranking by AR1k" in md and "How AR is computed" in md
    assert "## Each claim against the baseline (AR1k)" in md and "| (d) bottom-up | the top-down pathway matters |" in md
    assert os.path.getsize(os.path.join(out, f"{suite.name}.png")) > 5000
    costs = json.load(open(os.path.join(out, "costs.json")))  # issue 5: cost beside accuracy
    assert costs["c_fpn"]["params_m"] > 1 and costs["c_fpn"]["gflops"] > costs["d_bottom_up"]["gflops"] * 0.9
    assert costs["c_fpn"]["latency_s"] > 0 and costs["c_fpn"]["threads"] >= 1
    assert "| params (M) | GFLOPs (96x96) | latency (s) |" in md
    row = next(line for line in md.splitlines() if line.startswith("| (c) FPN |"))
    assert f"| {costs['c_fpn']['latency_s']:.3f} |" in row
    losses = [final_train_loss(os.path.join(out, "c_fpn", f"seed{s}")) for s in seeds]
    assert all(l > 0 for l in losses) and row.rsplit("|", 2)[1].strip().startswith(f"{sum(losses) / len(losses):.3f}")  # last column
    assert [float(r["train_loss"]) for r in rows if r["row"] == "c_fpn"] == pytest.approx(losses, abs=1e-5)
    # the claims table puts each design's cost beside its gain: GFLOPs and latency over the baseline's
    claim = next(line for line in md.splitlines() if line.startswith("| (d) bottom-up | the top-down"))
    b, c = costs["d_bottom_up"], costs["c_fpn"]
    assert claim.endswith(f"| {b['gflops'] / c['gflops']:.2f}x, {b['latency_s'] / c['latency_s']:.2f}x |")


def test_local_executor_two_rows_two_seeds(tmp_path):
    suite = tiny_suite()
    out = str(tmp_path / "sweep")
    records = run_sweep(suite, seeds=2, executor="local", output=out, opts=TINY, jobs=2, poll_s=0.5)
    assert [(r["row"], r["seed"], r["status"]) for r in records] == [
        ("c_fpn", 0, "done"), ("d_bottom_up", 0, "done"), ("c_fpn", 1, "done"), ("d_bottom_up", 1, "done")]
    check_complete_sweep(out, suite, [0, 1])
    # different seeds, different runs
    assert records[0]["metrics"] != records[2]["metrics"] or records[0]["command"] != records[2]["command"]
    # re-running the same sweep redoes nothing
    before = {r["row"] + str(r["seed"]): os.path.getmtime(os.path.join(out, r["row"], f"seed{r['seed']}", "run.json"))
              for r in records}
    t0 = time.time()
    again = run_sweep(suite, seeds=2, executor="local", output=out, opts=TINY, poll_s=0.5)
    assert time.time() - t0 < 20 and [r["status"] for r in again] == ["done"] * 4
    for r in records:
        assert os.path.getmtime(os.path.join(out, r["row"], f"seed{r['seed']}", "run.json")) == before[r["row"] + str(r["seed"])]
    # other overrides must not be averaged into the same folder
    with pytest.raises(ValueError, match="Use another --output"):
        run_sweep(suite, seeds=2, output=out, opts=TINY + ("SOLVER.BASE_LR", "0.01"))
    # ... nor a row whose definition changed since its runs were made
    changed = Suite(suite.name, suite.title, suite.metrics, suite.headline,
                    (suite.rows[0], Row("d_bottom_up", "(d) bottom-up", "NEON/rpn_d_bottom_up.yaml",
                                        opts=("MODEL.FPN.FUSE_TYPE", "avg"))), baseline="c_fpn")
    with pytest.raises(ValueError, match="row 'd_bottom_up' of .* now defines it as NEON/rpn_d_bottom_up.yaml"):
        run_sweep(changed, seeds=2, output=out, opts=TINY)
    # a person's discussion placed in the folder is carried into report.md; no cost columns when asked
    with open(os.path.join(out, "discussion.md"), "w") as f:
        f.write("Bottom-up matches FPN here because trees need little semantics.\n")
    write_report(out, with_costs=False)
    md = open(os.path.join(out, "report.md")).read()
    assert "## Discussion\n\nBottom-up matches FPN here because trees need little semantics.\n" in md
    assert "GFLOPs" not in md and "| AR100 | AR1k | seeds done | train s / it | final train loss |" in md
    # a row added to the suite since is accepted: it just has no runs yet
    grown = Suite(suite.name, suite.title, suite.metrics, suite.headline,
                  suite.rows + (Row("e_top_down", "(e) top-down", "NEON/rpn_e_top_down.yaml"),), baseline="c_fpn")
    assert SweepFolder(out).update_manifest(grown, TINY, [0], None) == [0, 1]
    assert [r["key"] for r in json.load(open(os.path.join(out, "sweep.json")))["suite"]["rows"]][-1] == "e_top_down"
    # a suite without paper numbers (the beyond suites) is still ranked, by our means alone
    manifest = json.load(open(os.path.join(out, "sweep.json")))
    for r in manifest["suite"]["rows"]:
        r["paper"] = {}
    json.dump(manifest, open(os.path.join(out, "sweep.json"), "w"))
    write_report(out, with_costs=False)
    md = open(os.path.join(out, "report.md")).read()
    means = {r["row"]: r["mean"]["AR1k"] for r in json.load(open(os.path.join(out, "results.json")))["rows"]}
    labels = {"c_fpn": "(c) FPN", "d_bottom_up": "(d) bottom-up"}
    order = sorted(labels, key=lambda k: -means[k])
    assert "- ours:  " + " > ".join(f"{labels[k]} ({means[k]:.1f})" for k in order) + "\n" in md
    assert "No row of this suite has a paper number for AR1k" in md and "(56.3)" not in md


def test_submitit_local_executor(tmp_path):
    pytest.importorskip("submitit")
    suite = tiny_suite("tiny_submitit")
    out = str(tmp_path / "sweep")
    records = run_sweep(suite, seeds=2, executor="submitit-local", output=out, opts=TINY, jobs=2, poll_s=0.5)
    assert [r["status"] for r in records] == ["done"] * 4
    assert os.path.isdir(os.path.join(out, "submitit"))  # submitit's own job folders (logs, pickles)
    check_complete_sweep(out, suite, [0, 1])


def test_failed_run_is_recorded_and_reported_and_others_go_on(tmp_path):
    suite = tiny_suite("tiny_failing", bad_row=True)
    out = str(tmp_path / "sweep")
    records = run_sweep(suite, seeds=1, output=out, opts=TINY, poll_s=0.5)
    good, bad = records
    assert good["status"] == "done"
    assert bad["status"] == "failed" and bad["returncode"] != 0
    assert "build_fpn_ful_backbone" in bad["error"] and "build_fpn_full_backbone" in bad["error"], bad["error"]
    assert run_status(os.path.join(out, "bad", "seed0"))["status"] == "failed"
    md = open(os.path.join(out, "report.md")).read()
    assert "## Runs not done" in md and "| bad | 0 | failed |" in md
    assert "0 (1 failed)" in md
    rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
    assert rows[1]["status"] == "failed" and "build_fpn_ful_backbone" in rows[1]["error"]
    # the CLI exits 1 when a run failed, and names it
    proc = subprocess.run([sys.executable, "-m", "fpn_variants.sweep", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--executor" in proc.stdout


def test_killed_sweep_loses_nothing_and_resumes_the_interrupted_run(tmp_path):
    suite = tiny_suite("tiny_kill")
    suite_file = tmp_path / "suite.json"
    suite_file.write_text(json.dumps(suite.to_dict()))
    out = str(tmp_path / "sweep")
    longer = list(TINY)
    longer[longer.index("SOLVER.MAX_ITER") + 1] = "12"
    longer += ["SOLVER.CHECKPOINT_PERIOD", "4"]
    cmd = [sys.executable, "-m", "fpn_variants.sweep", str(suite_file), "--seeds", "1", "--output", out, *longer]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first, second = os.path.join(out, "c_fpn", "seed0"), os.path.join(out, "d_bottom_up", "seed0")
    deadline = time.time() + 300
    tag = os.path.join(second, "last_checkpoint")  # written after the checkpoint file itself
    while time.time() < deadline and not os.path.isfile(tag):
        time.sleep(0.2)
    assert os.path.isfile(tag), "second run never checkpointed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)
    assert run_status(first)["status"] == "done"
    assert run_status(second) is None  # interrupted: no record, so the next sweep resumes it
    done_mtime = os.path.getmtime(os.path.join(first, "run.json"))
    with open(tag) as f:
        assert f.read().strip() == "model_0000003.pth"
    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert os.path.getmtime(os.path.join(first, "run.json")) == done_mtime  # finished run skipped
    assert run_status(second)["status"] == "done"
    log = open(os.path.join(second, "log.txt")).read()
    assert "Starting training from iteration 0" in log and "Starting training from iteration 4" in log
    merged, _ = read_metrics(os.path.join(second, "metrics.json"))
    assert max(it for it, d in merged.items() if "total_loss" in d) == 11
    rec = run_status(second)  # the run record holds the final metrics, speed and loss of metrics.json
    assert {k: rec[k] for k in ("metrics", "s_per_it", "train_loss")} == run_summary(second, [m.key for m in AR])


def test_metrics_json_read_robustly(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    lines = [
        {"iteration": 19, "total_loss": 1.0},
        {"iteration": 39, "total_loss": 0.5},
        {"iteration": 19, "total_loss": 0.9},            # resumed run appends iteration 19 again
        {"iteration": 39, "total_loss": 0.4, "bbox/AP": 10.0},
        {"iteration": 39, "bbox/AP": 12.5},              # evaluation-only line: last value counts
        {"iteration": 40, "bbox/APl": float("nan")},
    ]
    text = "\n".join(json.dumps(l) for l in lines) + '\n{"iteration": 41, "total_lo'  # killed mid-write
    (d / "metrics.json").write_text(text)
    merged, skipped = read_metrics(str(d / "metrics.json"))
    assert skipped == 1 and merged[19] == {"total_loss": 0.9} and merged[39]["bbox/AP"] == 12.5
    fm = run_summary(str(d), ["bbox/AP", "total_loss", "bbox/APl", "bbox/APs"])["metrics"]
    assert fm["bbox/AP"] == 12.5 and fm["total_loss"] == 0.4 and fm["bbox/APl"] != fm["bbox/APl"]
    assert "bbox/APs" not in fm
    assert run_summary(str(tmp_path / "nowhere"), ["bbox/AP"])["metrics"] == {}


def test_training_speed_survives_resume_and_re_evaluation(tmp_path):
    """train s / it of the report: the median of the logged iteration times over all attempts, so an
    attempt that only re-evaluates (no training lines) does not change it."""
    d = tmp_path / "run"
    d.mkdir()
    lines = [{"iteration": 19, "time": 2.0}, {"iteration": 39, "time": 4.0}, {"iteration": 59, "time": 3.0},
             {"iteration": 59, "box_proposals/AR@1000": 40.0},
             {"iteration": 39, "time": 5.0},  # a resumed attempt re-logs iteration 39: the later value counts
             {"iteration": 60, "box_proposals/AR@1000": 41.0}]  # a re-evaluation-only attempt
    (d / "metrics.json").write_text("\n".join(json.dumps(l) for l in lines) + "\n")
    assert run_summary(str(d), [])["s_per_it"] == 3.0  # median of 2.0, 5.0, 3.0
    assert run_summary(str(tmp_path / "nowhere"), [])["s_per_it"] is None


def test_final_train_loss_averages_the_last_fifth_of_training(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    lines = [{"iteration": it, "total_loss": loss} for it, loss in ((19, 0.9), (99, 0.5), (159, 0.3), (179, 0.2), (199, 0.1))]
    lines += [{"iteration": 179, "total_loss": 0.25},  # a resumed attempt re-logs 179: the later value counts
              {"iteration": 200, "box_proposals/AR@1000": 41.0}]  # evaluation lines carry no loss
    (d / "metrics.json").write_text("\n".join(json.dumps(l) for l in lines) + "\n")
    # lines at 179 and 199 cover iterations 160-199 (each a median over its 20); 159's covers 140-159
    assert final_train_loss(str(d)) == pytest.approx((0.25 + 0.1) / 2)
    assert final_train_loss(str(tmp_path / "nowhere")) is None
    assert run_summary(str(d), ["box_proposals/AR@1000"]) == dict(
        metrics={"box_proposals/AR@1000": 41.0}, s_per_it=None, train_loss=pytest.approx(0.175))
    assert run_summary(str(tmp_path / "nowhere"), ["x"]) == dict(metrics={}, s_per_it=None, train_loss=None)


def test_ranking_agreement_marks_swaps_within_seed_spread():
    rows = [
        dict(row="a", mean={"AP": 30.0}, std={"AP": 0.5}, paper={"AP": 31.6}),
        dict(row="b", mean={"AP": 30.4}, std={"AP": 0.5}, paper={"AP": 28.0}),
        dict(row="c", mean={"AP": 35.0}, std={"AP": 0.1}, paper={"AP": 33.9}),
    ]
    r = ranking_agreement(rows, "AP")
    assert r["ours"] == ["c", "b", "a"] and r["paper"] == ["c", "a", "b"]
    assert r["concordant"] == 2 and r["discordant"] == 1 and r["kendall_tau"] == pytest.approx(1 / 3)
    (s,) = r["swapped"]
    assert s["paper_higher"] == "a" and s["ours_diff"] == pytest.approx(-0.4) and s["within_spread"]


def test_suites_are_consistent_and_their_configs_exist():
    assert {"table1", "table2", "table3", "table1-neon", "table2-neon", "table3-neon"} <= set(SUITES)
    for suite in SUITES.values():
        for row in suite.rows:
            assert os.path.isfile(os.path.join(config_root(), row.config)), (suite.name, row.config)
        if suite.proposals:
            assert os.path.isfile(os.path.join(config_root(), suite.proposals))
    t1 = get_suite("table1")
    assert [r.paper.get("AR1k") for r in t1.rows[:6]] == [48.3, 44.9, 56.3, 49.5, 46.1, 51.3]
    assert get_suite("table3-neon").rows[2].paper["AP"] == 33.9
    # seed-major plan: every row of seed 0 before seed 1
    specs = plan_runs(get_suite("table3-neon"), [0, 1], "/tmp/x")
    assert [(s.row, s.seed) for s in specs][:4] == [("a_C4", 0), ("b_C5", 0), ("c_fpn", 0), ("a_C4", 1)]
    assert specs[0].command[-4:] == ["OUTPUT_DIR", "/tmp/x/a_C4/seed0", "SEED", "0"]


def test_bad_sweep_input_gets_clear_errors(tmp_path):
    with pytest.raises(KeyError, match="table1-neon"):
        get_suite("table1-neo")
    with pytest.raises(ValueError, match="executor 'pbs' is not valid"):
        run_sweep(tiny_suite(), executor="pbs", output=str(tmp_path))
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        run_sweep(tiny_suite(), output=str(tmp_path), opts=("SOLVER.MAX_ITER",))
    with pytest.raises(ValueError, match="headline"):
        Suite("x", "x", AR, "AP", tiny_suite().rows)
    with pytest.raises(ValueError, match="unknown \\['colour'\\]"):
        Suite.from_dict({**tiny_suite().to_dict(), "colour": 1})
    assert not os.path.exists(os.path.join(tmp_path, "sweep.json"))  # nothing written for a refused sweep
    with pytest.raises(FileNotFoundError, match="no sweep.json"):
        write_report(str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "fpn_variants.sweep", "tabel3"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "table3" in proc.stderr


def test_fast_rcnn_suite_trains_on_the_dumped_proposals_of_one_rpn(tmp_path):
    """Table 2's protocol: the proposals RPN is trained once, its proposals dumped in Detectron2's
    format, and every Fast R-CNN row reads the same files."""
    import pickle
    import shutil

    from fpn_variants.experiments.runner import proposal_paths, sha256_file

    AP = (Metric("bbox/AP50", "AP@0.5"), Metric("bbox/AP", "AP"))
    suite = Suite("tiny_table2", "tiny Fast R-CNN", AP, "AP", (
        Row("b_C5", "(b) C5", "NEON/fast_rcnn_b_C5.yaml", paper={"AP": 28.8}),
        Row("c_fpn", "(c) FPN", "NEON/fast_rcnn_c_fpn.yaml", paper={"AP": 33.9}),
    ), source="Table 2", proposals="NEON/rpn_c_fpn.yaml")
    out = str(tmp_path / "sweep")
    records = run_sweep(suite, seeds=1, output=out, opts=TINY + ("MODEL.ROI_BOX_HEAD.FC_DIM", "64"), poll_s=0.5)
    assert [r["status"] for r in records] == ["done", "done"], [r.get("error") for r in records]
    prop = run_status(os.path.join(out, "proposals"))
    assert set(prop["proposal_files"]) == {"neon_trees_train", "neon_trees_val"}
    assert prop["proposal_files"]["neon_trees_val"] == "proposals_neon_trees_val.pkl"  # named in its folder
    files = proposal_paths(prop, os.path.join(out, "proposals"))
    assert prop["proposal_sha256"] == {d: sha256_file(p) for d, p in files.items()}
    with open(files["neon_trees_val"], "rb") as f:
        val = pickle.load(f)
    assert len(val["ids"]) == 42 and val["bbox_mode"] == 0
    assert all(b.ndim == 2 and b.shape[1] == 4 and len(b) == len(s) for b, s in zip(val["boxes"], val["objectness_logits"]))
    for r in records:
        run_cfg = open(os.path.join(out, r["row"], "seed0", "config.yaml")).read()
        assert files["neon_trees_train"] in run_cfg and files["neon_trees_val"] in run_cfg
        assert "PrecomputedProposals" in run_cfg
    assert "| (c) FPN |" in open(os.path.join(out, "report.md")).read()

    # Published, the folder keeps the proposals its rows read (no checkpoint); a copy elsewhere resumes from
    # it: nothing retrained, and more seeds would read the same files.
    pub = str(tmp_path / "published")
    written = SweepFolder(out).publish(pub)
    assert "proposals/proposals_neon_trees_train.pkl" in written and not any(w.endswith(".pth") for w in written)
    moved = str(tmp_path / "elsewhere")
    shutil.copytree(pub, moved)
    again = run_sweep(suite, seeds=1, output=moved, opts=TINY + ("MODEL.ROI_BOX_HEAD.FC_DIM", "64"), poll_s=0.5,
                      report=False)
    assert [r["seconds"] for r in again] == [r["seconds"] for r in records]  # the published records, not reruns
    assert not os.path.exists(os.path.join(moved, "proposals", "model_final.pth"))
    # A proposal file that is not the one the runs read is refused, naming it and the pinned digest.
    with open(os.path.join(moved, "proposals", "proposals_neon_trees_val.pkl"), "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match=r"proposals_neon_trees_val\.pkl: sha256 .* differs from the " + prop["proposal_sha256"]["neon_trees_val"]):
        run_sweep(suite, seeds=1, output=moved, opts=TINY + ("MODEL.ROI_BOX_HEAD.FC_DIM", "64"), poll_s=0.5, report=False)
    # Gone altogether (and no checkpoint to dump them again): the stage fails naming them; nothing retrained.
    for d in files:
        os.remove(os.path.join(moved, "proposals", f"proposals_{d}.pkl"))
    gone = run_sweep(suite, seeds=2, output=moved, opts=TINY + ("MODEL.ROI_BOX_HEAD.FC_DIM", "64"), poll_s=0.5,
                     report=False)
    assert [r["status"] for r in gone] == ["done", "done", "failed", "failed"]
    assert "model_final.pth is gone" in gone[2]["error"] and "proposals_neon_trees_val.pkl" in gone[2]["error"]
    assert run_status(os.path.join(moved, "proposals"))["status"] == "done"  # the stage's record kept as it was


@pytest.mark.parametrize("name", ["beyond-neon", "beyond"])
def test_every_beyond_row_builds_its_pyramid_with_its_opts(name):
    """A typo in a row's opts would otherwise surface only hours into a sweep."""
    from detectron2.config import get_cfg
    import torch
    from detectron2.modeling import build_backbone

    from fpn_variants.config import add_fpn_variants_config, validate_config

    suite = get_suite(name)
    d_row = {"beyond-neon": "d256", "beyond": "d128"}[name]
    assert {"fpn", d_row, "fuse_avg", "fuse_concat", "fuse_weighted", "bilinear", "relu", "gn", "bn",
            "residual2", "p6_c5", "panet", "bifpn"} == {r.key for r in suite.rows}
    dumps = {}
    for row in suite.rows:
        cfg = get_cfg()
        add_fpn_variants_config(cfg)
        cfg.merge_from_file(os.path.join(config_root(), row.config))
        cfg.merge_from_list(list(row.opts))
        cfg.MODEL.DEVICE = "cpu"
        validate_config(cfg)
        net = build_backbone(cfg)
        assert sorted(net.output_shape()) == ["p2", "p3", "p4", "p5", "p6"], row.key
        # no row may silently be the baseline again (as COCO's "d = 256" once was: its baseline has d = 256)
        dump = cfg.dump()
        assert dump not in dumps.values(), (row.key, [k for k, v in dumps.items() if v == dump])
        dumps[row.key] = dump
        assert {s.channels for s in net.output_shape().values()} == {cfg.MODEL.FPN.OUT_CHANNELS}, row.key
        # norm layers in the pyramid's own layers, not the bottom-up pathway (which may use BN itself)
        norms = {type(m) for n, m in net.named_modules() if not n.startswith("bottom_up")
                 and isinstance(m, (torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm))}
        bn = torch.nn.BatchNorm2d if name == "beyond-neon" else torch.nn.SyncBatchNorm  # COCO: 2 images / GPU
        assert norms == {"gn": {torch.nn.GroupNorm}, "bn": {bn}}.get(row.key, set()), (row.key, norms)


def test_claims_against_the_baseline_are_resolved_only_beyond_the_seed_spread():
    from fpn_variants.experiments.report import versus_baseline

    suite = get_suite("beyond-neon")
    assert suite.baseline == "fpn" and all(r.claim for r in suite.rows)
    rows = [dict(row=r.key, label=r.label, mean={"AR1k": None}, std={"AR1k": None}) for r in suite.rows]
    by = {r["row"]: r for r in rows}
    by["fpn"].update(mean={"AR1k": 40.0}, std={"AR1k": 0.3})
    by["panet"].update(mean={"AR1k": 41.0}, std={"AR1k": 0.4})      # +1.0 > spread 0.5: resolved
    by["relu"].update(mean={"AR1k": 39.8}, std={"AR1k": 0.4})       # -0.2 < 0.5: not resolved
    by["gn"].update(mean={"AR1k": 42.0}, std={"AR1k": None})        # one seed: cannot say
    got = {c["row"]: c for c in versus_baseline(rows, suite)}
    assert "fpn" not in got and len(got) == len(suite.rows) - 1
    assert got["panet"]["diff"] == pytest.approx(1.0) and got["panet"]["spread"] == pytest.approx(0.5) and got["panet"]["resolved"]
    assert got["relu"]["resolved"] is False and got["gn"]["resolved"] is None and got["bifpn"]["diff"] is None


def test_atomic_writes_get_the_mode_a_plain_open_would(tmp_path):
    from fpn_variants.fileio import write_text_atomic

    plain, atomic = tmp_path / "plain.txt", tmp_path / "atomic.txt"
    plain.write_text("x")
    write_text_atomic(str(atomic), "x")
    assert atomic.read_text() == "x"
    assert (atomic.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_more_seeds_for_some_rows_only(tmp_path):
    """--rows: a second call adds seeds to one row; the other row keeps its runs, the report shows both."""
    suite = tiny_suite("tiny_rows")
    out = str(tmp_path / "sweep")
    with pytest.raises(KeyError, match=r"has no row \['e_top_down'\]; its rows: c_fpn, d_bottom_up"):
        run_sweep(suite, seeds=1, output=out, opts=TINY, rows=["e_top_down"])
    assert not os.path.exists(os.path.join(out, "sweep.json"))
    run_sweep(suite, seeds=1, output=out, opts=TINY, poll_s=0.5, report=False)
    records = run_sweep(suite, seeds=2, output=out, opts=TINY, poll_s=0.5, rows=["c_fpn"])
    assert [(r["row"], r["seed"]) for r in records] == [("c_fpn", 0), ("c_fpn", 1)]
    assert not os.path.exists(os.path.join(out, "d_bottom_up", "seed1"))
    runs = [(r["row"], r["seed"], r["status"]) for r in csv.DictReader(open(os.path.join(out, "results.csv")))]
    assert runs == [("c_fpn", "0", "done"), ("c_fpn", "1", "done"), ("d_bottom_up", "0", "done")]
    assert "Runs not done" not in open(os.path.join(out, "report.md")).read()  # d_bottom_up was never asked seed 1
    assert json.load(open(os.path.join(out, "sweep.json")))["row_seeds"] == {"c_fpn": [0, 1], "d_bottom_up": [0]}


def test_a_committed_folder_without_run_folders_is_resumed_not_rerun(tmp_path):
    """A result folder committed before records were published keeps only sweep.json and results.json:
    a sweep into it adopts those runs (run.json from results.json) and runs only what is missing."""
    import shutil

    suite = tiny_suite("tiny_adopt")
    out = str(tmp_path / "sweep")
    run_sweep(suite, seeds=1, output=out, opts=TINY, poll_s=0.5)
    old = {(r["row"], r["seed"]): r for r in json.load(open(os.path.join(out, "results.json")))["runs"]}
    committed = str(tmp_path / "committed")
    os.makedirs(committed)
    for name in ("sweep.json", "results.json"):
        shutil.copy(os.path.join(out, name), committed)
    folder = SweepFolder(committed)
    assert [folder.status("c_fpn", 0), folder.status("c_fpn", 1)] == ["done", "todo"]  # what --dry-run prints
    assert not os.path.exists(os.path.join(committed, "c_fpn"))  # status writes nothing
    records = run_sweep(suite, seeds=2, output=committed, opts=TINY, poll_s=0.5, rows=["c_fpn"])
    assert [(r["row"], r["seed"], r["status"]) for r in records] == [("c_fpn", 0, "done"), ("c_fpn", 1, "done")]
    assert records[0]["adopted"] == "results.json" and "adopted" not in records[1]
    assert os.listdir(os.path.join(committed, "c_fpn", "seed0")) == ["run.json"]  # not trained again
    assert os.path.isfile(os.path.join(committed, "c_fpn", "seed1", "metrics.json"))
    new = {(r["row"], r["seed"]): r for r in json.load(open(os.path.join(committed, "results.json")))["runs"]}
    for key in (("c_fpn", 0), ("d_bottom_up", 0)):
        assert new[key]["metrics"] == pytest.approx(old[key]["metrics"]) and new[key]["seconds"] == old[key]["seconds"]
    assert ("c_fpn", 1) in new and ("d_bottom_up", 1) not in new


def test_a_time_limit_starts_no_run_that_would_end_after_it(tmp_path):
    """--time-limit-min: the first run starts (no run done to judge by), the next ones would end after
    the limit, so they are left unstarted (None), the command exits 3 and names them; a second call
    judges by the run done (its seconds) and starts nothing; the report lists them as not finished."""
    from fpn_variants.experiments.sweep import cli

    suite = tiny_suite("tiny_limit")
    suite_file = tmp_path / "tiny_limit.json"
    suite_file.write_text(json.dumps(suite.to_dict()))
    out = str(tmp_path / "sweep")
    with pytest.raises(ValueError, match="time limit must be > 0 minutes; got 0"):
        run_sweep(suite, seeds=1, output=out, opts=TINY, time_limit_min=0)
    # 6 s: the set-up takes < 1 s, one tiny run ~10 s (and had it taken 5, the next would end after 6)
    assert cli([str(suite_file), "--seeds", "2", "--output", out, "--time-limit-min", "0.1", "--no-report", *TINY]) == 3
    assert run_status(os.path.join(out, "c_fpn", "seed0"))["status"] == "done"
    assert not [r for r in ("d_bottom_up/seed0", "c_fpn/seed1", "d_bottom_up/seed1") if os.path.exists(os.path.join(out, r))]
    took = run_status(os.path.join(out, "c_fpn", "seed0"))["seconds"]
    records = run_sweep(suite, seeds=2, output=out, opts=TINY, poll_s=0.5, time_limit_min=took / 60 / 2)
    assert [r and r["status"] for r in records] == ["done", None, None, None]
    runs = [(r["row"], r["seed"], r["status"]) for r in csv.DictReader(open(os.path.join(out, "results.csv")))]
    assert runs == [("c_fpn", "0", "done"), ("c_fpn", "1", "not finished"), ("d_bottom_up", "0", "not finished"),
                    ("d_bottom_up", "1", "not finished")]


def test_the_library_never_imports_the_experiment_tooling():
    """Issue 20's layering: modeling, config, data, evaluation, engine, fileio, ... import nothing of
    fpn_variants.experiments (the ``python -m fpn_variants.sweep`` / ``report`` shims are its commands)."""
    import ast

    pkg = os.path.join(REPO, "fpn_variants")
    commands = {os.path.join(pkg, "sweep.py"), os.path.join(pkg, "report.py")}
    offenders = []
    for root, _, files in os.walk(pkg):
        if os.path.join(pkg, "experiments") in root:
            continue
        for name in files:
            path = os.path.join(root, name)
            if not name.endswith(".py") or path in commands:
                continue
            for node in ast.walk(ast.parse(open(path).read())):
                mods = []
                if isinstance(node, ast.ImportFrom):
                    mods = [("." * node.level) + (node.module or "")] + [a.name for a in node.names]
                elif isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                if any("experiments" in m.split(".") for m in mods):
                    offenders.append(f"{os.path.relpath(path, REPO)}:{node.lineno}")
    assert not offenders, offenders
    code = ("import sys, fpn_variants, fpn_variants.engine, fpn_variants.train_net, fpn_variants.evaluation, "
            "fpn_variants.proposals, fpn_variants.visualize, fpn_variants.data.neon; "
            "assert not [m for m in sys.modules if m.startswith('fpn_variants.experiments')], sorted(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("name", ["beyond-neon", "beyond-neon-2x"])
def test_committed_result_folders_regenerate_byte_for_byte(name, tmp_path, monkeypatch):
    """A committed result folder keeps no run folders: its report is rendered from the run records of
    its results.json (the costs are the folder's costs.json, measured when the runs were made)."""
    import shutil

    import fpn_variants.experiments.report as report

    src = os.path.join(REPO, "docs", "results", name)
    dst = str(tmp_path / name)
    shutil.copytree(src, dst)
    committed_costs = json.load(open(os.path.join(src, "costs.json")))
    monkeypatch.setattr(report, "row_costs", lambda sweep_dir, suite, opts: committed_costs)
    paths = report.write_report(dst)
    for key in ("results.csv", "results.json", "report.md", "png"):
        with open(paths[key], "rb") as a, open(os.path.join(src, os.path.basename(paths[key])), "rb") as b:
            assert a.read() == b.read(), f"{name}/{os.path.basename(paths[key])} differs"


def test_a_suite_of_ones_own_is_not_attributed_to_the_fpn_paper(tmp_path):
    """The report's source line and plot label come from the suite: a JSON suite without a citation
    (e.g. the AMP suites) names its own source, not "Paper: Lin et al."."""
    from fpn_variants.experiments.report import _header
    from fpn_variants.experiments.sweep import load_suite

    amp = load_suite(os.path.join(REPO, "docs", "results", "amp", "amp-rpn.json"))
    head = "\n".join(_header(dict(suite=amp, commands=[], seeds=[0], opts=[])))
    assert "Source: issue 17 (mixed precision)." in head and "Lin et al." not in head
    t1 = "\n".join(_header(dict(suite=get_suite("table1-neon"), commands=[], seeds=[0], opts=[])))
    assert "Paper: Lin et al., FPN, CVPR 2017, Table 1." in t1
    # the cell legend names the paper's number only where the suite has one
    assert "the paper's number in parentheses" in t1 and "the paper's number" not in head
    assert get_suite("table1").dataset == "COCO" and amp.dataset == ""


def test_every_necks_row_builds_its_neck_on_the_pretrained_recipe():
    """issue 19's neck comparison: each row is the pretrained demo recipe with one builder changed, and
    builds (Lite2 with the packaged weights, GN in the pyramid) with the preset's published settings."""
    from detectron2.modeling import build_backbone

    from fpn_variants.config import load_config
    from fpn_variants.modeling import PRESETS

    suite = get_suite("necks-neon-pretrained")
    assert suite.baseline == "fpn" and suite.citation == "" and len(suite.rows) == 9
    for row in suite.rows:
        cfg = load_config(os.path.join(config_root(), row.config), list(row.opts))
        cfg.MODEL.DEVICE = "cpu"
        net = build_backbone(cfg)
        preset = row.opts[1][len("build_"):-len("_backbone")]
        assert sorted(net.output_shape()) == ["p2", "p3", "p4", "p5", "p6"], row.key
        assert net.options.paths == PRESETS[preset]["paths"] and net.options.norm == "GN", row.key
        for key, value in PRESETS[preset].defaults.items():
            assert getattr(net.options, key) == value, row.key
        # every row but the simple pyramid from C4 reads C2..C5; that one's bottom-up stops at C4
        c4_only = row.key == "simple_c4"
        assert list(net.in_features) == ["res2", "res3", "res4"] + ([] if c4_only else ["res5"]), row.key
        assert sorted(net.bottom_up.output_shape()) == sorted(net.in_features), row.key


@pytest.mark.parametrize("table", ["table1", "table2", "table3"])
def test_every_pretrained_table_row_builds_on_the_pretrained_bottom_up(table):
    """issue 16's second regime: each row of the -neon suite, with the suite's overrides giving every
    run (Table 2's proposals RPN too) Lite2 with its packaged ImageNet weights; the C4 rows' RoI head is
    Lite2's own pretrained stride-32 stages."""
    import torch
    from detectron2.modeling import build_model

    from fpn_variants.config import load_config
    from fpn_variants.modeling.timm_backbone import TimmBottomUp, create_timm_classifier
    from fpn_variants.experiments.sweep import proposals_spec

    scratch, suite = get_suite(f"{table}-neon"), get_suite(f"{table}-neon-pretrained")
    assert [(r.key, r.config, r.opts, r.paper) for r in suite.rows] == [
        (r.key, r.config, r.opts, r.paper) for r in scratch.rows]
    assert suite.opts == PRETRAINED_BOTTOM_UP and scratch.opts == ()
    specs = plan_runs(suite, [0], "/tmp/x")
    assert all(s.command[s.command.index("--resume") + 1:][:len(suite.opts)] == list(suite.opts) for s in specs)
    configs = [(s.config_file, s.row_opts) for s in specs]
    if suite.proposals:
        prop = proposals_spec(suite, "/tmp/x")
        assert prop.run_dir == "/tmp/x/proposals" and prop.row_opts == suite.opts
        configs.append((prop.config_file, prop.row_opts))
    ref = list(create_timm_classifier("tf_efficientnet_lite2", "package").state_dict().values())
    for config_file, opts in configs:
        cfg = load_config(config_file, list(opts))
        cfg.MODEL.DEVICE = "cpu"
        model = build_model(cfg)
        bottom_up = [m for m in model.backbone.modules() if isinstance(m, TimmBottomUp)]
        assert len(bottom_up) == 1, config_file
        # the packaged ImageNet weights are loaded (one stage-3 tensor compared with the package's)
        sd = bottom_up[0].state_dict()
        key = next(k for k in sd if k.endswith("weight") and sd[k].ndim == 4 and ".2." in k)
        assert any(v.shape == sd[key].shape and torch.equal(sd[key], v) for v in ref), config_file
        if cfg.MODEL.ROI_HEADS.NAME.endswith("Conv5ROIHeads"):
            head = model.roi_heads.res5.state_dict()  # conv5 = Lite2's own stride-32 stages, pretrained
            w = next(v for v in head.values() if v.ndim == 4)
            assert any(v.shape == w.shape and torch.equal(w, v) for v in ref), config_file


def test_the_control_regime_trains_lite2_from_its_random_init():
    """issue 16's gap-test control: the pretrained recipe without the ImageNet weights; Lite2's BN layers
    are ordinary trainable BN and no stage is frozen (a frozen BN of a random init normalises nothing)."""
    import torch
    from detectron2.modeling import build_model

    from fpn_variants.config import load_config
    from fpn_variants.experiments.suites import LITE2_FROM_SCRATCH
    from fpn_variants.modeling.timm_backbone import TimmBottomUp, create_timm_classifier

    suite = get_suite("table1-neon-lite2-scratch")
    assert suite.opts == LITE2_FROM_SCRATCH and suite.folds == 4
    row = next(r for r in suite.rows if r.key == "c_fpn")
    cfg = load_config(os.path.join(config_root(), row.config), list(suite.opts))
    cfg.MODEL.DEVICE = "cpu"
    bottom_up = next(m for m in build_model(cfg).backbone.modules() if isinstance(m, TimmBottomUp))
    ref = [v for v in create_timm_classifier("tf_efficientnet_lite2", "package").state_dict().values() if v.ndim == 4]
    convs = [v for v in bottom_up.state_dict().values() if v.ndim == 4]
    assert not any(w.shape == r.shape and torch.equal(w, r) for w in convs for r in ref)  # no ImageNet weights
    assert all(p.requires_grad for p in bottom_up.parameters())  # FREEZE_AT 0: the stem trains too
    bns = [m for m in bottom_up.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.weight.requires_grad and m.track_running_stats for m in bns)


def test_the_3x_control_is_the_control_on_three_times_the_schedule():
    """The longer control differs from the control in the schedule only: 600 iterations, LR x0.1 at 480
    (the ablation recipe's 200 / 160, tripled), with the same warm-up and checkpoint period."""
    from fpn_variants.config import load_config
    from fpn_variants.experiments.suites import LITE2_FROM_SCRATCH, LITE2_FROM_SCRATCH_3X

    short, long = get_suite("table1-neon-lite2-scratch"), get_suite("table1-neon-lite2-scratch-3x")
    assert long.opts == LITE2_FROM_SCRATCH_3X and LITE2_FROM_SCRATCH_3X[:len(LITE2_FROM_SCRATCH)] == LITE2_FROM_SCRATCH
    assert [(r.key, r.config) for r in long.rows] == [(r.key, r.config) for r in short.rows] and long.folds == 4
    row = next(r for r in long.rows if r.key == "c_fpn")
    a = load_config(os.path.join(config_root(), row.config), list(short.opts))
    b = load_config(os.path.join(config_root(), row.config), list(long.opts))
    assert (a.SOLVER.MAX_ITER, tuple(a.SOLVER.STEPS)) == (200, (160,))
    assert (b.SOLVER.MAX_ITER, tuple(b.SOLVER.STEPS)) == (600, (480,))
    b.SOLVER.MAX_ITER, b.SOLVER.STEPS = a.SOLVER.MAX_ITER, a.SOLVER.STEPS
    assert b.dump() == a.dump()  # nothing else changes


def test_the_pretrained_regime_is_the_pretrained_demo_recipe():
    """PRETRAINED_BOTTOM_UP over the scratch base gives every key the value of the pretrained demo recipe
    (configs/NEON/faster_rcnn_lite2_FPN_cpu.yaml), so the two cannot drift apart."""
    from fpn_variants.config import load_config

    base = load_config(os.path.join(config_root(), "NEON/Base-NEON-CPU.yaml"), list(PRETRAINED_BOTTOM_UP))
    demo = load_config(os.path.join(config_root(), "NEON/faster_rcnn_lite2_FPN_cpu.yaml"), [])
    keys = PRETRAINED_BOTTOM_UP[::2]
    get = lambda cfg, k: [cfg := getattr(cfg, p) for p in k.split(".")][-1]
    assert {k: get(base, k) for k in keys} == {k: get(demo, k) for k in keys}
    differ = [k for k in ("MODEL.BACKBONE.NAME", "SOLVER.MAX_ITER", "SOLVER.BASE_LR", "MODEL.FPN.OUT_CHANNELS",
                          "INPUT.MIN_SIZE_TRAIN") if get(base, k) != get(demo, k)]
    assert differ == [], differ


def test_data_folds_are_a_sweep_axis(tmp_path):
    """issue 16: --folds runs rows on the data's other region folds; the default fold's runs are the
    plain ones (asked for by number or not, run once), each run records its fold, the report shows it."""
    from fpn_variants.data.neon import dataset_name
    from fpn_variants.experiments.suites import NEON_FOLDS

    assert get_suite("table1-neon").folds == 4 and get_suite("table2-neon-pretrained").default_fold == 3
    assert get_suite("table1-neon").fold_overrides(1) == (
        "DATASETS.TRAIN", repr((dataset_name("train", 1),)), "DATASETS.TEST", repr((dataset_name("val", 1),)))
    suite = Suite("tiny_folds", "tiny", AR, "AR1k", tiny_suite().rows, **NEON_FOLDS)
    out = str(tmp_path / "sweep")
    with pytest.raises(ValueError, match="fold 4 is not valid for suite 'tiny_folds'; valid: 0..3"):
        run_sweep(suite, seeds=1, output=out, opts=TINY, folds=[4])
    with pytest.raises(ValueError, match="has no data folds"):
        run_sweep(tiny_suite(), seeds=1, output=out, opts=TINY, folds=[0])
    assert not os.path.exists(os.path.join(out, "sweep.json"))
    run_sweep(suite, seeds=1, output=out, opts=TINY, poll_s=0.5, report=False)  # the default fold, as always
    records = run_sweep(suite, seeds=1, output=out, opts=TINY, poll_s=0.5, folds=[3, 0], rows=["c_fpn"])
    assert [(r["row"], r.get("fold"), r["seed"]) for r in records] == [("c_fpn", None, 0), ("c_fpn", 0, 0)]
    fold0 = os.path.join(out, "c_fpn", "fold0", "seed0")
    assert "neon_trees_val_f0" in open(os.path.join(fold0, "config.yaml")).read()
    assert "neon_trees_val_f0" not in open(os.path.join(out, "c_fpn", "seed0", "config.yaml")).read()
    assert json.load(open(os.path.join(out, "sweep.json")))["fold_seeds"] == {"0": {"c_fpn": [0], "d_bottom_up": []}}
    runs = [(r["row"], r["fold"], r["seed"], r["status"]) for r in csv.DictReader(open(os.path.join(out, "results.csv")))]
    assert runs == [("c_fpn", "3", "0", "done"), ("c_fpn", "0", "0", "done"), ("d_bottom_up", "3", "0", "done")]
    res = json.load(open(os.path.join(out, "results.json")))
    # the table compares rows on the folds every row has runs on (here the default one): c_fpn's fold-0 run
    # is counted apart and shown in the per-fold table, not mixed into a mean beside d_bottom_up's
    by = {r["row"]: r for r in res["rows"]}
    assert {k: (r["n_done"], r.get("n_other_folds", 0)) for k, r in by.items()} == {"c_fpn": (1, 1), "d_bottom_up": (1, 0)}
    default_c = next(r for r in res["runs"] if r["row"] == "c_fpn" and r.get("fold") is None)["metrics"]["AR1k"]
    assert by["c_fpn"]["mean"]["AR1k"] == pytest.approx(default_c)
    md = open(os.path.join(out, "report.md")).read()
    assert "Data folds: the default fold (3) and folds [0]" in md and "over its runs on fold 3," in md
    assert "| 1 (+1 on other folds) |" in md and "## Per data fold (AR1k)" in md
    fold_line = next(line for line in md.splitlines() if line.startswith("| (c)") and "(1) |" in line)
    assert fold_line.count("(1)") == 2  # one run on fold 0, one on fold 3 (default)
    # 42 val tiles in the default fold, another 42-ish in fold 0: the fold-0 run was evaluated on other data
    assert run_status(fold0)["fold"] == 0 and run_status(fold0)["metrics"] != run_status(os.path.join(out, "c_fpn", "seed0"))["metrics"]

    # publishing: the run records (no checkpoints, logs) into a committed folder, which renders the same
    # table and from which the same sweep resumes without re-running anything
    from fpn_variants.experiments.report import cli as report_cli

    dest = str(tmp_path / "docs" / "tiny_folds")
    assert report_cli([out, "--publish", dest]) == 0
    files = sorted(os.path.relpath(os.path.join(r, n), dest) for r, _, ns in os.walk(dest) for n in ns)
    assert not [f for f in files if f.endswith((".pth", "log.txt", "stdout.txt"))]
    assert {"sweep.json", "costs.json", "c_fpn/fold0/seed0/run.json", "c_fpn/seed0/metrics.json",
            "d_bottom_up/seed0/config.yaml"} <= set(files)
    assert open(os.path.join(dest, "results.csv")).read() == open(os.path.join(out, "results.csv")).read()
    again = run_sweep(suite, seeds=1, output=dest, opts=TINY, poll_s=0.5, folds=[3, 0], rows=["c_fpn"])
    assert [r["seconds"] for r in again] == [r["seconds"] for r in records]  # the published records, not new runs
    assert not [n for r, _, ns in os.walk(dest) for n in ns if n.endswith(".pth")]


def test_a_fast_rcnn_suite_dumps_proposals_per_fold():
    """Table 2 on another fold reads the proposals of an RPN trained on that fold, never the default one's."""
    from fpn_variants.experiments.sweep import proposals_spec

    suite = get_suite("table2-neon")
    default, fold1 = proposals_spec(suite, "/tmp/x"), proposals_spec(suite, "/tmp/x", fold=1)
    assert default.run_dir == "/tmp/x/proposals" and default.fold_opts == () and proposals_spec(suite, "/tmp/x", fold=3) == default
    assert fold1.run_dir == "/tmp/x/proposals_fold1" and "('neon_trees_train_f1',)" in fold1.opts
    spec = next(s for s in plan_runs(suite, [0], "/tmp/x", folds=[1]) if s.row == "c_fpn")
    assert spec.run_dir == "/tmp/x/c_fpn/fold1/seed0"
    with pytest.raises(ValueError, match="have no dumped proposals"):
        spec.with_proposals({"neon_trees_train": "a.pkl", "neon_trees_val": "b.pkl"})
    read = spec.with_proposals({"neon_trees_train_f1": "a.pkl", "neon_trees_val_f1": "b.pkl"})
    assert read.proposal_files == (("a.pkl",), ("b.pkl",))


def test_the_cost_of_a_fast_rcnn_row_is_measured_on_random_proposals():
    """Table 2's rows read proposals from their input (no RPN): the cost measurement gives them
    PRECOMPUTED_PROPOSAL_TOPK_TEST random boxes, so the RoI head's cost grows with that number."""
    from fpn_variants.config import load_config
    from fpn_variants.experiments.costs import _random_proposals, model_cost

    import torch

    row = next(r for r in get_suite("table2-neon").rows if r.key == "c_fpn")
    cost = {n: model_cost(load_config(os.path.join(config_root(), row.config),
                                      ["DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST", str(n)])) for n in (100, 1000)}
    assert cost[100]["params_m"] == cost[1000]["params_m"] > 1 and cost[100]["image"] == "200x200"
    assert cost[1000]["gflops"] > cost[100]["gflops"] * 1.5 and cost[1000]["latency_s"] > 0
    p = _random_proposals(200, 50, torch.Generator().manual_seed(0))
    b = p.proposal_boxes.tensor
    assert len(p) == 50 and (b[:, 2:] > b[:, :2]).all() and b.min() >= 0 and b.max() <= 200


def test_publishing_again_keeps_a_newer_discussion_in_the_committed_folder(tmp_path):
    """The resume practice copies the committed folder into the sweep folder (cp -rn), runs, publishes back:
    a discussion edited in the committed folder meanwhile must survive; one edited in the sweep folder
    after the copy is published; the same text either way is simply written."""
    suite = get_suite("table1-neon")
    sweep, dest = str(tmp_path / "sweep"), str(tmp_path / "docs")
    folder = SweepFolder(sweep)
    folder.update_manifest(suite, [], [0], "python -m fpn_variants.sweep table1-neon")
    run_dir = folder.run_dir("c_fpn", 0)
    os.makedirs(run_dir)
    SweepFolder.write_record(run_dir, dict(row="c_fpn", seed=0, status="done", seconds=1.0, s_per_it=1.0,
                                           train_loss=0.5, error=None, metrics={"box_proposals/AR@1000": 50.0}))
    mine, theirs = os.path.join(sweep, "discussion.md"), os.path.join(dest, "discussion.md")

    def write(path, text, mtime):
        with open(path, "w") as f:
            f.write(text)
        os.utime(path, (mtime, mtime))

    write(mine, "old text, copied from the committed folder\n", 1000)
    assert "discussion.md" in folder.publish(dest)  # dest had none
    write(theirs, "rewritten in the committed folder after the copy\n", 2000)
    written = folder.publish(dest)
    assert "discussion.md" not in written and "c_fpn/seed0/run.json" in written
    assert open(theirs).read() == "rewritten in the committed folder after the copy\n"
    write(mine, "rewritten in the sweep folder, later still\n", 3000)
    assert "discussion.md" in folder.publish(dest)
    assert open(theirs).read() == "rewritten in the sweep folder, later still\n"


def test_the_proposals_stages_of_several_folds_share_the_lanes(tmp_path, monkeypatch):
    """A Fast R-CNN sweep on several folds trains one proposals RPN per fold: with --jobs 2 two folds'
    stages train at once (one lane no longer idles while another fold's RPN trains alone), every row
    starts only after the stages and reads its own fold's proposals, and a fold whose stage fails fails
    its own rows only. The job functions are replaced by timed fakes: this checks the scheduling; the
    stage itself is tested in test_fast_rcnn_suite_trains_on_the_dumped_proposals_of_one_rpn."""
    import threading

    from fpn_variants.data.neon import dataset_name
    from fpn_variants.experiments import sweep as sweep_mod

    spans, lock = {}, threading.Lock()

    def timed(spec, what):
        with lock:
            spans[(what, spec.fold, spec.row, spec.seed)] = [time.time(), None]
        time.sleep(0.6)
        with lock:
            spans[(what, spec.fold, spec.row, spec.seed)][1] = time.time()

    def fake_proposals(spec):
        timed(spec, "proposals")
        if spec.fold == 1 and fail_fold1:
            return {"status": "failed", "error": "RuntimeError: fold 1's RPN diverged"}
        return {"status": "done", "seconds": 0.6, "metrics": {}, "proposal_files": {"fold": spec.fold}}

    read = {}

    def fake_run(spec):
        timed(spec, "run")
        read[(spec.fold, spec.row)] = spec.proposal_files
        return {"status": "done", "seconds": 0.6, "metrics": {}, "row": spec.row, "fold": spec.fold, "seed": spec.seed}

    monkeypatch.setattr(sweep_mod, "execute_proposals", fake_proposals)
    monkeypatch.setattr(sweep_mod, "execute_run", fake_run)
    monkeypatch.setattr(sweep_mod, "proposals_done", lambda rec, run_dir: bool(rec and rec.get("status") == "done"))
    monkeypatch.setattr(sweep_mod, "verify_proposals", lambda rec, run_dir: {
        dataset_name(split, rec["proposal_files"]["fold"]): f"{run_dir}/{split}.pkl" for split in ("train", "val")})

    fail_fold1 = False
    records = run_sweep("table2-neon", seeds=1, output=str(tmp_path / "a"), jobs=2, threads=1, folds=[0, 1],
                        rows=["c_fpn", "f_p2_only"], poll_s=0.05, report=False)
    assert [(r["row"], r["status"]) for r in records] == [("c_fpn", "done"), ("f_p2_only", "done")] * 2
    (s0, e0), (s1, e1) = spans[("proposals", 0, "proposals", 0)], spans[("proposals", 1, "proposals", 0)]
    assert s1 < e0 and s0 < e1  # the two folds' RPNs trained at the same time
    assert min(s for (what, *_), (s, _) in spans.items() if what == "run") >= max(e0, e1)
    for fold in (0, 1):
        for row in ("c_fpn", "f_p2_only"):
            assert read[(fold, row)] == ((str(tmp_path / "a" / f"proposals_fold{fold}" / "train.pkl"),),
                                         (str(tmp_path / "a" / f"proposals_fold{fold}" / "val.pkl"),))

    # one lane: the stages take turns
    spans.clear()
    run_sweep("table2-neon", seeds=1, output=str(tmp_path / "b"), jobs=1, threads=1, folds=[0, 1], rows=["c_fpn"],
              poll_s=0.05, report=False)
    (s0, e0), (s1, e1) = spans[("proposals", 0, "proposals", 0)], spans[("proposals", 1, "proposals", 0)]
    assert s1 >= e0

    # fold 1's stage fails: its rows are recorded failed, naming the stage; fold 0's rows still run
    spans.clear()
    fail_fold1 = True
    records = run_sweep("table2-neon", seeds=1, output=str(tmp_path / "c"), jobs=2, threads=1, folds=[0, 1],
                        rows=["c_fpn"], poll_s=0.05, report=False)
    by_fold = {r["fold"]: r for r in records}
    assert by_fold[0]["status"] == "done" and by_fold[1]["status"] == "failed"
    assert "proposals stage" in by_fold[1]["error"] and "fold 1's RPN diverged" in by_fold[1]["error"]
    assert ("run", 1, "c_fpn", 0) not in spans
