"""min-ready as pure functions: deficits of labels, nodes, requests and pools; which worker to ask."""

from __future__ import annotations

import dataclasses

from nodepool.config import Label, parse_config
from nodepool.launcher.context import MIN_READY_REQUESTOR
from nodepool.launcher.minready import SpareCensus, census_deficits, pick_worker
from nodepool.launcher.planner import RegisteredPool
from nodepool.launcher.tuning import DEFAULT
from nodepool.model import Node, NodeRequest, NodeState, RequestState

NOW = 1_700_000_000.0

LABELS = {
    "small": Label(name="small", min_ready=2),
    "large": Label(name="large", min_ready=1),
    "none": Label(name="none", min_ready=0),
}

POOLS = [RegisteredPool(id="pool-a", provider="cloud-a", labels=frozenset({"small", "none"})),
         RegisteredPool(id="pool-b", provider="cloud-b", labels=frozenset({"large"}))]

_seq = iter(range(1, 10**6))
HOLD = DEFAULT.min_ready_refusal_hold


def deficits(labels, nodes, requests, registered, under_way=None, asked=None) -> dict[str, int]:
    """`census_deficits` of a census filled from these lists (as MinReady.start fills it),
    with the given requests the only ones that exist."""
    census = SpareCensus()
    for n in nodes:
        census.node(n.id, n)
    live = set()
    for req in requests:
        census.request(req.id, req)
        live.add(req.id)
    return census_deficits(labels, census, live.__contains__, registered, under_way, asked)


def node(label: str = "small", state: NodeState = NodeState.READY,
         allocated_to: str | None = None) -> Node:
    return Node(id=f"{next(_seq):010d}", state=state, type=[label], provider="cloud-a",
                pool="main", allocated_to=allocated_to, state_time=NOW)


def min_ready_request(rid: str, label: str = "small",
                      state: RequestState = RequestState.REQUESTED) -> NodeRequest:
    return NodeRequest(id=rid, state=state, node_types=[label], requestor=MIN_READY_REQUESTOR,
                       reuse=False)


def zuul_request(rid: str, label: str = "small",
                 state: RequestState = RequestState.FULFILLED) -> NodeRequest:
    return NodeRequest(id=rid, state=state, node_types=[label], requestor="zuul-scheduler")


def test_every_label_short_of_min_ready_with_nothing_present():
    assert deficits(LABELS, [], [], POOLS) == {"small": 2, "large": 1}


def test_unallocated_ready_nodes_count_towards_min_ready():
    assert deficits(LABELS, [node("small")], [], POOLS) == {"small": 1, "large": 1}
    assert deficits(LABELS, [node("small"), node("small"), node("large")], [], POOLS) == {}


def test_more_spares_than_min_ready_ask_for_nothing():
    nodes = [node("small") for _ in range(5)]
    assert deficits(LABELS, nodes, [], POOLS) == {"large": 1}


def test_unallocated_nodes_still_launching_count_towards_min_ready():
    nodes = [node("small", NodeState.INIT), node("small", NodeState.BUILDING),
             node("large", NodeState.TESTING)]
    assert deficits(LABELS, nodes, [], POOLS) == {}


def test_nodes_in_other_states_do_not_count():
    nodes = [node("small", s) for s in (NodeState.IN_USE, NodeState.USED, NodeState.HOLD,
                                        NodeState.DELETING, NodeState.FAILED,
                                        NodeState.ABORTED, NodeState.DELETED)]
    assert deficits(LABELS, nodes, [], POOLS) == {"small": 2, "large": 1}


def test_outstanding_min_ready_requests_count_towards_min_ready():
    reqs = [min_ready_request("900-0000000001", "small", RequestState.REQUESTED),
            min_ready_request("900-0000000002", "small", RequestState.PENDING)]
    assert deficits(LABELS, [], reqs, POOLS) == {"large": 1}


def test_one_outstanding_request_and_one_spare_fill_a_min_ready_of_two():
    reqs = [min_ready_request("900-0000000001", "small")]
    assert deficits(LABELS, [node("small")], reqs, POOLS) == {"large": 1}


def test_pending_min_ready_request_and_its_building_node_count_once():
    rid = "900-0000000001"
    reqs = [min_ready_request(rid, "small", RequestState.PENDING)]
    nodes = [node("small", NodeState.BUILDING, allocated_to=rid)]
    assert deficits(LABELS, nodes, reqs, POOLS) == {"small": 1, "large": 1}


def test_failed_min_ready_request_is_not_outstanding():
    reqs = [min_ready_request("900-0000000001", "small", RequestState.FAILED)]
    assert deficits(LABELS, [], reqs, POOLS) == {"small": 2, "large": 1}


