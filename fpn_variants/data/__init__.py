"""Datasets: the NEON tree crowns (registered on import as ``neon_trees_train`` / ``neon_trees_val``).

Any COCO-format dataset is one call away::

    from detectron2.data.datasets import register_coco_instances
    register_coco_instances("my_train", {}, "path/to/train.json", "path/to/images")
"""
from .neon import prepare as prepare_neon_trees
from .neon import register_neon_trees

register_neon_trees()

__all__ = ["prepare_neon_trees", "register_neon_trees"]
