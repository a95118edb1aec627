"""Training and evaluation on top of Detectron2's ``DefaultTrainer``.

:class:`Trainer` differs from Detectron2's only where this project needs it:

* evaluator: ``COCOEvaluator`` (AP, AP@0.5, AP_s/m/l) for detectors; :class:`ProposalRecallEvaluator`
  (AR@100, AR@1000, AR_s/m/l@1000 over all images) for RPN-only ``ProposalNetwork`` models;
* training augmentation: Detectron2's (``ResizeShortestEdge`` + horizontal flip) plus the
  ``FPN_VARIANTS.AUG`` keys (vertical flip, brightness / contrast / saturation);
* a tqdm progress bar (iteration, loss) on the main process when stderr is a terminal, beside
  Detectron2's periodic log lines;
* exact resume (one process): checkpoints also hold the RNG states (torch, numpy, random) and a
  resumed run replays the data loader up to its start iteration before restoring them, so a run
  killed and restarted with ``--resume`` ends with the same weights as an uninterrupted one;
* data-parallel training of a CPU model (``--num-gpus N MODEL.DEVICE cpu``, GLOO backend):
  Detectron2's ``create_ddp_model`` passes ``device_ids=[local_rank]``, which
  ``DistributedDataParallel`` rejects for a CPU module; :class:`Trainer` passes ``device_ids=None``
  for a CPU model and leaves GPU models to Detectron2 unchanged;
* mixed precision on the CPU (``SOLVER.AMP.ENABLED True``): bf16 autocast in training and in
  evaluation (:mod:`fpn_variants.amp`); CUDA models train with Detectron2's ``AMPTrainer`` and are
  evaluated under fp16 autocast.
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
from typing import List, Optional

import numpy as np
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader
from detectron2.data import detection_utils
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor, DefaultTrainer, HookBase
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm

from .amp import amp_trainer, autocast_inference
from .evaluation import ProposalRecallEvaluator
from .safety import safe_pickle_in_detectron2

__all__ = ["build_augmentation", "is_proposal_only", "load_weights_for_eval", "Predictor", "Trainer", "TqdmProgress",
           "RNGState", "ExactResume"]


def is_proposal_only(cfg: CfgNode) -> bool:
    """True for RPN-only models (``MODEL.META_ARCHITECTURE == "ProposalNetwork"``), evaluated by AR."""
    return cfg.MODEL.META_ARCHITECTURE == "ProposalNetwork"


def build_augmentation(cfg: CfgNode, is_train: bool) -> List[T.Augmentation]:
    """Detectron2's augmentation list, plus the ``FPN_VARIANTS.AUG`` ones at training time."""
    augs = detection_utils.build_augmentation(cfg, is_train)
    if not is_train:
        return augs
    a = cfg.FPN_VARIANTS.AUG
    if a.VERTICAL_FLIP:
        augs.append(T.RandomFlip(prob=0.5, horizontal=False, vertical=True))
    for name, cls in (("BRIGHTNESS", T.RandomBrightness), ("CONTRAST", T.RandomContrast), ("SATURATION", T.RandomSaturation)):
        x = float(a[name])
        if x:
            augs.append(cls(1.0 - x, 1.0 + x))
    return augs


class TqdmProgress(HookBase):
    """A tqdm bar over training iterations with the latest total loss (main process only; hidden
    when stderr is not a terminal, where Detectron2's log lines already show progress and ETA)."""

    def before_train(self):
        from tqdm import tqdm

        t = self.trainer
        self._bar = tqdm(
            total=t.max_iter, initial=t.start_iter, desc="train", unit="it", disable=None, dynamic_ncols=True
        )

    def after_step(self):
        storage = self.trainer.storage
        if "total_loss" in storage.histories():
            self._bar.set_postfix(loss=f"{storage.history('total_loss').latest():.3f}", refresh=False)
        self._bar.update(1)

    def after_train(self):
        self._bar.close()