def test_other_requestors_requests_are_not_outstanding_min_ready():
    reqs = [zuul_request("200-0000000001", "small", RequestState.REQUESTED),
            zuul_request("200-0000000002", "small", RequestState.PENDING)]
    assert deficits(LABELS, [], reqs, POOLS) == {"small": 2, "large": 1}


def test_nodes_of_a_fulfilled_min_ready_request_count_as_spares():
    rid = "900-0000000001"
    reqs = [min_ready_request(rid, "small", RequestState.FULFILLED)]
    nodes = [node("small", allocated_to=rid)]
    assert deficits(LABELS, nodes, reqs, POOLS) == {"small": 1, "large": 1}


def test_fulfilled_min_ready_request_is_not_counted_twice():
    rid = "900-0000000001"
    reqs = [min_ready_request(rid, "large", RequestState.FULFILLED)]
    nodes = [node("large", allocated_to=rid)]
    assert deficits(LABELS, nodes, reqs, POOLS) == {"small": 2}


def test_nodes_allocated_to_another_live_request_do_not_count():
    rid = "200-0000000001"
    for state in RequestState:
        reqs = [zuul_request(rid, "small", state)]
        nodes = [node("small", allocated_to=rid)]
        assert deficits(LABELS, nodes, reqs, POOLS) == {"small": 2, "large": 1}, state


def test_building_nodes_allocated_to_another_live_request_do_not_count():
    rid = "200-0000000001"
    reqs = [zuul_request(rid, "small", RequestState.PENDING)]
    nodes = [node("small", NodeState.BUILDING, allocated_to=rid)]
    assert deficits(LABELS, nodes, reqs, POOLS) == {"small": 2, "large": 1}


def test_ready_node_allocated_to_a_vanished_request_counts_as_a_spare():
    # It is about to be released (hand-off step 7).
    nodes = [node("small", allocated_to="200-0000000099")]
    assert deficits(LABELS, nodes, [], POOLS) == {"small": 1, "large": 1}


def test_label_no_registered_pool_serves_gets_nothing():
    only_a = [POOLS[0]]
    assert deficits(LABELS, [], [], only_a) == {"small": 2}
    assert deficits(LABELS, [], [], []) == {}


def test_label_served_only_by_a_paused_pool_still_gets_requests():
    paused = [RegisteredPool(id="pool-b", provider="cloud-b", labels=frozenset({"large"}),
                             paused=True)]
    assert deficits(LABELS, [], [], paused) == {"large": 1}


def test_min_ready_zero_gets_nothing():
    assert "none" not in deficits(LABELS, [], [], POOLS)


def test_node_with_several_labels_counts_for_each():
    n = node("small")
    n.type = ["small", "large"]
    assert deficits(LABELS, [n], [], POOLS) == {"small": 1}


def test_deficits_from_a_parsed_config():
    config = parse_config("""
zookeeper-servers:
  - host: zk.example.org
labels:
  - name: small
    min-ready: 3
  - name: big
providers:
  - name: cloud-a
    cloud: a
    cloud-images:
      - name: base
    pools:
      - name: main
        labels:
          - name: small
            cloud-image: base
            min-ram: 2048
          - name: big
            cloud-image: base
            min-ram: 8192
""")
    pools = [RegisteredPool(id="p", provider="cloud-a", labels=frozenset({"small", "big"}))]
    assert deficits(config.labels, [node("small"), node("big")], [], pools) == {"small": 2}


def test_deficits_accept_generators():
    nodes = (n for n in [node("small")])
    reqs = (r for r in [min_ready_request("900-0000000001", "small")])
    assert deficits(LABELS, nodes, reqs, iter(POOLS)) == {"large": 1}


# -- spare launches of this process (asked of our provider workers) ---------------


def test_spare_launches_under_way_count_towards_min_ready():
    under_way = {"0000000101": "small", "0000000102": "large"}
    assert deficits(LABELS, [], [], POOLS, under_way=under_way) == {"small": 1}


def test_spare_launch_the_cache_already_shows_counts_once():
    building = node("small", NodeState.BUILDING)
    ready = node("small")
    under_way = {building.id: "small", ready.id: "small"}
    assert deficits(LABELS, [building, ready], [], POOLS, under_way=under_way) == {"large": 1}
    assert deficits(LABELS, [building], [], POOLS, under_way=under_way) == {"large": 1}
    assert deficits(LABELS, [building], [], POOLS, under_way={building.id: "small"}) == \
        {"small": 1, "large": 1}


def test_spares_asked_but_not_started_count_towards_min_ready():
    assert deficits(LABELS, [], [], POOLS, asked={"small": 1}) == {"small": 1, "large": 1}
    assert deficits(LABELS, [node("small")], [], POOLS, asked={"small": 1, "large": 1}) == {}


