"""`PollHandler`: kazoo's threading handler with one ordered callback thread, waiting with poll(2)."""

from __future__ import annotations

import atexit
import select
import threading

from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.handlers.utils import fileobj_to_fd

_READ = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR
_WRITE = select.POLLOUT | select.POLLHUP | select.POLLERR


class PollHandler(SequentialThreadingHandler):
    """kazoo's threading handler with one callback thread, waiting with poll(2).

    * One queue and one thread for watch callbacks and completions alike, so
      they run in the order the server sent them (kazoo's two threads may run
      a reply's callback before an earlier event's); the tree watch
      (nodepool/zk/treewatch.py) relies on it, and one thread hand-off less per
      reply. A callback must therefore never wait for another callback.
    * kazoo's own `select` builds and closes an epoll selector for every wait
      of its connection loop (a tenth of a busy launcher's CPU); a poll object
      costs no system call to make and has no limit on descriptor numbers.
    """

    def __init__(self):
        super().__init__()
        self._local = threading.local()

    def start(self):
        # kazoo's start, with one worker for both queues.
        with self._state_change:
            if self._running:
                return
            self.completion_queue = self.callback_queue
            self._workers.append(self._create_thread_worker(self.callback_queue))
            self._running = True
            atexit.register(self.stop)

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
