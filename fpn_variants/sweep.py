"""``python -m fpn_variants.sweep``: the command of :mod:`fpn_variants.experiments.sweep` (run a suite's
rows x seeds, then its report). The code lives in the experiments layer; this module only keeps the
command where users type it."""
import sys

from .experiments.sweep import cli

if __name__ == "__main__":
    sys.exit(cli())
