"""Registries of the pyramid's parts: every op a design is made of is one constructor plus one
registry line, and :class:`~fpn_variants.modeling.pyramid.FeaturePyramid` looks its parts up by name.

=====================  ==============================================================================
registry               constructor signature (``opts``: :class:`~fpn_variants.modeling.options.PyramidOptions`)
=====================  ==============================================================================
:data:`LATERALS`       ``(in_channels, out_channels, opts) -> nn.Module``: C_k (N, C_k, H, W) -> (N, d, H, W)
:data:`UPSAMPLES`      ``(channels, opts) -> nn.Module`` with ``forward(x, like)``: x (N, d, h, w) to like's H, W
:data:`FUSIONS`        ``(num_inputs, channels, opts) -> nn.Module`` with ``forward(list of (N, d, H, W))``
:data:`PATHS`          a path class ``(level_has_lateral, channels, opts)`` with ``STAGE`` (``"merge"``: on
                       the lateral maps, before the output op; ``"post"``: on the output maps; ``"final"``:
                       on every level after the top block's, ``level_has_lateral`` then covering those
                       levels too) and ``REPEATABLE`` (``opts.path_repeats`` copies)
:data:`OUTPUTS`        ``(channels, opts) -> Optional[nn.Module]``: (N, d, H, W) -> (N, d, H, W), or none
:data:`ACTIVATIONS`    ``() -> Optional[nn.Module]``: the non-linearity after every extra conv
:data:`TOP_BLOCKS`     ``(in_features, input_shapes, out_channels) -> Optional[nn.Module]``: Detectron2's
                       top-block interface (``in_feature``, ``num_levels``, ``forward(x) -> [maps]``)
=====================  ==============================================================================

A new op: write the constructor, register it (``@FUSIONS.register("mine")``), and every preset,
config key and LazyConfig argument that names the op's kind accepts ``"mine"``; the vocabularies in
error messages and in config validation are the registries' names, in registration order.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, Tuple

__all__ = ["PartRegistry", "LATERALS", "UPSAMPLES", "FUSIONS", "PATHS", "OUTPUTS", "ACTIVATIONS", "TOP_BLOCKS"]


class PartRegistry:
    """Name -> constructor of one kind of pyramid part (``option`` names the argument that picks it).

    Raises (:meth:`register`): ``KeyError`` when a name is registered twice by different code. The
    same definition registered again (its module reloaded, e.g. in a spawned worker) replaces itself.
    """

    def __init__(self, option: str):
        self.option = option
        self._parts: Dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        """Decorator: register the constructor (function or class) under ``name``."""
        def deco(obj: Callable) -> Callable:
            old = self._parts.get(name)
            if old is not None and _origin(old) != _origin(obj):
                raise KeyError(f"{self.option} {name!r} is registered already (by {self._parts[name]!r})")
            self._parts[name] = obj
            return obj
        return deco

    def choices(self) -> Tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._parts)

    def check(self, value, option: str = "", quote: bool = True) -> None:
        """Raise ``ValueError`` naming ``option=value`` and every valid name if ``value`` is not registered.
        ``quote``: the valid names as Python literals (``'sum', 'avg'``) or bare (config keys' style)."""
        if value not in self._parts:
            valid = ", ".join(map(repr, self._parts) if quote else self._parts)
            raise ValueError(f"{option or self.option}={value!r} is not valid; valid values: {valid}")

    def get(self, value, option: str = "", quote: bool = True) -> Callable:
        """The constructor registered as ``value``; ``ValueError`` (see :meth:`check`) if none is."""
        self.check(value, option, quote)
        return self._parts[value]

    def __contains__(self, value) -> bool:
        return value in self._parts

    def __iter__(self) -> Iterator[str]:
        return iter(self._parts)

    def __repr__(self) -> str:
        return f"PartRegistry({self.option!r}: {', '.join(self._parts)})"


def _origin(obj) -> tuple:
    return getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)


LATERALS = PartRegistry("lateral")
UPSAMPLES = PartRegistry("upsample_mode")
FUSIONS = PartRegistry("fuse_type")
PATHS = PartRegistry("path")
OUTPUTS = PartRegistry("output")
ACTIVATIONS = PartRegistry("activation")
TOP_BLOCKS = PartRegistry("top_block")
