"""Train or evaluate a detector / RPN with an FPN variant backbone, like Detectron2's
``tools/train_net.py``::

    python train_net.py --config-file configs/NEON/faster_rcnn_R_18_FPN_cpu.yaml
    python -m fpn_variants.train_net ...     # the same, from an installed package (fpn-variants-train)
    python train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python train_net.py --config-file CFG --resume                  # continue from last_checkpoint
    python train_net.py --config-file CFG --num-gpus 8              # one machine, 8 GPUs
    python train_net.py --config-file CFG --num-gpus 8 --num-machines 2 --machine-rank 0 \
        --dist-url tcp://HOST:PORT                                  # and --machine-rank 1 on the other

Detectors are evaluated with ``COCOEvaluator`` (AP), RPN-only ``ProposalNetwork`` models by
proposal recall (AR@100, AR@1000, s/m/l). Training metrics go to ``OUTPUT_DIR/metrics.json``;
``--eval-only`` results also to ``OUTPUT_DIR/eval_results.json``.
"""
import logging
import os

import detectron2.utils.comm as comm
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils.logger import setup_logger

import fpn_variants  # noqa: F401  registers backbones and datasets (also in spawned workers)

from .config import load_config
from .engine import Trainer, load_weights_for_eval
from .fileio import write_json_atomic

__all__ = ["setup", "main", "invoke_main"]


def setup(args):
    """The frozen config of ``args.config_file`` + ``args.opts``; Detectron2's ``default_setup`` (logs,
    ``OUTPUT_DIR/config.yaml``, seeds)."""
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="fpn_variants", abbrev_name="fpnv")
    return cfg


def main(args):
    """Train (``trainer.train()``, evaluating at the end) or, with ``--eval-only``, evaluate
    ``MODEL.WEIGHTS`` (which must hold every parameter of the model: a checkpoint of another variant
    is an error, :func:`fpn_variants.engine.load_weights_for_eval`) and write
    ``OUTPUT_DIR/eval_results.json`` atomically."""
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        load_weights_for_eval(model, cfg, resume=args.resume)  # every parameter must come from the checkpoint
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
            path = os.path.join(cfg.OUTPUT_DIR, "eval_results.json")
            write_json_atomic(path, res)
            logging.getLogger("fpn_variants").info("evaluation results written to %s", path)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main(argv=None) -> None:
    """Parse Detectron2's standard arguments (``argv`` or ``sys.argv[1:]``) and ``launch`` :func:`main`
    on ``--num-gpus`` processes per machine."""
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
