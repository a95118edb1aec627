"""benchmarks/benchmark.py works end to end on a tiny budget and holds the cost targets that are
exact (parameters, FLOPs); latency and throughput ratios are measured by running it, never tested."""
import csv
import importlib.util
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name, filename):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", filename))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while it executes
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _load("fpn_benchmark", "benchmark.py")


def test_every_preset_and_both_baselines_are_benchmarked(bench):
    import fpn_variants

    assert set(fpn_variants.PRESETS) <= set(bench.MODELS)
    assert {bench.REFERENCE, "C4 (Table 3a)", "C5 (Table 3b)"} <= set(bench.MODELS)


def test_inference_costs_and_report(bench, tmp_path):
    out = tmp_path / "res"
    assert bench.main(["--out", str(out), "--settings", "r18-neon", "--models", "fpn_full", "fpn_lateral_only",
                       "C5 (Table 3b)", "--repeats", "1", "--warmup", "0", "--no-train"]) == 0
    rows = {r["model"]: r for r in csv.DictReader(open(out / "benchmark.csv"))}
    assert set(rows) == {bench.REFERENCE, "fpn_full", "fpn_lateral_only", "C5 (Table 3b)"}
    full, ref = rows["fpn_full"], rows[bench.REFERENCE]
    # our FPN is Detectron2's FPN: same parameters and FLOPs, neck and whole detector
    for field in ("params_M", "neck_params_M", "GFLOPs", "neck_GFLOPs"):
        assert float(full[field]) == pytest.approx(float(ref[field]), rel=1e-9), field
    assert float(full["params_vs_D2"]) == pytest.approx(1.0)
    # the lateral-only pyramid drops the 3x3 output convs: fewer neck parameters and FLOPs
    assert float(rows["fpn_lateral_only"]["neck_params_M"]) < float(ref["neck_params_M"])
    assert float(rows["fpn_lateral_only"]["neck_GFLOPs"]) < float(ref["neck_GFLOPs"])
    # neck params: 1x1 laterals (64+128+256+512)*128 + 4 3x3 convs 128*128*9, with biases
    expected = (64 + 128 + 256 + 512) * 128 + 4 * 9 * 128 * 128 + 8 * 128
    assert float(ref["neck_params_M"]) * 1e6 == pytest.approx(expected)
    assert rows["C5 (Table 3b)"]["neck_params_M"] == ""  # no pyramid, no neck
    for r in rows.values():
        assert float(r["latency_s"]) > 0 and 0 < float(r["peak_fraction"])
    meta = json.load(open(out / "benchmark.json"))["meta"]
    assert meta["matmul_peak_GFLOP_per_s"] > 0
    md = open(out / "benchmark.md").read()
    assert "| fpn_full | 15.52 |" in md and "R-18, d=128, 200x200" in md


def test_training_worker_measures_throughput_and_memory(bench):
    r = bench.train_worker(bench.SETTINGS["r18-neon"], "fpn_full", iters=1, warmup=0, batch=1)
    assert r["train_batch"] == 1
    assert r["train_images_per_s"] == pytest.approx(1 / r["train_step_s"])
    assert r["train_peak_rss_MiB"] >= r["built_rss_MiB"] > 100


def test_models_share_the_reference_weights(bench):
    """fpn_full gets every weight of Detectron2's FPN detector; another pyramid gets the shared
    bottom-up pathway and heads but keeps its own neck."""
    import torch

    setting = bench.SETTINGS["r18-neon"]
    ref = bench.reference_state(setting)
    full, n_full = bench.build_benchmark_model(setting, "fpn_full")
    assert n_full == len(ref)
    assert all(torch.equal(v, ref[k]) for k, v in full.state_dict().items())
    panet, n_panet = bench.build_benchmark_model(setting, "fpn_panet")
    own = panet.state_dict()
    assert 0 < n_panet < len(own)
    for k in ("backbone.bottom_up.stem.conv1.weight", "proposal_generator.rpn_head.conv.weight",
              "roi_heads.box_predictor.cls_score.weight", "backbone.fpn_lateral3.weight"):
        assert torch.equal(own[k], ref[k]), k
    extra = [k for k in own if k not in ref]  # PANet's own bottom-up path keeps its initialisation
    assert extra and all(k.startswith("backbone.post_paths.") for k in extra)


def test_fpn_full_training_step_is_detectron2_fpns_computation(bench):
    """Issue 5's "no more than Detectron2's own FPN", exactly: with the same weights, one training
    step of fpn_full runs the same operators on the same shapes as build_resnet_fpn_backbone's
    detector, and gives the same loss; the lateral-only pyramid runs fewer."""
    setting = bench.SETTINGS["r18-neon"]
    ref_ops, ref_loss = bench.training_step_ops(setting, bench.REFERENCE, batch=1)
    ops, loss = bench.training_step_ops(setting, "fpn_full", batch=1)
    assert sum(ref_ops.values()) > 1000
    assert ops == ref_ops, (ref_ops - ops, ops - ref_ops)
    assert loss == ref_loss
    lat_ops, _ = bench.training_step_ops(setting, "fpn_lateral_only", batch=1)
    conv = lambda c: sum(v for (name, _), v in c.items() if name == "aten::convolution")  # noqa: E731
    assert conv(lat_ops) == conv(ref_ops) - 4  # no 3x3 output convs on P2..P5


