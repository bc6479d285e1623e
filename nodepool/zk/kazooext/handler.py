"""`PollHandler`: kazoo's threading handler running our callbacks inline, in order, waiting with poll(2)."""

from __future__ import annotations

import atexit
import functools
import logging
import queue
import select
import socket
import threading
from typing import Callable

from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.handlers.utils import fileobj_to_fd

log = logging.getLogger("nodepool.zk.kazooext")

_READ = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR
_WRITE = select.POLLOUT | select.POLLHUP | select.POLLERR


class Inline:
    """Marks a callback of ours as one that never blocks: run on kazoo's reader thread
    as its event or answer is read (`Callbacks`). Wrap a callback in it only if it
    makes no synchronous ZooKeeper call and waits on no lock that any thread holds
    across one (it would wait for an answer that is never read)."""

    __slots__ = ("func",)

    def __init__(self, func: Callable):
        self.func = func

    def __call__(self, *args):
        return self.func(*args)


def _inline(func) -> bool:
    # kazoo puts a completion as partial(callback, result); a watch, via
    # dispatch_callback below, as the Callback's func.
    return isinstance(func, Inline) or (
        isinstance(func, functools.partial) and isinstance(func.func, Inline))


class Callbacks(queue.Queue):
    """kazoo's callback and completion queue in one: `Inline` callbacks run at once,
    on the thread that puts them, one at a time (an RLock); every other one is
    queued for the worker thread, as kazoo does.

    kazoo's reader thread puts every watch event and every answer's callbacks
    in the order the server sent them, so the inline ones run in that order and
    before the reader reads on; an inline callback another thread puts (a
    `rawlink` on a result already set) runs on that thread, never beside one of
    the reader's. The worker's callbacks keep their own order and may block
    (kazoo's recipes make synchronous calls from theirs), so they run beside
    the inline ones, never under their lock.
    """

    def __init__(self):
        super().__init__()
        self._inline_lock = threading.RLock()

    def put(self, item, block=True, timeout=None) -> None:
        if _inline(item):
            self.run_inline(item)
        else:
            super().put(item, block, timeout)

    def run_inline(self, func: Callable[[], object]) -> None:
        with self._inline_lock:
            try:
                func()
            except Exception:
                log.exception("ZooKeeper callback %r failed", func)


class Wakeup:
    """kazoo's wake-up socket (the writing end), written at most once per turn.

    kazoo writes one byte per queued request and its loop reads one per request
    sent; a blocking socket pair holds only about 280 one-byte writes, so a
    callback on the reader thread queueing more would block it on its own
    socket. Here only the first request after the loop last looked writes; the
    loop empties the socket, re-arms (`rearm`), then takes the queue. So while
    disarmed a byte is on its way or waiting: `send` wakes the loop for sure.
    """

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._armed = True

    def send(self, data: bytes) -> int:
        if self._armed:
            self._armed = False   # two threads may both write: one more empty turn
            return self.sock.send(data)
        return len(data)

    def prime(self) -> None:
        """One byte whatever the arming: for kazoo's own send to read (it reads one per
        request it sends); armed as before."""
        self.sock.send(b"\0")

    def rearm(self) -> None:
        self._armed = True

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


class PollHandler(SequentialThreadingHandler):
    """kazoo's threading handler with our callbacks run inline, in order, waiting with poll(2).

    * Callbacks wrapped in `Inline` (the tree watch's, the locks' and the
      launcher's own, none of which blocks) run on kazoo's reader thread as it
      reads their event or answer, in the order the server sent them (kazoo's
      two threads may run an answer's callback before an earlier event's); the
      tree watch (nodepool/zk/treewatch.py) relies on it. That saves two
      thread hand-offs per event or answer (a tenth of a launcher's CPU).
      Every other callback (kazoo's recipes, a `watch=` of anyone's) goes to
      one worker thread, in order, as kazoo would run it.
    * The wake-up socket is written once per turn (`Wakeup`).
    * kazoo's own `select` builds and closes an epoll selector for every wait
      of its connection loop (a tenth of a busy launcher's CPU); a poll object
      costs no system call to make and has no limit on descriptor numbers.
    """

    def __init__(self):
        super().__init__()
        self._local = threading.local()

    def start(self):
        # kazoo's start, with one queue (`Callbacks`) and one worker for both.
        with self._state_change:
            if self._running:
                return
            self.callback_queue = self.completion_queue = Callbacks()
            self._workers.append(self._create_thread_worker(self.callback_queue))
            self._running = True
            atexit.register(self.stop)

    def dispatch_callback(self, callback):
        if isinstance(callback.func, Inline):
            self.callback_queue.run_inline(functools.partial(callback.func, *callback.args))
        else:
            super().dispatch_callback(callback)

    def create_socket_pair(self):
        read_sock, write_sock = super().create_socket_pair()
        return read_sock, Wakeup(write_sock)

    def select(self, rlist, wlist, xlist, timeout=None):
        rfds = tuple(fileobj_to_fd(f) for f in rlist)
        wfds = tuple(fileobj_to_fd(f) for f in wlist)
        # The connection loop waits on the same two or three descriptors over and
        # over: keep one poll object per set, per thread (poll objects are not
        # shareable between threads).
        pollers = getattr(self._local, "pollers", None)
        if pollers is None:
            pollers = self._local.pollers = {}
        poller = pollers.get((rfds, wfds))
        if poller is None:
            poller = select.poll()
            masks: dict[int, int] = {}
            for mask, fds in ((_READ, rfds), (_WRITE, wfds)):
                for fd in fds:
                    masks[fd] = masks.get(fd, 0) | mask
            for fd, mask in masks.items():
                poller.register(fd, mask)
            if len(pollers) > 8:    # descriptors of closed connections
                pollers.clear()
            pollers[(rfds, wfds)] = poller
        ready = poller.poll(None if timeout is None else timeout * 1000)
        if not ready:
            return [], [], []
        readable, writable = [], []
        for fd, events in ready:
            if events & _READ:
                readable += [f for f, d in zip(rlist, rfds) if d == fd]
            if events & _WRITE:
                writable += [f for f, d in zip(wlist, wfds) if d == fd]
        return readable, writable, []
