"""Which providers a reload added, removed or changed."""

from __future__ import annotations

from dataclasses import dataclass

from nodepool.config.model import Config


@dataclass(frozen=True)
class ProviderChanges:
    """Provider names by what a reload did to them, each in file order."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]


def provider_changes(old: Config | None, new: Config) -> ProviderChanges:
    """Compare two loads; a provider is changed when its value is not equal.

    The launcher restarts only added and changed providers and stops removed
    ones; ``old`` is None on the first load.
    """
    before = old.providers if old is not None else {}
    after = new.providers
    return ProviderChanges(
        added=tuple(n for n in after if n not in before),
        removed=tuple(n for n in before if n not in after),
        changed=tuple(n for n in after if n in before and before[n] != after[n]),
        unchanged=tuple(n for n in after if n in before and before[n] == after[n]),
    )
