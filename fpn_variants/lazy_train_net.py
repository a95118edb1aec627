"""Train or evaluate a model described by a LazyConfig python file (``configs/lazy/``), in the manner of
Detectron2's ``tools/lazyconfig_train_net.py`` (same flags; trailing ``key=value`` overrides)::

    python lazyconfig_train_net.py --config-file configs/lazy/retinanet_fpn_1x.py model.backbone.preset=fpn_panet
    python -m fpn_variants.lazy_train_net ...          # the same, from an installed package (fpn-variants-lazy-train)
    python lazyconfig_train_net.py --config-file CFG --eval-only train.init_checkpoint=output/model_final.pth
    python lazyconfig_train_net.py --config-file CFG --num-gpus 8 --resume

The config provides ``model``, ``dataloader.{train,test,evaluator}``, ``optimizer``, ``lr_multiplier``
and ``train`` (Detectron2's ``configs/common/train.py`` keys: output_dir, init_checkpoint, max_iter,
amp.enabled, ddp, checkpointer, eval_period, log_period, device). As ``train_net.py`` does, it trains
CPU models data-parallel (``--num-gpus N train.device=cpu``: N GLOO processes) and honours
``train.amp.enabled`` on a CPU with bf16 autocast (:func:`fpn_variants.amp.amp_trainer`).
Checkpoints are Detectron2's (``--resume`` continues from ``output_dir/last_checkpoint``).
"""
import logging

import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import SimpleTrainer, default_argument_parser, default_setup, default_writers, hooks, launch
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format

import fpn_variants  # noqa: F401  registers backbones and datasets (also in spawned workers)

from .amp import amp_trainer
from .engine import _ddp_for_cpu_models

__all__ = ["do_test", "do_train", "main", "invoke_main"]

logger = logging.getLogger("fpn_variants")


def do_test(cfg, model):
    """Evaluate ``model`` on ``dataloader.test`` with ``dataloader.evaluator`` (if the config has one);
    returns the evaluator's results (e.g. ``{"bbox": {"AP": ...}}``) or ``None``."""
    if "evaluator" not in cfg.dataloader:
        return None
    ret = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    print_csv_format(ret)
    return ret


def do_train(args, cfg):
    """Train ``cfg.model`` for ``cfg.train.max_iter`` iterations from ``cfg.train.init_checkpoint``
    (or, with ``args.resume``, from the last checkpoint in ``cfg.train.output_dir``), with
    Detectron2's hooks: iteration timer, LR schedule, periodic checkpoints, periodic evaluation
    (``train.eval_period``, and at the end) and metric writers."""
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    logger.info("Model:\n%s", model)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)

    model = _ddp_for_cpu_models(create_ddp_model)(model, **cfg.train.ddp)
    trainer = (amp_trainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optimizer)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
        hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
        if comm.is_main_process() else None,
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    # a checkpoint stores the iteration that finished: continue at the next one
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)
    return model


def main(args):
    """Load ``args.config_file`` with ``args.opts`` applied, then train, or with ``--eval-only``
    evaluate ``train.init_checkpoint``. Returns the evaluation results (``--eval-only``) or the
    trained model."""
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    default_setup(cfg, args)
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = _ddp_for_cpu_models(create_ddp_model)(model)
        DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, model)
    return do_train(args, cfg)


def invoke_main(argv=None) -> None:
    """Parse Detectron2's standard arguments and ``launch`` :func:`main` on ``--num-gpus`` processes."""
    args = default_argument_parser().parse_args(argv)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    invoke_main()
