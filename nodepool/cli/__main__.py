"""`python -m nodepool.cli` runs the `nodepool` command."""

import sys

from nodepool.cli import main

sys.exit(main())
