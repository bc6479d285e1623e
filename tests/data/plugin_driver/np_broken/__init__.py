"""A driver package that is installed but broken: importing it fails."""

raise ImportError("np_broken needs libbroken, which is not installed")