class RNGState:
    """A checkpointable (fvcore ``Checkpointer.add_checkpointable``) of this process's RNG states:
    torch (CPU and, if any, CUDA), numpy's global ``RandomState`` and Python's ``random``, stored as
    tensors and ints so that ``torch.load(weights_only=True)`` reads them. Loading a checkpoint only
    *stores* the states; :class:`ExactResume` applies them at the right moment (:meth:`restore`)."""

    def __init__(self):
        self.pending: Optional[dict] = None

    def state_dict(self) -> dict:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        version, internal, gauss_next = random.getstate()
        sd = {
            "torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached)},
            "random": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        }
        if torch.cuda.is_available():
            sd["cuda"] = torch.cuda.get_rng_state_all()
        return sd

    def load_state_dict(self, sd: dict) -> None:
        self.pending = sd

    def restore(self) -> bool:
        """Apply the stored states; returns False if there were none."""
        sd, self.pending = self.pending, None
        if sd is None:
            return False
        torch.set_rng_state(sd["torch"])
        n = sd["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
        r = sd["random"]
        random.setstate((r["version"], tuple(r["internal"]), r["gauss_next"]))
        if "cuda" in sd and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(sd["cuda"])
        return True


class ExactResume(HookBase):
    """On a resumed run (``start_iter > 0``), before the first step: draw ``start_iter`` batches from
    the training data loader (advancing Detectron2's ``TrainingSampler`` and the augmentation RNG of
    the loader as the interrupted run had) and then restore the RNG states of the checkpoint
    (:class:`RNGState`), so that every later batch, augmentation and RPN / RoI sampling is the one the
    uninterrupted run would have made. Costs the data time of ``start_iter`` batches (no model step).
    Exact for a single process; with several processes only rank 0's RNG states are checkpointed."""

    def __init__(self, rng: RNGState):
        self._rng = rng

    def before_train(self):
        t = self.trainer
        if t.start_iter <= 0 or self._rng.pending is None:
            self._rng.pending = None
            return
        inner = getattr(t, "_trainer", t)
        it = inner._data_loader_iter
        for _ in range(t.start_iter):
            next(it)
        self._rng.restore()
        logging.getLogger(__name__).info("exact resume: replayed %d batches and restored the RNG states", t.start_iter)


@contextlib.contextmanager
def _in_detectron2_defaults(name: str, replace):
    """While active, ``detectron2.engine.defaults.<name>`` (what ``DefaultTrainer.__init__`` calls)
    is ``replace(original)``; restored on exit."""
    import detectron2.engine.defaults as d2_defaults

    original = getattr(d2_defaults, name)
    setattr(d2_defaults, name, replace(original))
    try:
        yield
    finally:
        setattr(d2_defaults, name, original)


def _ddp_for_cpu_models(original):
    """Detectron2's ``create_ddp_model``, but a model whose parameters are all on the CPU is wrapped
    with ``device_ids=None`` (which ``DistributedDataParallel`` needs for a CPU module)."""

    def create_ddp_model(model, **kwargs):
        if comm.get_world_size() > 1 and all(p.device.type == "cpu" for p in model.parameters()):
            kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    return create_ddp_model


class _RecordingCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that keeps the incompatible keys of its last model load."""

    incompatible = None

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def load_weights_for_eval(model, cfg: CfgNode, resume: bool = False) -> str:
    """Load ``cfg.MODEL.WEIGHTS`` (or, with ``resume``, ``OUTPUT_DIR/last_checkpoint``) into ``model``
    for evaluation, where every parameter must come from the checkpoint.

    Returns the path loaded. Raises:
        ValueError: the checkpoint does not fit the model: missing keys, unexpected keys or shape
            mismatches (e.g. a checkpoint of another pyramid variant), each listed (first 8).
    """
    ck = _RecordingCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    with safe_pickle_in_detectron2():
        ck.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    path = cfg.MODEL.WEIGHTS if not (resume and ck.has_checkpoint()) else ck.get_checkpoint_file()
    inc = ck.incompatible
    if inc is None:
        raise ValueError(f"MODEL.WEIGHTS={cfg.MODEL.WEIGHTS!r}: no weights were loaded; evaluation needs a trained model")
    problems = []
    for what, keys in (("missing", inc.missing_keys), ("unexpected", inc.unexpected_keys),
                       ("shape mismatch", [k for k, *_ in inc.incorrect_shapes])):
        if keys:
            problems.append(f"{len(keys)} {what} ({', '.join(sorted(keys)[:8])}{', ...' if len(keys) > 8 else ''})")
    if problems:
        raise ValueError(
            f"checkpoint {path} does not fit this model (MODEL.BACKBONE.NAME={cfg.MODEL.BACKBONE.NAME!r}, "
            f"d={cfg.MODEL.FPN.OUT_CHANNELS}): " + "; ".join(problems) + ". Was it trained with another variant or config?"
        )
    return path


class Predictor(DefaultPredictor):
    """Detectron2's ``DefaultPredictor`` (one BGR / RGB ``(H, W, 3)`` uint8 image in, ``{"instances":
    Instances}`` in original-image pixels out) with two differences:

    * ``MODEL.WEIGHTS`` must hold every parameter of the model (:func:`load_weights_for_eval`):
      Detectron2's predictor loads what fits and only logs the rest, so a Detectron2 FPN checkpoint
      put into a PANet / BiFPN / residual model would predict with random pyramid weights;
    * with ``SOLVER.AMP.ENABLED`` the model runs under autocast, as in evaluation
      (:func:`fpn_variants.amp.autocast_inference`).

    Raises:
        ValueError: empty ``MODEL.WEIGHTS`` or a checkpoint that does not fit (keys listed).
    """

    def __init__(self, cfg):
        weights = cfg.MODEL.WEIGHTS
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.WEIGHTS = ""  # Detectron2's lenient load skipped; the strict one below
        super().__init__(cfg)
        self.cfg.defrost()
        self.cfg.MODEL.WEIGHTS = weights
        self.cfg.freeze()
        load_weights_for_eval(self.model, self.cfg)
        self.model = autocast_inference(self.model, self.cfg)


class Trainer(DefaultTrainer):
    """Detectron2's ``DefaultTrainer`` with this project's evaluators, augmentation, progress bar,
    and data-parallel training of CPU models (module docstring)."""

    def __init__(self, cfg):
        # CPU data-parallel and CPU AMP: what DefaultTrainer.__init__ builds, by the model's device
        with _in_detectron2_defaults("create_ddp_model", _ddp_for_cpu_models), \
                _in_detectron2_defaults("AMPTrainer", lambda _: amp_trainer):
            super().__init__(cfg)
        self.checkpointer.add_checkpointable("rng", self._rng_for_hooks)

    @classmethod
    def build_model(cls, cfg):
        """Detectron2's model; in channels_last memory format when ``FPN_VARIANTS.CHANNELS_LAST``."""
        model = super().build_model(cfg)
        if cfg.FPN_VARIANTS.CHANNELS_LAST:
            model.to(memory_format=torch.channels_last)
        return model

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Detectron2's ``DefaultTrainer.test``; with ``SOLVER.AMP.ENABLED`` the model runs under
        autocast (bf16 on CPU, fp16 on CUDA) and evaluators get fp32 outputs
        (:func:`fpn_variants.amp.autocast_inference`)."""
        return super().test(cfg, autocast_inference(model, cfg), evaluators=evaluators)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        if is_proposal_only(cfg):
            return ProposalRecallEvaluator(
                dataset_name, limits=(100, cfg.MODEL.RPN.POST_NMS_TOPK_TEST), output_dir=output_folder
            )
        return COCOEvaluator(
            dataset_name,
            tasks=("bbox",),
            output_dir=output_folder,
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        )

    @classmethod
    def build_train_loader(cls, cfg):
        mapper = DatasetMapper(cfg, is_train=True, augmentations=build_augmentation(cfg, is_train=True))
        with safe_pickle_in_detectron2():  # precomputed proposal files are unpickled safely
            return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper = DatasetMapper(cfg, is_train=False, augmentations=build_augmentation(cfg, is_train=False))
        with safe_pickle_in_detectron2():
            return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    def resume_or_load(self, resume=True):
        """Detectron2's, with ``.pkl`` checkpoints unpickled safely (:mod:`fpn_variants.safety`)."""
        with safe_pickle_in_detectron2():
            return super().resume_or_load(resume=resume)

    def build_hooks(self):
        hooks = super().build_hooks()
        if comm.is_main_process():
            hooks.insert(-1, TqdmProgress())
        hooks.insert(0, ExactResume(self._rng_for_hooks))
        return hooks

    @property
    def _rng_for_hooks(self) -> RNGState:
        # build_hooks runs inside DefaultTrainer.__init__, before self.rng_state exists
        if "rng_state" not in self.__dict__:
            self.rng_state = RNGState()
        return self.rng_state


logging.getLogger(__name__).addHandler(logging.NullHandler())
