#!/usr/bin/env python
"""Train or evaluate a LazyConfig model (``configs/lazy/*.py``), like Detectron2's
``tools/lazyconfig_train_net.py``::

    python lazyconfig_train_net.py --config-file configs/lazy/retinanet_fpn_1x.py model.backbone.preset=fpn_panet

The code lives in :mod:`fpn_variants.lazy_train_net` (also ``python -m fpn_variants.lazy_train_net`` and
the ``fpn-variants-lazy-train`` console command).
"""
from fpn_variants.lazy_train_net import invoke_main

if __name__ == "__main__":
    invoke_main()
