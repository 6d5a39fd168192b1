"""Entry point ``python -m thermospin_mc.cli`` (and the ``thermospin-mc`` script):
the command line itself is :mod:`thermospin_mc.app.cli`.
"""

import sys

from .app.cli import build_model, main, parse_times

__all__ = ["main", "build_model", "parse_times"]

if __name__ == "__main__":
    sys.exit(main())
