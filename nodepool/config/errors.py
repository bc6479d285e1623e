"""Configuration problems: where in which file, and what was expected."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Keys made only of these characters print bare in a key path; anything else
# (a dot, a space, a bracket) would make the path ambiguous, so it is quoted.
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-/]+$")

PathPart = str | int


def format_path(parts: Sequence[object]) -> str:
    """Render ['providers', 1, 'pools', 0, 'min-ram'] as providers[1].pools[0].min-ram."""
    out = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def join_path(base: str, *parts: PathPart) -> str:
    """Extend an already formatted key path with more keys or list indexes."""
    tail = format_path(parts)
    if not base:
        return tail
    if not tail or tail.startswith("["):
        return base + tail
    return f"{base}.{tail}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration file.

    ``path`` is the key path inside the file (``providers[1].pools[0].name``);
    it is empty for problems with the file as a whole (unreadable, YAML
    syntax, empty).
    """

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        if self.path:
            return f"{self.file}: {self.path}: {self.message}"
        return f"{self.file}: {self.message}"


class ConfigError(Exception):
    """Raised by load_config when the file has one or more problems."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
