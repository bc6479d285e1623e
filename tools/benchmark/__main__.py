"""Command line: `python3 tools/benchmark --concurrency 50 --requests 1000 ...`: one JSON line."""

from __future__ import annotations

import os
import sys

if not __package__:
    # Run as `python3 tools/benchmark`: import the package from its parent folder, and keep this
    # folder off sys.path so its module names never shadow other modules.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.path.dirname(here))
    from benchmark.cli import main
else:
    from .cli import main

if __name__ == "__main__":
    sys.exit(main())
