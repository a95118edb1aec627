"""What every training config here shares, from Detectron2's ``configs/common`` (shipped inside the
detectron2 package): the COCO data loaders and evaluator, SGD (lr 0.02 for 16 images), the 1x schedule
(90k iterations) and ``train`` (output_dir, init_checkpoint, amp, ddp, checkpointer, eval_period).
``train.device`` is cuda when a GPU is visible, else cpu; ``train.amp.enabled=True`` is bf16 autocast
on a CPU with native bf16 (``fpn_variants.amp``), Detectron2's AMP on a GPU."""
import torch
from detectron2 import model_zoo

dataloader = model_zoo.get_config("common/data/coco.py").dataloader
optimizer = model_zoo.get_config("common/optim.py").SGD
lr_multiplier = model_zoo.get_config("common/coco_schedule.py").lr_multiplier_1x
train = model_zoo.get_config("common/train.py").train
# the paper's initialisation: an ImageNet-pretrained R-50 (Detectron2 fetches it: needs internet);
# train.init_checkpoint="" trains from scratch
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.device = "cuda" if torch.cuda.is_available() else "cpu"
