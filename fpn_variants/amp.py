"""Mixed precision (``SOLVER.AMP.ENABLED``) on the CPU as well as on CUDA.

Detectron2's ``AMPTrainer`` asserts CUDA and scales gradients for fp16, so ``SOLVER.AMP.ENABLED True``
cannot train a CPU model. This module gives the CPU its own mixed precision:

* **training** (:class:`CPUAMPTrainer`): forward and losses under ``torch.autocast("cpu",
  dtype=torch.bfloat16)``; the backward pass and the optimizer step stay in fp32 on fp32 master
  weights. bf16 has fp32's exponent range, so no gradient scaler is needed (PyTorch AMP docs,
  "CPU autocast"). On CUDA, :func:`amp_trainer` returns Detectron2's own ``AMPTrainer`` unchanged;
* **evaluation** (:func:`autocast_inference`): Detectron2's ``inference_on_dataset`` runs no
  autocast ("To use AMP in inference, run inference under autocast()", its config comment); the
  wrapper runs the model under autocast (bf16 on CPU, ``fp16`` on CUDA) and returns every floating
  tensor of its outputs in fp32, so evaluators (``COCOEvaluator``, proposal recall, proposal dumps)
  see what they see without AMP;
* **hardware check** (:func:`cpu_bf16_supported`): on a CPU without native bf16 (AVX512-BF16 or AMX),
  bf16 autocast is emulated and slower than fp32, so :func:`amp_dtype` warns once and the run stays
  in fp32 (``None``).

Where it pays: convolutions run in oneDNN's bf16 kernels; RoIAlign, NMS, losses and box decoding run
in fp32 (autocast's fp32 list and Detectron2's explicit ``.float()`` casts). Measured speed and
accuracy: ``benchmarks/bench_recipe.py --variants before bf16`` and README "Mixed precision".
"""
from __future__ import annotations

import functools
import logging
import time
import warnings
from typing import Any, Optional

import torch
from detectron2.engine import SimpleTrainer
from torch import nn

__all__ = ["cpu_bf16_supported", "amp_dtype", "model_device_type", "CPUAMPTrainer", "amp_trainer",
           "AutocastInference", "autocast_inference", "outputs_to_float"]

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def cpu_bf16_supported() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX tiles, as oneDNN uses them).

    The flags are read by PyTorch (``torch.cpu._is_avx512_bf16_supported`` /
    ``_is_amx_tile_supported``); a PyTorch without these probes reports False."""
    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(p()) for p in probes if p is not None)


def model_device_type(model: nn.Module) -> str:
    """``"cpu"`` or ``"cuda"``: the device type of the model's first parameter (``"cpu"`` if it has none)."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    p = next(model.parameters(), None)
    return "cpu" if p is None else p.device.type


def amp_dtype(device_type: str, enabled: bool) -> Optional[torch.dtype]:
    """The autocast dtype for ``SOLVER.AMP.ENABLED = enabled`` on ``device_type``, or None for fp32.

    ``"cpu"``: ``torch.bfloat16`` where :func:`cpu_bf16_supported`, else a warning (once per process)
    and None. ``"cuda"``: ``torch.float16`` (Detectron2's ``AMPTrainer`` default). Any other device
    type: None with a warning.
    """
    if not enabled:
        return None
    if device_type == "cuda":
        return torch.float16
    if device_type == "cpu":
        if cpu_bf16_supported():
            return torch.bfloat16
        _warn_once("SOLVER.AMP.ENABLED=True but this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 would be "
                   "emulated and slower than fp32, so this run stays in fp32")
        return None
    _warn_once(f"SOLVER.AMP.ENABLED=True on device type {device_type!r}: no autocast there; valid: 'cpu', 'cuda'. "
               "This run stays in fp32")
    return None


@functools.lru_cache(maxsize=None)
def _warn_once(msg: str) -> None:
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
    logger.warning(msg)