def test_asks_launches_spares_and_requests_add_up_and_never_go_negative():
    reqs = [min_ready_request("900-0000000001", "small")]
    assert deficits(LABELS, [node("large")], reqs, POOLS, under_way={"0000000101": "small"},
                    asked={"small": 3}) == {}


class Worker:
    """What pick_worker reads of a provider worker: its name and its labels' priorities."""

    def __init__(self, name: str, **labels: int):
        self.name = name
        self.spare_labels = labels

    def __repr__(self) -> str:
        return self.name


def test_worker_with_the_best_pool_priority_is_asked():
    a, b = Worker("a", small=100), Worker("b", small=50)
    assert pick_worker("small", [a, b], {}, 1000.0, others_offer=True, refusal_hold=HOLD) is b


def test_worker_that_dropped_an_ask_lately_is_passed_over_for_a_while():
    a, b = Worker("a", small=100), Worker("b", small=50)
    now = 1000.0
    refused = {b: {"small": now - 0.5}}
    assert pick_worker("small", [a, b], refused, now, others_offer=False, refusal_hold=HOLD) is a
    assert pick_worker("small", [a, b], refused, now + HOLD, others_offer=False,
                       refusal_hold=HOLD) is b
    assert pick_worker("small", [a, b], {b: {"large": now}}, now, others_offer=False,
                       refusal_hold=HOLD) is b


def test_label_our_workers_cannot_launch_now_is_requested_when_others_offer_it():
    a = Worker("a", small=100)
    assert pick_worker("small", [a], {a: {"small": 999.0}}, 1000.0, others_offer=True,
                       refusal_hold=HOLD) is None


def test_label_only_we_offer_is_asked_again_of_the_worker_that_dropped_it_longest_ago():
    a, b = Worker("a", small=100), Worker("b", small=50)
    refused = {a: {"small": 998.0}, b: {"small": 999.0}}
    assert pick_worker("small", [a, b], refused, 1000.0, others_offer=False, refusal_hold=HOLD) is a
    refused = {a: {"small": 999.5}, b: {"small": 999.0}}
    assert pick_worker("small", [a, b], refused, 1000.0, others_offer=False, refusal_hold=HOLD) is b


def test_label_no_worker_of_ours_offers_is_requested():
    assert pick_worker("small", [], {}, 1000.0, others_offer=True, refusal_hold=HOLD) is None


def test_census_kept_from_changes_agrees_with_a_fresh_count():
    """The launcher's census follows cache events; at every step it must count
    what a census built from the same nodes and requests counts."""
    census = SpareCensus()
    nodes: dict[str, Node] = {}
    reqs: dict[str, NodeRequest] = {}

    def set_node(n: Node | None, node_id: str | None = None) -> None:
        node_id = n.id if n is not None else node_id
        if n is None:
            nodes.pop(node_id, None)
        else:
            nodes[node_id] = n
        census.node(node_id, n)

    def set_request(rid: str, r: NodeRequest | None) -> None:
        if r is None:
            reqs.pop(rid, None)
        else:
            reqs[rid] = r
        census.request(rid, r)

    def check() -> dict[str, int]:
        kept = census_deficits(LABELS, census, reqs.__contains__, POOLS)
        assert kept == deficits(LABELS, list(nodes.values()), list(reqs.values()), POOLS)
        return kept

    mr, zuul = "900-0000000001", "200-0000000002"
    spare, launched = node("small"), node("large", NodeState.BUILDING)
    set_node(spare)
    set_node(launched)
    assert check() == {"small": 1}
    set_request(mr, min_ready_request(mr, "small"))
    assert check() == {}
    set_node(dataclasses.replace(spare, allocated_to=zuul))        # handed to a Zuul request
    set_request(zuul, zuul_request(zuul, "small"))
    assert check() == {"small": 1}
    set_request(zuul, None)                                         # its request is gone
    assert check() == {}
    set_node(dataclasses.replace(spare, state=NodeState.IN_USE, allocated_to=zuul))
    assert check() == {"small": 1}
    made = node("small", allocated_to=mr)
    set_node(made)
    set_request(mr, min_ready_request(mr, "small", RequestState.FULFILLED))
    assert check() == {"small": 1}
    set_request(mr, None)
    set_node(dataclasses.replace(made, allocated_to=None))          # released as a spare
    set_node(None, spare.id)
    set_node(dataclasses.replace(launched, state=NodeState.READY))
    assert check() == {"small": 1}
    set_node(dataclasses.replace(launched, state=NodeState.DELETING))
    assert check() == {"small": 1, "large": 1}
