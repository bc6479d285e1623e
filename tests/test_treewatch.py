"""The persistent recursive watch behind the caches: every child, change and subdir member seen."""

import queue
import threading

import pytest
from kazoo.client import KazooClient
from requestor import wait_for
from zkhelpers import expire_session, make_client

from nodepool.zk.treewatch import TreeWatch


@pytest.fixture
def own(zk_tls):
    """A ZooKeeperClient of our own (its handler keeps events and replies in order)."""
    client = make_client(zk_tls)
    try:
        yield client
    finally:
        client.disconnect()


class Seen:
    """What a TreeWatch reported, as the caches keep it."""

    def __init__(self):
        self.data: dict[str, bytes] = {}
        self.members: dict[str, frozenset] = {}
        self.lock = threading.Lock()
        self.events: queue.Queue = queue.Queue()

    def on_data(self, name, data, stat):
        with self.lock:
            if data is None:
                self.data.pop(name, None)
                self.members.pop(name, None)
            else:
                self.data[name] = data
        self.events.put((name, data))

    def on_members(self, name, names):
        with self.lock:
            self.members[name] = names


def watch(kazoo: KazooClient, path: str = "/q", subdir: str | None = "lock"):
    seen = Seen()
    tw = TreeWatch(kazoo, path, seen.on_data, accept=lambda n: not n.startswith("skip"),
                   subdir=subdir, on_members=seen.on_members)
    tw.start()
    assert tw.initialized.wait(10)
    return tw, seen


def test_a_client_without_ordered_callbacks_is_refused(zk_client):
    with pytest.raises(ValueError, match="in order"):
        TreeWatch(zk_client, "/q", lambda *a: None)


def test_existing_new_changed_and_deleted_children_are_reported(own, zk_client):
    zk_client.ensure_path("/q")
    zk_client.create("/q/a", b"1")
    zk_client.create("/q/a/lock/x__lock__0000000001", b"", makepath=True)
    zk_client.create("/q/skip-me", b"x")
    tw, seen = watch(own.kazoo)
    try:
        assert seen.data == {"a": b"1"}
        assert seen.members == {"a": frozenset({"x__lock__0000000001"})}
        zk_client.create("/q/b", b"2")
        zk_client.set("/q/a", b"1b")
        wait_for(lambda: seen.data == {"a": b"1b", "b": b"2"}, what="create and change seen")
        zk_client.delete("/q/a", recursive=True)
        wait_for(lambda: seen.data == {"b": b"2"}, what="delete seen")
        assert "a" not in tw.known and "a" not in tw.members
        for i in range(5):   # a persistent watch reports every change, no re-registration
            zk_client.set("/q/b", str(i).encode())
        wait_for(lambda: seen.data == {"b": b"4"}, what="last change seen")
    finally:
        tw.stop()


def test_subdir_members_follow_creates_and_deletes_without_listings(own, zk_client):
    zk_client.ensure_path("/q")
    tw, seen = watch(own.kazoo)
    try:
        zk_client.create("/q/n", b"node")
        wait_for(lambda: "n" in seen.data, what="node seen")
        names = []
        for _ in range(20):
            path = zk_client.create("/q/n/lock/c__lock__", b"", sequence=True, makepath=True)
            names.append(path.rsplit("/", 1)[-1])
        wait_for(lambda: seen.members.get("n") == frozenset(names), what="20 members")
        for name in names[:-1]:
            zk_client.delete(f"/q/n/lock/{name}")
        wait_for(lambda: seen.members.get("n") == frozenset(names[-1:]), what="one member left")
        zk_client.delete("/q/n/lock", recursive=True)
        wait_for(lambda: seen.members.get("n") == frozenset(), what="lock dir gone")
    finally:
        tw.stop()


def test_many_rapid_children_are_all_seen(own, zk_client):
    zk_client.ensure_path("/q")
    tw, seen = watch(own.kazoo, subdir=None)
    try:
        for i in range(200):
            zk_client.create("/q/r-", str(i).encode(), sequence=True)
        wait_for(lambda: len(seen.data) == 200, what="all 200 children")
        for name in list(seen.data):
            zk_client.delete(f"/q/{name}")
        wait_for(lambda: not seen.data, what="all deletions")
    finally:
        tw.stop()


