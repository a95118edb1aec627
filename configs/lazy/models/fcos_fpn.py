"""FCOS (Tian et al., ICCV 2019) on a pyramid of fpn_variants: Detectron2's ``common/models/fcos.py``
(P3..P7, P6 / P7 from P5 as in FCOS §2.2, GN head) with its backbone swapped for
:func:`fpn_variants.modeling.preset_pyramid`. ``model.backbone.preset`` picks the pyramid."""
from detectron2 import model_zoo

from fpn_variants.modeling import preset_pyramid

model = model_zoo.get_config("common/models/fcos.py").model
model.backbone._target_ = preset_pyramid
model.backbone.preset = "fpn_full"
