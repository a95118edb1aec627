"""Loading checkpoints, proposal files and configs without executing code from them.

* ``.pth`` checkpoints: fvcore / Detectron2 call ``torch.load`` without ``weights_only``, whose
  default is ``True`` since torch 2.6 (this project pins 2.14): only tensors and plain containers
  are unpickled. Nothing to do here but test it.
* ``.pkl`` files — Detectron2 model-zoo / Caffe2 checkpoints and precomputed proposals
  (``MODEL.LOAD_PROPOSALS``) — are read by Detectron2 with plain ``pickle.load``, which runs any
  code the file names. :func:`safe_pickle_in_detectron2` swaps the ``pickle`` Detectron2 uses there
  for :class:`RestrictedUnpickler`, which builds only numpy arrays / dtypes / scalars and Python
  containers and refuses any other global with an ``UnpicklingError`` naming it and the file.
  Detectron2's own logic around the load (key renaming, format detection) is kept.
* YAML configs: :func:`fpn_variants.config.load_config` merges with ``allow_unsafe=False``
  (``yaml.safe_load`` only; Detectron2's default would fall back to ``yaml.unsafe_load``).
"""
from __future__ import annotations

import contextlib
import io
import pickle
import types

__all__ = ["RestrictedUnpickler", "safe_pickle_load", "safe_pickle_in_detectron2", "SAFE_GLOBALS"]

# (module, name) that a checkpoint / proposal pickle may reference: numpy arrays and scalars
# (numpy 1.x and 2.x module paths) and builtin containers.
SAFE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # arrays, pickle protocol 5
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
    ("builtins", "complex"), ("builtins", "slice"), ("builtins", "bytearray"),
    ("_codecs", "encode"),  # numpy arrays pickled by Python 2 (latin1 byte strings)
})


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves only :data:`SAFE_GLOBALS`.

    Raises:
        pickle.UnpicklingError: the data names any other global (e.g. ``os.system``); the message
            names it and ``source``.
    """

    def __init__(self, file, *, source: str = "<pickle>", **kwargs):
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module, name):
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"{self.source}: refusing to load {module}.{name} — a checkpoint / proposal pickle holds only numpy "
            "arrays and containers, so this file may run code; convert it to a .pth state dict if you trust it"
        )


def safe_pickle_load(file, *, encoding: str = "latin1", **kwargs):
    """``pickle.load`` through :class:`RestrictedUnpickler` (same signature as ``pickle.load``)."""
    source = getattr(file, "name", "<pickle>")
    return RestrictedUnpickler(file, source=str(source), encoding=encoding, **kwargs).load()


def _safe_loads(data: bytes, **kwargs):
    return safe_pickle_load(io.BytesIO(data), **kwargs)


_SAFE_PICKLE = types.SimpleNamespace(
    load=safe_pickle_load, loads=_safe_loads, dump=pickle.dump, dumps=pickle.dumps,
    UnpicklingError=pickle.UnpicklingError, HIGHEST_PROTOCOL=pickle.HIGHEST_PROTOCOL,
)
_PATCHED_MODULES = ("detectron2.data.build", "detectron2.checkpoint.detection_checkpoint")


@contextlib.contextmanager
def safe_pickle_in_detectron2():
    """While active, Detectron2's ``.pkl`` checkpoint loader and precomputed-proposal loader unpickle
    with :class:`RestrictedUnpickler`. Re-entrant; restores the modules' ``pickle`` on exit."""
    import importlib

    saved = []
    for name in _PATCHED_MODULES:
        mod = importlib.import_module(name)
        saved.append((mod, mod.pickle))
        mod.pickle = _SAFE_PICKLE
    try:
        yield
    finally:
        for mod, orig in reversed(saved):
            mod.pickle = orig
