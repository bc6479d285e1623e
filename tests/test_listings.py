"""The shared listings: columns, row values, and text drawn exactly as prettytable does."""

import prettytable

from nodepool import listings
from nodepool.model import Node, NodeState


def prettytable_text(columns, rows) -> str:
    table = prettytable.PrettyTable([c.header for c in columns])
    table.align = "l"
    for row in rows:
        table.add_row([(c.text or listings.cell)(row.get(c.key)) for c in columns])
    return table.get_string()


def test_fast_text_is_prettytables_layout():
    node = Node(id="0000000001", type=["small", "large"], provider="p", state=NodeState.READY,
                state_time=1.0, hostname=None, comment="a longer comment than its header")
    rows = listings.node_rows([node], lambda _id: True, now=100.0)
    for columns in (listings.NODES.columns, listings.NODES.select(["id", "comment"])):
        assert listings.table_text(columns, rows) == prettytable_text(columns, rows)
    assert listings.table_text(listings.LABELS.columns, []) == \
        prettytable_text(listings.LABELS.columns, [])


def test_non_ascii_cells_fall_back_to_prettytable():
    rows = [{"label": "ubuntu-东京"}, {"label": "x\ty"}]
    assert listings.table_text(listings.LABELS.columns, rows) == \
        prettytable_text(listings.LABELS.columns, rows)


def test_node_row_values_are_nodepools():
    node = Node(id="0000000042", type=["small"], provider="p", pool="main", az="nova",
                external_id="srv", public_ipv6="2001:db8::1", state=NodeState.READY,
                state_time=1000.0, connection_port=2222, username="ubuntu")
    row = listings.node_row(node, locked=False, now=1000.0 + 90061)
    assert row["label"] == ["small"] and row["server_id"] == "srv"
    assert row["ipv6"] == "2001:db8::1" and row["AZ"] == "nova"
    assert (row["age"], row["locked"], row["state"]) == ("01:01:01:01", "unlocked", "ready")
    assert list(row) == list(listings.NODES.keys)


def test_unknown_fields_are_named_with_the_valid_ones():
    try:
        listings.REQUESTS.select(["id", "nope"])
    except ValueError as e:
        assert "nope" in str(e) and "valid fields: id, relative_priority" in str(e)
    else:
        raise AssertionError("no error")
    assert [c.key for c in listings.REQUESTS.select(["reason", "id"])] == ["id", "reason"]


def test_labels_are_every_pools_once_sorted():
    pools = [{"supported_labels": ["b", "a"]}, {"supported_labels": ["a", "c"]}, {}]
    assert listings.label_rows(pools) == [{"label": "a"}, {"label": "b"}, {"label": "c"}]


def test_request_reason_comes_from_the_mapping():
    from nodepool.model import NodeRequest
    reqs = [NodeRequest(id="200-0000000001", node_types=["a"]),
            NodeRequest(id="200-0000000002", node_types=["b"])]
    rows = listings.request_rows(reqs, {"200-0000000002": "pool main at quota"})
    assert [r["reason"] for r in rows] == ["", "pool main at quota"]
