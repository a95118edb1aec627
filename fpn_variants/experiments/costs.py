"""The one cost measurement of a model: parameters, FLOPs and latency. ``benchmarks/benchmark.py``
(pyramids against Detectron2's FPN in one run) and the sweep report's cost columns both measure
with these functions.

FLOPs are fvcore's count (through Detectron2's ``FlopCountAnalysis`` for a detector taking a list
of input dicts): one fused multiply-add = 1 flop, as Detectron2 counts. Latency is the median of
``time.perf_counter`` differences (seconds) over calls after warm-up calls, taken round-robin when
several models are timed, so that a drift of the machine's speed hits every model alike.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Optional

__all__ = ["count_gflops", "count_params_m", "time_round_robin", "model_cost", "LATENCY_WARMUP", "LATENCY_REPEATS"]

LATENCY_WARMUP, LATENCY_REPEATS = 2, 10


def count_gflops(model, inputs) -> float:
    """GFLOPs of one call ``model(inputs)``: Detectron2's counter for a detector (``inputs`` a list of
    ``{"image": (C, H, W) tensor, "height", "width"}`` dicts), fvcore's for a module taking tensors
    (``inputs`` a tuple). Unsupported-op and uncalled-module warnings are silenced: the operators
    they name (e.g. NMS, upsampling) do no multiply-adds."""
    if isinstance(inputs, list):
        from detectron2.utils.analysis import FlopCountAnalysis
    else:
        from fvcore.nn import FlopCountAnalysis
    fca = FlopCountAnalysis(model, inputs)
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    return fca.total() / 1e9


def count_params_m(model, skip_prefix: Optional[str] = None) -> float:
    """Parameters of ``model`` in millions, leaving out those whose name starts with ``skip_prefix``
    (e.g. ``"bottom_up."`` for the pyramid alone)."""
    return sum(p.numel() for n, p in model.named_parameters() if not (skip_prefix and n.startswith(skip_prefix))) / 1e6


def time_round_robin(calls: Dict[str, Callable[[], object]], warmup: int = LATENCY_WARMUP,
                     repeats: int = LATENCY_REPEATS) -> Dict[str, List[float]]:
    """Seconds of each call, ``warmup + repeats`` rounds, each round calling every entry once in order;
    returns the ``repeats`` timed durations per key (warm-up rounds dropped).

    Raises:
        ValueError: ``repeats`` < 1 or ``warmup`` < 0.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0; got repeats={repeats}, warmup={warmup}")
    times: Dict[str, List[float]] = {k: [] for k in calls}
    for i in range(warmup + repeats):
        for key, fn in calls.items():
            t = time.perf_counter()
            fn()
            if i >= warmup:
                times[key].append(time.perf_counter() - t)
    return times


def model_cost(cfg) -> dict:
    """Cost of the whole model of a Detectron2 config, randomly initialised (seed 0), on CPU, on one
    random S x S image, S = ``INPUT.MIN_SIZE_TEST``: ``params_m`` (millions), ``gflops``, ``latency_s``
    (median of :data:`LATENCY_REPEATS` calls after :data:`LATENCY_WARMUP`, batch 1,
    ``torch.inference_mode``, this process's torch threads), ``image`` ("SxS") and ``threads``.

    The RoI head runs on ``MODEL.RPN.POST_NMS_TOPK_TEST`` proposals whatever the weights, so random
    weights cost what trained ones do up to the final NMS; the backbone + pyramid part is exact.
    A Fast R-CNN config (``MODEL.PROPOSAL_GENERATOR.NAME "PrecomputedProposals"``: no RPN, Table 2's
    protocol) reads its proposals from the input: the image carries
    ``DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST`` random boxes (seed 0, 8-64 px a side, inside the image)
    in place of the dumped ones, and the cost is the backbone, pyramid and RoI head without the RPN that
    made them.
    """
    import torch
    from detectron2.modeling import build_model

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    size = int(cfg.INPUT.MIN_SIZE_TEST)
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(3, size, size, generator=g) * 255).round()
    inputs = [{"image": image, "height": size, "width": size}]
    if model.proposal_generator is None:  # Fast R-CNN on precomputed proposals
        inputs[0]["proposals"] = _random_proposals(size, int(cfg.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST), g)
    with torch.no_grad():
        gflops = count_gflops(model, inputs)
    with torch.inference_mode():
        times = time_round_robin({"model": lambda: model(inputs)})["model"]
    return dict(params_m=count_params_m(model), gflops=gflops, image=f"{size}x{size}",
                latency_s=statistics.median(times), threads=torch.get_num_threads())


def _random_proposals(size: int, n: int, generator):
    """``n`` proposals in an ``size`` x ``size`` image as Detectron2's precomputed-proposal loader gives
    them (``Instances`` with ``proposal_boxes`` and ``objectness_logits``): boxes 8-64 px a side
    (clipped to 1..size), XYXY in pixels, logits in descending order."""
    import torch
    from detectron2.structures import Boxes, Instances

    wh = torch.rand(n, 2, generator=generator) * 56 + 8
    xy = torch.rand(n, 2, generator=generator) * (size - wh).clamp(min=1)
    boxes = torch.cat([xy, xy + wh], dim=1).clamp(max=size)
    out = Instances((size, size))
    out.proposal_boxes = Boxes(boxes)
    out.objectness_logits = torch.linspace(1.0, -1.0, n)
    return out
