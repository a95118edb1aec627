"""``python -m fpn_variants.report SWEEP_DIR``: the command of :mod:`fpn_variants.experiments.report`
(write a sweep folder's report). The code lives in the experiments layer; this module only keeps the
command where users type it."""
import sys

from .experiments.report import cli

if __name__ == "__main__":
    sys.exit(cli())