def test_quick_lock_cycles_on_many_nodes_converge_exactly(own, zk_client):
    """Members replaced by listings at resync and changed by events stay exact under churn."""
    zk_client.ensure_path("/q")
    for i in range(30):
        zk_client.create(f"/q/{i:03d}", b"x")
    tw, seen = watch(own.kazoo)
    try:
        held = {}
        for round_ in range(5):
            for i in range(30):
                name = f"{i:03d}"
                if name in held:
                    zk_client.delete(held.pop(name))
                if (i + round_) % 3:
                    held[name] = zk_client.create(f"/q/{name}/lock/c__lock__", b"",
                                                  sequence=True, makepath=True)
        want = {f"{i:03d}": frozenset({held[f"{i:03d}"].rsplit("/", 1)[-1]})
                if f"{i:03d}" in held else frozenset() for i in range(30)}
        wait_for(lambda: {k: seen.members.get(k, frozenset()) for k in want} == want,
                 what="lock members converge")
    finally:
        tw.stop()


def test_changes_made_while_the_session_was_lost_are_seen_after(zk_tls, own, zk_client):
    zk_client.ensure_path("/q")
    zk_client.create("/q/old", b"1")
    zk_client.create("/q/kept", b"k")
    tw, seen = watch(own.kazoo)
    try:
        expire_session(zk_tls, own.kazoo)
        zk_client.delete("/q/old")
        zk_client.set("/q/kept", b"k2")
        zk_client.create("/q/kept/lock/c__lock__0000000007", b"", makepath=True)
        zk_client.create("/q/new", b"2")
        wait_for(lambda: seen.data == {"kept": b"k2", "new": b"2"}, timeout=20,
                 what="resynced after a new session")
        wait_for(lambda: seen.members.get("kept") == frozenset({"c__lock__0000000007"}),
                 what="members resynced")
        zk_client.create("/q/newer", b"3")   # and watching again
        wait_for(lambda: seen.data.get("newer") == b"3", what="watch restored")
    finally:
        tw.stop()


def test_own_writes_are_taken_from_their_reply_and_others_are_read(own, zk_client):
    zk_client.ensure_path("/q")
    zk_client.create("/q/n", b"v0")
    tw, seen = watch(own.kazoo, subdir=None)
    reads = []
    read = tw._expect_data
    tw._expect_data = lambda name: (reads.append(name), read(name))
    try:
        results = [tw.write("n", f"own{i}".encode()) for i in range(5)]   # pipelined
        assert [r.get(5).version for r in results] == [1, 2, 3, 4, 5]
        wait_for(lambda: seen.data.get("n") == b"own4", what="own data in the cache")
        assert reads == []                       # nothing read back
        zk_client.set("/q/n", b"theirs")         # someone else's change is read
        wait_for(lambda: seen.data.get("n") == b"theirs", what="foreign change seen")
        assert reads == ["n"]
        # A conditional write that loses to a foreign one: the foreign data stays.
        stale = tw.write("n", b"late", version=1)
        wait_for(lambda: stale.ready(), what="stale write answered")
        assert not stale.successful()
        zk_client.set("/q/n", b"theirs2")
        wait_for(lambda: seen.data.get("n") == b"theirs2", what="second foreign change")
        mine = tw.write("n", b"mine")
        mine.get(5)
        zk_client.set("/q/n", b"after-mine")     # a change right after ours is not lost
        wait_for(lambda: seen.data.get("n") == b"after-mine", what="change after own write")
    finally:
        tw.stop()


def test_members_change_is_told_after_the_data_change_before_it(own, zk_client):
    """A user sets its node used and unlocks it (here in one transaction, so both
    events arrive before any read): the watch never shows "in-use, unlocked"."""
    zk_client.ensure_path("/q")
    zk_client.create("/q/n", b"in-use")
    contender = zk_client.create("/q/n/lock/c__lock__", b"", sequence=True, makepath=True)
    told = []
    seen = Seen()

    def on_data(name, data, stat):
        seen.on_data(name, data, stat)
        told.append(("data", data))

    def on_members(name, names):
        seen.on_members(name, names)
        told.append(("members", len(names)))

    tw = TreeWatch(own.kazoo, "/q", on_data, subdir="lock", on_members=on_members)
    tw.start()
    assert tw.initialized.wait(10)
    try:
        told.clear()
        tx = zk_client.transaction()
        tx.set_data("/q/n", b"used")
        tx.delete(contender)
        assert not any(isinstance(r, Exception) for r in tx.commit())
        wait_for(lambda: ("members", 0) in told, what="unlock told")
        assert told.index(("data", b"used")) < told.index(("members", 0)), told
    finally:
        tw.stop()


