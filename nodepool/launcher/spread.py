"""Which launcher should own which provider: balanced rendezvous hashing, a pure function.

Every launcher computes the same answer from the same plain data (the
providers, and the live launchers with the providers each may serve, as
their launcher components in ZooKeeper say), so no coordinator is needed.

Rendezvous (highest-random-weight) hashing gives each (launcher, provider)
pair a weight from a hash of both names. Taken alone (each provider to its
heaviest launcher) it spreads providers only evenly on average; with 6
providers over 3 launchers it often gives one launcher 3 or 4. So the pairs
are taken heaviest first, and a launcher stops taking providers once it has
its share: N providers over M launchers gives `N mod M` launchers
`N // M + 1` and the others `N // M`, within one of each other. A launcher
joining or leaving changes the weights of its own pairs only, so most
providers keep their owner; a few more than the minimum can move when the
shares change (doc/reliability.md, "Providers spread across launchers").

A launcher's `ProviderFilter` (`--providers`, `--exclude-providers`) limits
what it may own; a provider no live launcher may own has no owner here.
Pins can make shares impossible: such providers go to the least loaded
launcher allowed to own them.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
from typing import Iterable, Mapping


@dataclasses.dataclass(frozen=True)
class ProviderFilter:
    """Which providers a launcher may own: names or shell patterns (`rax-*`)."""

    only: tuple[str, ...] = ()       # empty: every provider
    exclude: tuple[str, ...] = ()

    def allows(self, provider: str) -> bool:
        if self.only and not any(fnmatch.fnmatchcase(provider, p) for p in self.only):
            return False
        return not any(fnmatch.fnmatchcase(provider, p) for p in self.exclude)

    def to_json(self) -> dict:
        return {"only": list(self.only), "exclude": list(self.exclude)}

    @classmethod
    def from_json(cls, data: object) -> ProviderFilter:
        """From a launcher component's `serves`; anything unreadable allows everything."""
        if not isinstance(data, dict):
            return cls()
        return cls(only=_names(data.get("only")), exclude=_names(data.get("exclude")))

    @classmethod
    def from_option(cls, only: str | None, exclude: str | None) -> ProviderFilter:
        """From the command line's comma-separated lists."""
        return cls(only=_split(only), exclude=_split(exclude))

    def __str__(self) -> str:
        parts = []
        if self.only:
            parts.append("only " + ",".join(self.only))
        if self.exclude:
            parts.append("not " + ",".join(self.exclude))
        return "; ".join(parts) or "every provider"


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(sorted({t.strip() for t in (text or "").split(",") if t.strip()}))


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(sorted(str(v) for v in value))


def weight(launcher: str, provider: str) -> int:
    """The pair's rendezvous weight: the same on every launcher and every run."""
    digest = hashlib.sha256(f"{launcher}\0{provider}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def assign(providers: Iterable[str],
           launchers: Mapping[str, ProviderFilter]) -> dict[str, str]:
    """provider -> the launcher that should own it (providers no launcher allows: absent)."""
    providers = sorted(set(providers))
    allowed = {p: [lid for lid in sorted(launchers) if launchers[lid].allows(p)]
               for p in providers}
    ownable = [p for p in providers if allowed[p]]
    if not ownable:
        return {}
    share, extra = divmod(len(ownable), len(launchers))
    count = dict.fromkeys(launchers, 0)
    full_plus = 0   # launchers holding share + 1 (only `extra` of them may)
    owner: dict[str, str] = {}
    pairs = sorted(((weight(lid, p), p, lid) for p in ownable for lid in allowed[p]),
                   reverse=True)
    for _, provider, lid in pairs:
        if provider in owner:
            continue
        held = count[lid]
        if held > share or (held == share and full_plus >= extra):
            continue
        owner[provider] = lid
        count[lid] = held + 1
        if held + 1 == share + 1:
            full_plus += 1
    for provider in ownable:   # pins left these over: the least loaded allowed launcher
        if provider not in owner:
            lid = min(allowed[provider], key=lambda x: (count[x], -weight(x, provider)))
            owner[provider] = lid
            count[lid] += 1
    return owner


def standby_rank(provider: str, launcher: str, owner: str | None,
                 launchers: Mapping[str, ProviderFilter]) -> int | None:
    """`launcher`'s place in line to stand in for `provider`'s owner (1 = first), or None.

    The owner itself, and a launcher that may not own the provider, have no
    place. The line is by rendezvous weight, so every launcher agrees on it.
    """
    if launcher == owner or launcher not in launchers or \
            not launchers[launcher].allows(provider):
        return None
    line = sorted((lid for lid, f in launchers.items() if lid != owner and f.allows(provider)),
                  key=lambda lid: -weight(lid, provider))
    return line.index(launcher) + 1
