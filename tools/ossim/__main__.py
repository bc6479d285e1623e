"""Command line: run the simulator on 127.0.0.1 until SIGTERM/SIGINT, e.g. `python3 tools/ossim --port 8775`."""

from __future__ import annotations

import os
import sys

if not __package__:
    # Run as `python3 tools/ossim`: import the package from its parent folder, and keep this folder off
    # sys.path so its module names never shadow other modules.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.path.dirname(here))
    from ossim.cli import main
else:
    from .cli import main

if __name__ == "__main__":
    sys.exit(main())
