#!/usr/bin/env python
"""Train or evaluate a detector / RPN with an FPN variant backbone, like Detectron2's
``tools/train_net.py`` (same flags; trailing ``KEY VALUE`` config overrides)::

    python train_net.py --config-file configs/NEON/faster_rcnn_R_18_FPN_cpu.yaml
    python train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python train_net.py --config-file CFG --resume                  # continue from last_checkpoint
    python train_net.py --config-file CFG --num-gpus 8              # one machine, 8 GPUs
    python train_net.py --config-file CFG --num-gpus 2 MODEL.DEVICE cpu   # 2 CPU processes (GLOO)

The code lives in :mod:`fpn_variants.train_net` (also ``python -m fpn_variants.train_net`` and the
``fpn-variants-train`` console command), so that sweeps and installed packages run the same thing.
"""
from fpn_variants.train_net import invoke_main

if __name__ == "__main__":
    invoke_main()
