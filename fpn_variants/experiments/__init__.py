"""Experiment tooling, a layer above the library: suites (the paper's tables as data), sweep
orchestration (:mod:`.sweep`), one run and the proposals stage (:mod:`.runner`), the sweep folder and
its run records (:mod:`.folder`, :mod:`.records`), cost measurement (:mod:`.costs`) and the report
(:mod:`.report`). The library (``fpn_variants.modeling``, ``config``, ``data``, ``evaluation``,
``engine``, ``fileio``, ...) never imports this package; this package runs the library's
``train_net`` and ``proposals`` as subprocesses and builds its models for costs.

Commands: ``python -m fpn_variants.sweep`` / ``fpn-variants-sweep`` and ``python -m
fpn_variants.report`` / ``fpn-variants-report``.
"""