class CPUAMPTrainer(SimpleTrainer):
    """Detectron2's ``SimpleTrainer`` with the forward pass and losses under CPU bf16 autocast.

    The same step as ``SimpleTrainer.run_step`` (data, zero_grad, forward, ``sum(losses)``,
    backward, ``after_backward``, metrics, ``optimizer.step``) with the forward wrapped in
    ``torch.autocast("cpu", dtype)``. Parameters, gradients and optimizer state stay fp32;
    no gradient scaler (bf16 keeps fp32's exponent range).
    """

    def __init__(self, model, data_loader, optimizer, dtype: torch.dtype = torch.bfloat16, **kwargs):
        super().__init__(model, data_loader, optimizer, **kwargs)
        self.dtype = dtype

    def run_step(self):
        assert self.model.training, "[CPUAMPTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast("cpu", dtype=self.dtype):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses = loss_dict
                loss_dict = {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        if self.async_write_metrics:
            self.concurrent_executor.submit(self._write_metrics, loss_dict, data_time, iter=self.iter)
        else:
            self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


def amp_trainer(model, data_loader, optimizer):
    """What ``fpn_variants.engine.Trainer`` builds for ``SOLVER.AMP.ENABLED True`` (in place of
    Detectron2's CUDA-only ``AMPTrainer`` in ``DefaultTrainer.__init__``), by the model's device:
    Detectron2's ``AMPTrainer`` for a CUDA model, :class:`CPUAMPTrainer` (bf16) for a CPU model on
    a CPU with native bf16, and Detectron2's ``SimpleTrainer`` (fp32, after a warning) otherwise."""
    from detectron2.engine import AMPTrainer

    device = model_device_type(model)
    if device == "cuda":
        return AMPTrainer(model, data_loader, optimizer)
    dtype = amp_dtype(device, True)
    if dtype is None:
        return SimpleTrainer(model, data_loader, optimizer)
    logger.info("SOLVER.AMP.ENABLED: training under torch.autocast(%r, dtype=%s)", device, dtype)
    return CPUAMPTrainer(model, data_loader, optimizer, dtype=dtype)


def outputs_to_float(x: Any) -> Any:
    """``x`` with every floating tensor cast to fp32, through lists, tuples, dicts and Detectron2's
    ``Instances`` / ``Boxes`` (other values unchanged). Evaluators call ``.numpy()``, which bf16 lacks."""
    from detectron2.structures import Boxes, Instances

    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() and x.dtype != torch.float32 else x
    if isinstance(x, Boxes):
        return Boxes(outputs_to_float(x.tensor))
    if isinstance(x, Instances):
        out = Instances(x.image_size)
        for k, v in x.get_fields().items():
            out.set(k, outputs_to_float(v))
        return out
    if isinstance(x, dict):
        return type(x)((k, outputs_to_float(v)) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return type(x)(outputs_to_float(v) for v in x)
    return x


class AutocastInference(nn.Module):
    """``model`` run under ``torch.autocast(device_type, dtype)``, outputs in fp32
    (:func:`outputs_to_float`). ``train()`` / ``eval()`` reach the wrapped model (Detectron2's
    ``inference_on_dataset`` switches it to eval mode)."""

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.device_type = device_type
        self.dtype = dtype

    def forward(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.model(*args, **kwargs)
        return outputs_to_float(out)


def autocast_inference(model: nn.Module, cfg) -> nn.Module:
    """``model`` itself when ``cfg.SOLVER.AMP.ENABLED`` is off (or the device has no AMP, see
    :func:`amp_dtype`), else an :class:`AutocastInference` wrapper: bf16 on a CPU with native bf16,
    fp16 on CUDA."""
    device = model_device_type(model)
    dtype = amp_dtype(device, bool(cfg.SOLVER.AMP.ENABLED))
    if dtype is None:
        return model
    return AutocastInference(model, device, dtype)
