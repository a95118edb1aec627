"""Every config under configs/COCO/ trains 2 iterations and evaluates on the CPU, through the same
``train_net`` main a GPU user runs, on a small COCO-format dataset (NEON tiles written as COCO json
and registered with Detectron2's ``register_coco_instances``) with ``MODEL.WEIGHTS ""`` and small
inputs. The Fast R-CNN (Table 2) configs read the proposals that ``fpn_variants.proposals`` dumps from
the Table 1(c) RPN trained here, as the sweep's protocol does. A GPU user's first run of a COCO
config is then not the first run of it."""
import glob
import os

import pytest

from conftest import REPO

COCO_CONFIGS = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "COCO", "*.yaml")))
SMALL = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1",
         "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "1000", "INPUT.MIN_SIZE_TRAIN", "(96,)",
         "INPUT.MAX_SIZE_TRAIN", "160", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "160",
         "DATALOADER.NUM_WORKERS", "0", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "200",
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "TEST.EVAL_PERIOD", "0"]
TRAIN, VAL = "neon_coco_mini_train", "neon_coco_mini_val"


@pytest.fixture(scope="module")
def coco_mini(neon_root, tmp_path_factory):
    """4 training and 4 validation NEON tiles as COCO json files, registered like a COCO dataset."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances
    from detectron2.data.datasets.coco import convert_to_coco_dict

    from fpn_variants.fileio import write_json_atomic

    root = tmp_path_factory.mktemp("coco_mini")
    for name, source in ((TRAIN, "neon_trees_train"), (VAL, "neon_trees_val")):
        if name in DatasetCatalog.list():
            continue
        path = str(root / f"{name}.json")
        DatasetCatalog.register("_tmp_" + name, lambda s=source: DatasetCatalog.get(s)[:4])
        from detectron2.data import MetadataCatalog

        MetadataCatalog.get("_tmp_" + name).thing_classes = MetadataCatalog.get(source).thing_classes
        write_json_atomic(path, convert_to_coco_dict("_tmp_" + name))
        register_coco_instances(name, {}, path, "")  # file_name holds absolute image paths
    return root


def run_train_net(config, out, *opts):
    from detectron2.engine import default_argument_parser

    from fpn_variants.train_net import main

    args = default_argument_parser().parse_args(
        ["--config-file", os.path.join(REPO, config), *SMALL, "DATASETS.TRAIN", f"('{TRAIN}',)",
         "DATASETS.TEST", f"('{VAL}',)", "OUTPUT_DIR", str(out), *opts])
    main(args)
    return str(out)


def final_metrics(out):
    import json

    with open(os.path.join(out, "metrics.json")) as f:
        lines = [json.loads(l) for l in f if l.strip()]
    return lines


@pytest.fixture(scope="module")
def table1c_proposals(coco_mini, tmp_path_factory):
    """The Table 1(c) RPN trained 2 iterations, and its proposals dumped for both datasets."""
    from fpn_variants.config import load_config
    from fpn_variants.proposals import dump_proposals

    out = run_train_net("configs/COCO/rpn_c_fpn.yaml", tmp_path_factory.mktemp("rpn_c"))
    cfg = load_config(os.path.join(REPO, "configs/COCO/rpn_c_fpn.yaml"),
                      [*SMALL, "DATASETS.TRAIN", f"('{TRAIN}',)", "DATASETS.TEST", f"('{VAL}',)",
                       "MODEL.WEIGHTS", os.path.join(out, "model_final.pth")])
    cfg.freeze()
    return dump_proposals(cfg, str(tmp_path_factory.mktemp("proposals")))


def test_every_coco_config_is_covered():
    names = {os.path.basename(c) for c in COCO_CONFIGS}
    assert {"faster_rcnn_c_fpn.yaml", "rpn_c_fpn.yaml", "fast_rcnn_c_fpn.yaml"} <= names and len(names) >= 19


@pytest.mark.parametrize("config", COCO_CONFIGS, ids=[os.path.basename(c)[:-5] for c in COCO_CONFIGS])
def test_coco_config_trains_two_iterations_and_evaluates(config, coco_mini, table1c_proposals, tmp_path):
    from fpn_variants.config import load_config

    opts = []
    cfg = load_config(os.path.join(REPO, config), [])
    if cfg.MODEL.LOAD_PROPOSALS:  # Table 2: the fixed proposals of the Table 1(c) RPN
        opts = ["DATASETS.PROPOSAL_FILES_TRAIN", repr((table1c_proposals[TRAIN],)),
                "DATASETS.PROPOSAL_FILES_TEST", repr((table1c_proposals[VAL],))]
    out = run_train_net(config, tmp_path, *opts)
    lines = final_metrics(out)
    losses = [l for l in lines if "total_loss" in l]
    assert losses[-1]["iteration"] == 1
    key = "box_proposals/AR@200" if cfg.MODEL.META_ARCHITECTURE == "ProposalNetwork" else "bbox/AP"
    evaluated = [l for l in lines if key in l]
    assert evaluated, f"no {key} in {out}/metrics.json"
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
