"""Command line: `python3 tools/soak --duration 150 --seed 1`: one summary line, exit 0 only without violations."""

from __future__ import annotations

import os
import sys

if not __package__:
    # Run as `python3 tools/soak`: import the package from its parent folder (tools/, which also
    # holds zookeeper.py and ossim), and keep this folder off sys.path so its module names never
    # shadow other modules.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.path.dirname(here))
    from soak.cli import main
else:
    from .cli import main

if __name__ == "__main__":
    sys.exit(main())
