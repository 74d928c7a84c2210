"""`python -m maelib ...`: the `maelib` command (maelib.train.cli)."""

import sys

from .train.cli import console

sys.exit(console())
