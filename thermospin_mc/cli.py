"""Entry point ``python -m thermospin_mc.cli`` (and the ``thermospin-mc`` script):
the command line itself is :mod:`thermospin_mc.app.cli`.
"""

import sys

from .app.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
