"""The spread of providers over launchers (balanced rendezvous hashing) and the lease rules,
as pure functions of plain data."""

from __future__ import annotations

import random
from collections import Counter

from nodepool.launcher.placement import LauncherSeat, decide, seats_from_components
from nodepool.launcher.spread import ProviderFilter, assign, standby_rank

ANY = ProviderFilter()


def launchers(*names: str) -> dict[str, ProviderFilter]:
    return dict.fromkeys(names, ANY)


def moved(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {p for p in before if before[p] != after.get(p)}


def test_six_providers_over_three_launchers_are_two_each() -> None:
    owners = assign([f"p{i}" for i in range(6)], launchers("a:1", "b:2", "c:3"))
    assert sorted(Counter(owners.values()).values()) == [2, 2, 2]


def test_every_spread_is_balanced_within_one() -> None:
    rng = random.Random(7)
    for _ in range(300):
        n, m = rng.randint(0, 40), rng.randint(1, 8)
        providers = [f"prov-{rng.random()}" for _ in range(n)]
        ls = launchers(*(f"host{rng.random()}:1" for _ in range(m)))
        owners = assign(providers, ls)
        assert set(owners) == set(providers)
        counts = [list(owners.values()).count(lid) for lid in ls]
        assert max(counts) - min(counts) <= 1, (n, m, counts)


def test_the_spread_does_not_depend_on_order() -> None:
    providers = [f"p{i}" for i in range(9)]
    ls = launchers("x:1", "y:1", "z:1")
    assert assign(providers, ls) == assign(list(reversed(providers)), dict(reversed(ls.items())))


def test_a_joining_launcher_takes_its_share_and_few_others_move() -> None:
    rng = random.Random(11)
    extra_moves = total = 0
    for _ in range(200):
        providers = [f"p{rng.random()}" for _ in range(12)]
        names = [f"l{rng.random()}" for _ in range(3)]
        before = assign(providers, launchers(*names))
        after = assign(providers, launchers(*names, "joiner:1"))
        taken = {p for p, o in after.items() if o == "joiner:1"}
        assert len(taken) == 3                      # its share of 12 over 4
        assert taken <= moved(before, after)
        extra_moves += len(moved(before, after) - taken)
        total += len(providers)
    # The minimum is the joiner's share; shares shift, so a few more may move (about 5 %).
    assert extra_moves <= 0.1 * total


def test_a_leaving_launchers_providers_move_and_few_others() -> None:
    rng = random.Random(13)
    extra_moves = total = 0
    for _ in range(200):
        providers = [f"p{rng.random()}" for _ in range(12)]
        names = [f"l{rng.random()}" for _ in range(4)]
        before = assign(providers, launchers(*names))
        after = assign(providers, launchers(*names[1:]))
        had = {p for p, o in before.items() if o == names[0]}
        assert had <= moved(before, after)
        extra_moves += len(moved(before, after) - had)
        total += len(providers)
    assert extra_moves <= 0.1 * total


def test_pins_and_exclusions_are_honoured() -> None:
    providers = [f"p{i}" for i in range(6)]
    ls = {"a:1": ProviderFilter(only=("p0", "p1")), "b:1": ProviderFilter(exclude=("p[0-2]",)),
          "c:1": ANY}
    owners = assign(providers, ls)
    assert {p for p, o in owners.items() if o == "a:1"} <= {"p0", "p1"}
    assert not {"p0", "p1", "p2"} & {p for p, o in owners.items() if o == "b:1"}
    assert set(owners) == set(providers)


def test_a_provider_nobody_may_own_has_no_owner() -> None:
    assert assign(["p0", "p1"], {"a:1": ProviderFilter(only=("p0",))}) == {"p0": "a:1"}
    assert assign(["p0"], {}) == {}


def test_filters_read_options_and_component_json() -> None:
    f = ProviderFilter.from_option(" rax-*, ovh ", "rax-iad")
    assert f.allows("rax-dfw") and f.allows("ovh") and not f.allows("rax-iad")
    assert not f.allows("vexxhost")
    assert ProviderFilter.from_json(f.to_json()) == f
    assert ProviderFilter.from_json("junk") == ANY


def test_standby_line_is_by_weight_and_excludes_the_owner_and_the_unfit() -> None:
    ls = {"a:1": ANY, "b:1": ANY, "c:1": ProviderFilter(exclude=("p",))}
    assert standby_rank("p", "a:1", "a:1", ls) is None
    assert standby_rank("p", "c:1", "a:1", ls) is None
    assert standby_rank("p", "b:1", "a:1", ls) == 1


# -- the lease rules (placement.decide) -------------------------------------------------

def seats(*names: str, waiting: dict[str, set[str]] | None = None) -> dict[str, LauncherSeat]:
    waiting = waiting or {}
    return {n: LauncherSeat(ANY, frozenset(waiting.get(n, ()))) for n in names}


PROVIDERS = [f"p{i}" for i in range(6)]


def test_an_owner_seeks_its_own_providers_only() -> None:
    s = seats("a:1", "b:1", "c:1")
    owners = assign(PROVIDERS, {k: v.serves for k, v in s.items()})
    d = decide("a:1", PROVIDERS, s, holders={}, free_since={}, held=set(), now=0.0)
    assert d.want == {p for p, o in owners.items() if o == "a:1"}
    assert d.due is not None   # the others' free leases: a's wait for them ends then


def test_a_held_provider_is_kept_until_its_owner_waits_for_it() -> None:
    s = seats("a:1", "b:1")
    owners = assign(PROVIDERS, {k: v.serves for k, v in s.items()})
    theirs = {p for p, o in owners.items() if o == "b:1"}
    holders = dict.fromkeys(PROVIDERS, "a:1")
    d = decide("a:1", PROVIDERS, s, holders, {}, set(PROVIDERS), now=0.0)
    assert d.want == set(PROVIDERS) and not d.hand_over
    s = seats("a:1", "b:1", waiting={"b:1": theirs})
    d = decide("a:1", PROVIDERS, s, holders, {}, set(PROVIDERS), now=0.0)
    assert d.hand_over == theirs and d.want == set(PROVIDERS) - theirs


def test_a_free_lease_is_taken_by_the_standby_line_after_its_grace() -> None:
    s = seats("a:1", "b:1", "c:1")
    owners = assign(["p"], {k: v.serves for k, v in s.items()})
    owner = owners["p"]
    line = sorted((n for n in s if n != owner),
                  key=lambda n: standby_rank("p", n, owner, {k: ANY for k in s}))
    first, second = line
    assert "p" not in decide(first, ["p"], s, {}, {"p": 0.0}, set(), now=2.9).want
    assert "p" in decide(first, ["p"], s, {}, {"p": 0.0}, set(), now=3.0).want
    assert "p" not in decide(second, ["p"], s, {}, {"p": 0.0}, set(), now=3.0).want
    assert decide(second, ["p"], s, {}, {"p": 0.0}, set(), now=3.0).due == 6.0
    # Held by someone: nobody but the owner seeks it.
    assert "p" not in decide(first, ["p"], s, {"p": owner}, {}, set(), now=99.0).want


def test_launchers_without_a_launcher_id_take_no_part() -> None:
    comps = [{"kind": "launcher", "hostname": "old"},
             {"kind": "launcher", "launcher_id": "new:1", "serves": {"only": ["p"]},
              "waiting": ["p"]}]
    assert seats_from_components(comps) == {
        "new:1": LauncherSeat(ProviderFilter(only=("p",)), frozenset({"p"}))}