def test_own_transaction_that_writes_and_unlocks_tells_the_data_first(own, zk_client):
    """A launcher writes its spare `ready` and unlocks it in one transaction of its
    own: the watch never shows the node unlocked with its old data (which cleanup
    would take for an orphaned launch)."""
    zk_client.ensure_path("/q")
    zk_client.create("/q/n", b"building")
    contender = own.kazoo.create("/q/n/lock/c__lock__", b"", sequence=True, makepath=True)
    told = []

    def on_data(name, data, stat):
        told.append(("data", data))

    def on_members(name, names):
        told.append(("members", len(names)))

    tw = TreeWatch(own.kazoo, "/q", on_data, subdir="lock", on_members=on_members)
    tw.start()
    assert tw.initialized.wait(10)
    reads = []
    read = tw._expect_data
    tw._expect_data = lambda name: (reads.append(name), read(name))
    try:
        told.clear()
        tw.begin_own("n")
        tx = own.kazoo.transaction()
        tx.set_data("/q/n", b"ready")
        tx.delete(contender)
        result = tx.commit_async()
        result.rawlink(lambda r: tw.end_own("n", b"ready", r.get()[0]))
        assert not any(isinstance(r, Exception) for r in result.get(5))
        wait_for(lambda: ("members", 0) in told, what="unlock told")
        assert told.index(("data", b"ready")) < told.index(("members", 0)), told
        assert reads == []                       # taken from the reply, not read back
    finally:
        tw.stop()


def test_own_creates_are_taken_from_their_answer_and_others_created_meanwhile_read(
        own, zk_client):
    zk_client.ensure_path("/q")
    tw, seen = watch(own.kazoo)
    reads = []
    read = tw._expect_data
    tw._expect_data = lambda name: (reads.append(name), read(name))
    try:
        results = [tw.create_own("n-", f"own{i}".encode()) for i in range(3)]   # pipelined
        names = [r.get(5)[0].rsplit("/", 1)[1] for r in results]
        wait_for(lambda: all(seen.data.get(n) == f"own{i}".encode()
                             for i, n in enumerate(names)), what="own creates cached")
        assert reads == []
        # Someone else creates while a create of ours is pending (held open here):
        # theirs waits unread until our answer shows it is not ours, then is read.
        with tw._own_lock:
            tw._creating += 1
        theirs = zk_client.create("/q/n-", b"theirs", sequence=True).rsplit("/", 1)[1]
        wait_for(lambda: theirs in tw._unclaimed, what="foreign create held")
        assert theirs not in seen.data
        mine = tw.create_own("n-", b"mine").get(5)[0].rsplit("/", 1)[1]
        wait_for(lambda: seen.data.get(theirs) == b"theirs" and seen.data.get(mine) == b"mine",
                 what="both seen")
        assert reads == [theirs]
        with tw._own_lock:
            tw._creating -= 1
        # A lock taken on a child while it waits unread is told after its data.
        with tw._own_lock:
            tw._creating += 1
        late = zk_client.create("/q/n-", b"late", sequence=True).rsplit("/", 1)[1]
        zk_client.create(f"/q/{late}/lock/c__lock__", b"", sequence=True, makepath=True)
        wait_for(lambda: late in tw._unclaimed, what="held")
        assert late not in seen.members
        failed = tw.kazoo.handler.async_result()
        failed.set_exception(RuntimeError("connection lost"))
        tw._run_ordered(lambda: tw._created(b"", failed))   # our pending create failed
        wait_for(lambda: seen.data.get(late) == b"late" and len(seen.members.get(late, ())) == 1,
                 what="late child and its lock seen")
    finally:
        tw.stop()
