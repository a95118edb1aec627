"""fpn_variants: the design space of Feature Pyramid Networks (Lin et al., CVPR 2017) as Detectron2
backbones. Importing the package registers every preset in Detectron2's ``BACKBONE_REGISTRY`` and
the ``neon_trees_*`` datasets in ``DatasetCatalog`` (once)."""
from . import data  # noqa: F401  (registers datasets)
from . import modeling  # noqa: F401  (registers backbones)
from .config import add_fpn_variants_config, validate_config
from .modeling import PRESETS, FeaturePyramid, backbone_name

__all__ = ["add_fpn_variants_config", "validate_config", "PRESETS", "FeaturePyramid", "backbone_name"]
__version__ = "0.1.0"
