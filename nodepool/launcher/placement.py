"""Which provider leases this launcher seeks, and which it hands over: the spread's rules.

`decide` is pure (plain data, a given clock); `Placement` feeds it from the
cache (launcher components, provider leases) on the launcher loop and
publishes what this launcher waits for in its launcher component.

The rules (doc/reliability.md, "Providers spread across launchers"):

1. Each provider has one rendezvous owner among the live launchers that may
   own it (spread.assign). The owner seeks its lease.
2. A launcher holding a provider it is not the owner of keeps it until the
   owner says, in its launcher component (`waiting`), that it waits for that
   lease; then it hands the provider over (its worker stops taking requests,
   hands back what it has in flight, and only then deletes the lease). An
   owner that never asks (an older launcher, one that is stuck) never leaves
   the provider unrun.
3. A lease nobody holds is taken by a launcher other than its owner only
   after it has been free for `grace` x its place in the standby line (by
   rendezvous weight): an owner that is alive takes it long before, and the
   launchers of the line do not race each other.

A dead launcher's component goes with its session, at the same moment as its
leases: the owners recomputed without it take them at once (rule 1).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Iterable, Mapping

from nodepool.launcher.spread import ProviderFilter, assign, standby_rank

log = logging.getLogger("nodepool.launcher.placement")

ORPHAN_GRACE = 3.0   # seconds a free lease waits for its owner per place in line (Tuning.orphan_grace)


@dataclasses.dataclass(frozen=True)
class LauncherSeat:
    """A live launcher as its component says: what it may own, which leases it waits for."""

    serves: ProviderFilter = ProviderFilter()
    waiting: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class Decision:
    want: frozenset[str]          # leases to hold or seek
    hand_over: frozenset[str]     # held leases whose owner waits for them
    owners: Mapping[str, str]     # provider -> rendezvous owner
    due: float | None             # when a free lease's wait ends (monotonic), if any


def decide(me: str, providers: Iterable[str], launchers: Mapping[str, LauncherSeat],
           holders: Mapping[str, str], free_since: Mapping[str, float], held: set[str],
           now: float, grace: float = ORPHAN_GRACE) -> Decision:
    """What `me` should seek and give up now (`holders`: provider -> its lease holder)."""
    seats = dict(launchers)
    filters = {lid: seat.serves for lid, seat in seats.items()}
    owners = assign(providers, filters)
    want: set[str] = set()
    hand_over: set[str] = set()
    due: float | None = None
    for provider, owner in owners.items():
        if not filters[me].allows(provider):
            continue
        if owner == me:
            want.add(provider)
        elif provider in held:
            if provider in seats[owner].waiting:
                hand_over.add(provider)
            else:
                want.add(provider)
        elif provider not in holders:
            rank = standby_rank(provider, me, owner, filters)
            since = free_since.get(provider, now)
            if rank is None:
                continue
            ends = since + grace * rank
            if now >= ends:
                want.add(provider)
            else:
                due = ends if due is None else min(due, ends)
    return Decision(frozenset(want), frozenset(hand_over), owners, due)


def seats_from_components(components: Iterable[dict]) -> dict[str, LauncherSeat]:
    """Live launchers from their component JSON (those without a `launcher_id` take no part:
    launchers that do not spread, Nodepool's own)."""
    seats = {}
    for data in components:
        lid = data.get("launcher_id")
        if not isinstance(lid, str):
            continue
        waiting = data.get("waiting")
        seats[lid] = LauncherSeat(ProviderFilter.from_json(data.get("serves")),
                                  frozenset(waiting) if isinstance(waiting, list) else frozenset())
    return seats


class Placement:
    """This launcher's side of the spread, run on the launcher loop only."""

    def __init__(self, me: str, serves: ProviderFilter, grace: float = ORPHAN_GRACE):
        self.me = me
        self.serves = serves
        self.grace = grace
        self.free_since: dict[str, float] = {}
        self.owners: Mapping[str, str] = {}

    def component_data(self) -> dict:
        """What the launcher component carries for the spread (PROTOCOL.md: extra keys)."""
        return {"launcher_id": self.me, "serves": self.serves.to_json(), "waiting": []}

    def decide(self, providers: Iterable[str], components: Iterable[dict],
               holders: Mapping[str, str], held: set[str], now: float) -> Decision:
        providers = set(providers)
        self._note_free(providers, holders, now)
        seats = seats_from_components(components)
        seats.setdefault(self.me, LauncherSeat(self.serves))
        decision = decide(self.me, providers, seats, holders, self.free_since, held, now,
                          self.grace)
        if decision.owners != self.owners:
            mine = sorted(p for p, o in decision.owners.items() if o == self.me)
            log.info("Providers spread over %d launcher(s); ours: %s", len(seats),
                     ", ".join(mine) or "none")
        self.owners = decision.owners
        return decision

    def _note_free(self, providers: set[str], holders: Mapping[str, str], now: float) -> None:
        """Since when each lease has been free, as far as we have seen (from our start)."""
        for name in providers:
            if name in holders:
                self.free_since.pop(name, None)
            else:
                self.free_since.setdefault(name, now)