@pytest.mark.parametrize("args, message", [
    (["--settings", "r34-800"], "unknown setting 'r34-800'; valid: r50-800, r18-neon"),
    (["--models", "fpn_fully"], "unknown model 'fpn_fully'"),
    (["--repeats", "0"], "--repeats 0 is not valid: must be >= 1"),
])
def test_bad_arguments(bench, args, message):
    with pytest.raises(SystemExit, match=message.replace("(", r"\(").replace(")", r"\)")):
        bench.main(args)


@pytest.fixture(scope="module")
def recipe():
    return _load("fpn_bench_recipe", "bench_recipe.py")


def test_recipe_variants_map_to_config_overrides_and_preloads(recipe, tmp_path, monkeypatch):
    """A variant is config overrides plus an environment; a preload library is looked up in the venv's
    lib first (where pip's intel-openmp puts libiomp5.so) and joins an existing LD_PRELOAD."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "libiomp5.so").write_bytes(b"")
    monkeypatch.setattr(recipe.sys, "prefix", str(tmp_path))
    monkeypatch.setenv("LD_PRELOAD", "/opt/other.so")
    assert recipe.variant_opts("channels_last+workers0+iomp") == (
        "FPN_VARIANTS.CHANNELS_LAST", "True", "DATALOADER.NUM_WORKERS", "0")
    env = recipe.variant_env("channels_last+iomp")
    assert env == {"KMP_BLOCKTIME": "1", "LD_PRELOAD": f"{lib / 'libiomp5.so'}:/opt/other.so"}
    assert recipe.variant_env("before") == {} and recipe.variant_opts("before") == ()
    assert recipe.variant_jobs("jobs2+channels_last") == 2 and recipe.variant_jobs("iomp") == 1
    assert recipe.variant_opts("jobs2") == () and recipe.variant_env("jobs2") == {}
    with pytest.raises(ValueError, match=r"unknown variant part 'mimalloc' in 'iomp\+mimalloc'; valid: .*jemalloc"):
        recipe.variant_opts("iomp+mimalloc")
    monkeypatch.setattr(recipe.ctypes_util, "find_library", lambda name: None)
    with pytest.raises(FileNotFoundError, match="libjemalloc.so not found; install it .*apt-get install libjemalloc2"):
        recipe.variant_env("jemalloc")


def test_recipe_compares_configs_with_the_first_one(recipe, tmp_path, monkeypatch):
    """Several --configs: each is also given as a ratio to the first config's `before` (recipes compared
    in the same round-robin), e.g. the pretrained demo against the from-scratch one."""
    speed = {"NEON/faster_rcnn_R_18_FPN_cpu.yaml": 2.0, "NEON/faster_rcnn_lite2_FPN_cpu.yaml": 2.5}
    calls = []

    def fake_run_once(config, variant, iters, run_dir):
        calls.append((config, variant))
        return dict(train_s_per_it=speed[config], eval_s_per_img=speed[config] / 10, wall_s=100 * speed[config])

    monkeypatch.setattr(recipe, "run_once", fake_run_once)
    recipe.main(["--variants", "before", "--configs", *speed, "--rounds", "2", "--iters", "10", "--out", str(tmp_path)])
    assert calls == [(c, "before") for c in speed] * 2  # round-robin over configs
    md = (tmp_path / "recipe_speed.md").read_text()
    assert "| NEON/faster_rcnn_lite2_FPN_cpu.yaml | before | 1.250 | 1.250 | 1.250 |" in md
    assert "| NEON/faster_rcnn_R_18_FPN_cpu.yaml | before | 1.000 | 1.000 | 1.000 |" in md


def test_recipe_log_parsing_reads_detectron2_timer_lines(recipe, tmp_path):
    log = tmp_path / "log.txt"
    log.write_text(
        "[11/22 06:00:00 d2.engine.hooks]: Overall training speed: 27 iterations in 0:01:09 (2.5600 s / it)\n"
        "[11/22 06:01:00 d2.evaluation.evaluator]: Total inference time: 0:00:06.9 (0.164800 s / iter per device, on 1 devices)\n")
    assert recipe.parse_log(str(log)) == dict(train_s_per_it=2.56, eval_s_per_img=0.1648)
    assert recipe.parse_log(str(tmp_path / "missing.txt")) == dict(train_s_per_it=None, eval_s_per_img=None)


def test_recipe_profile_groups_a_real_training_step(tmp_path):
    """One profiled SGD step of the NEON FPN recipe (tiny batch): the families partition the
    operators' self time, and convolutions are where it goes."""
    prof = _load("fpn_profile_recipe", "profile_recipe.py")
    assert prof.main(["--steps", "1", "--warmup", "0", "--out", str(tmp_path),
                      "SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(128,)"]) == 0
    text = (tmp_path / "recipe_profile.md").read_text()
    fams = {}
    for line in text.split("Top ")[0].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[2].endswith("%"):
            fams[cells[0]] = float(cells[2].rstrip(" %"))
    assert {"convolution forward", "convolution backward", "RoIAlign (forward + backward)", "NMS"} <= set(fams)
    assert abs(sum(fams.values()) - 100) < 0.5
    assert fams["convolution forward"] + fams["convolution backward"] > 30
    assert prof.family("torchvision::_roi_align_backward") == "RoIAlign (forward + backward)"


def test_recipe_profile_bad_arguments():
    prof = _load("fpn_profile_recipe", "profile_recipe.py")
    with pytest.raises(SystemExit, match="config 'NEON/nope.yaml' not found under configs/"):
        prof.main(["--config", "NEON/nope.yaml"])
    with pytest.raises(SystemExit, match="--steps 0 must be >= 1"):
        prof.main(["--steps", "0"])
