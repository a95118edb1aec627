"""RetinaNet on a pyramid of fpn_variants: Detectron2's ``common/models/retinanet.py`` with its backbone
swapped for :func:`fpn_variants.modeling.preset_pyramid`. RetinaNet reads P3..P7: the pyramid starts at
C3 and its top block (Detectron2's LastLevelP6P7 on C5) adds P6, P7, as in Detectron2's recipe.
``model.backbone.preset`` picks the pyramid."""
from detectron2 import model_zoo

from fpn_variants.modeling import preset_pyramid

model = model_zoo.get_config("common/models/retinanet.py").model
model.backbone._target_ = preset_pyramid
model.backbone.preset = "fpn_full"
