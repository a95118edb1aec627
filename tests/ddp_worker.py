"""Helper of test_distributed.py (not a test): train with fpn_variants' Trainer on N CPU processes
through Detectron2's launch (GLOO) and save every rank's final state dict as OUTPUT_DIR/rank{r}.pth.

    python tests/ddp_worker.py NUM_PROCESSES CONFIG_FILE [KEY VALUE ...]
"""
import os
import sys

import torch
from detectron2.engine import default_setup, launch
from detectron2.utils import comm

import fpn_variants  # noqa: F401
from fpn_variants.config import load_config
from fpn_variants.engine import Trainer


def main(config_file, opts):
    cfg = load_config(config_file, opts)
    cfg.freeze()
    default_setup(cfg, type("Args", (), {"config_file": config_file, "eval_only": False})())
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save(state, os.path.join(cfg.OUTPUT_DIR, f"rank{comm.get_rank()}.pth"))


if __name__ == "__main__":
    n, cfg_file, *opts = sys.argv[1:]
    launch(main, int(n), dist_url="auto", args=(cfg_file, opts))
