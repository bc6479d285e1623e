"""Non-blocking ssh host-key scanner: one asyncio loop in one thread scans many nodes."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from typing import Callable, Sequence

import asyncssh

log = logging.getLogger("nodepool.nodescan")

# Host key type -> the signature algorithms a client may offer to get a key of
# that type. rsa keys are asked for with the sha2 algorithms first: OpenSSH 8.8+
# no longer signs with "ssh-rsa" (sha1) by default.
KEY_TYPE_ALGS: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}
DEFAULT_KEY_TYPES: tuple[str, ...] = tuple(KEY_TYPE_ALGS)
# Short names as ssh-keyscan -t takes them.
KEY_TYPE_ALIASES: dict[str, tuple[str, ...]] = {
    "ed25519": ("ssh-ed25519",),
    "ecdsa": ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"),
    "rsa": ("ssh-rsa",),
}


class NodeScanError(Exception):
    """A host-key scan failed for good; `host`, `port` and `last_error` say where and why."""

    def __init__(self, message: str, host: str, port: int,
                 last_error: BaseException | None = None) -> None:
        super().__init__(message)
        self.host = host
        self.port = port
        self.last_error = last_error


class NodeScanTimeout(NodeScanError):
    """No ssh server answered with host keys before the request's timeout."""


class NodeScanCancelled(NodeScanError):
    """The request was cancelled, or the scanner stopped, before it finished."""


def normalize_key_types(key_types: Sequence[str] | None) -> tuple[str, ...]:
    """Expand aliases and check names; raise ValueError naming the unknown type."""
    if key_types is None:
        return DEFAULT_KEY_TYPES
    if isinstance(key_types, str):
        key_types = [key_types]
    wanted: set[str] = set()
    for name in key_types:
        if name in KEY_TYPE_ALGS:
            wanted.add(name)
        elif name in KEY_TYPE_ALIASES:
            wanted.update(KEY_TYPE_ALIASES[name])
        else:
            known = ", ".join([*KEY_TYPE_ALGS, *KEY_TYPE_ALIASES])
            raise ValueError(f"unknown ssh host key type {name!r}; expected one of {known}")
    if not wanted:
        raise ValueError("key_types is empty; pass None to scan every supported type")
    return tuple(kt for kt in KEY_TYPE_ALGS if kt in wanted)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "no answer within the attempt timeout"  # asyncio.timeout() fired
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _server_closed(exc: BaseException) -> bool:
    """True when a TCP connection was made and the server then closed or broke it.

    That is how sshd answers an offer of host key algorithms it has no key for
    (it logs "no matching host key type found" and drops the connection). Other
    errors (refused, unreachable, timeouts) mean nothing answered yet.
    """
    if isinstance(exc, (ConnectionRefusedError, TimeoutError)):
        return False
    return isinstance(exc, (asyncssh.DisconnectError, ConnectionResetError,
                            ConnectionAbortedError, BrokenPipeError, EOFError))


class ScanRequest:
    """One scan of one host: poll `done`, then read `result` or `error`."""

    def __init__(self, host: str, port: int, timeout: float, key_types: tuple[str, ...],
                 on_done: Callable[["ScanRequest"], None] | None = None,
                 expected: Sequence[str] = ()) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.key_types = key_types
        self.on_done = on_done
        self.expected = list(expected)   # verify(): the keys the host presented last time
        self.result: list[str] | None = None
        self.error: NodeScanError | None = None
        self.attempts = 0
        self.started = time.monotonic()
        self.finished: float | None = None
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._cancel: Callable[[], None] | None = None

    def __repr__(self) -> str:
        state = "done" if self.done else "pending"
        return f"<ScanRequest {_hostport(self.host, self.port)} {state}>"

    @property
    def done(self) -> bool:
        """True once `result` or `error` is set; never goes back to False."""
        return self._event.is_set()

    @property
    def duration(self) -> float:
        """Seconds from scan() until done (or until now while pending)."""
        return (self.finished or time.monotonic()) - self.started

    def wait(self, timeout: float | None = None) -> bool:
        """Block until done or `timeout`; return `done`. For tests and simple callers."""
        return self._event.wait(timeout)

    def cancel(self) -> None:
        """Give up on this scan (e.g. the node is being deleted); safe from any thread."""
        with self._lock:
            cancel = self._cancel
        if cancel is not None:
            cancel()
        else:
            self._finish(error=NodeScanCancelled(
                f"ssh host key scan of {_hostport(self.host, self.port)} was cancelled",
                self.host, self.port))

    def _finish(self, result: list[str] | None = None,
                error: NodeScanError | None = None) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self.result, self.error = result, error
            self.finished = time.monotonic()
            self._cancel = None
            self._event.set()
        if self.on_done is not None:
            try:
                self.on_done(self)
            except Exception:
                log.exception("host=%s port=%s on_done callback failed", self.host, self.port)


class NodeScanner:
    """Scans ssh host keys of many nodes at once from one background thread."""

    def __init__(self, *, attempt_timeout: float = 10.0, backoff_initial: float = 0.1,
                 backoff_max: float = 2.0, max_connections: int = 64) -> None:
        self.attempt_timeout = attempt_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_connections = max_connections
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._running = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._ssh_options: asyncssh.SSHClientConnectionOptions | None = None

    # -- lifecycle (any thread) --------------------------------------------

    def start(self) -> None:
        """Start the scanner thread; return once it accepts scans."""
        # asyncssh logs about seven INFO lines per connection; a launcher scanning
        # hundreds of booting nodes would drown in them. An operator who set a
        # level for "asyncssh" in the logging config keeps it.
        asyncssh_log = logging.getLogger("asyncssh")
        if asyncssh_log.level == logging.NOTSET:
            asyncssh_log.setLevel(logging.WARNING)
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("NodeScanner already started")
            ready = threading.Event()
            self._thread = threading.Thread(
                target=self._run_loop, args=(ready,), name="nodescan", daemon=True)
            self._thread.start()
        ready.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel outstanding scans and stop the thread, waiting at most `timeout`."""
        with self._lock:
            if not self._running or self._loop is None or self._stopping is None:
                return
            self._running = False
            self._loop.call_soon_threadsafe(self._stopping.set)
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("nodescan thread still running %.1fs after stop()", timeout)

    def scan(self, host: str, port: int = 22, timeout: float = 60.0,
             key_types: Sequence[str] | None = None,
             on_done: Callable[[ScanRequest], None] | None = None) -> ScanRequest:
        """Start scanning host:port and return at once; `on_done` runs in the scanner thread."""
        return self._submit(ScanRequest(host, port, timeout, normalize_key_types(key_types),
                                        on_done))

    def verify(self, host: str, port: int, expected: Sequence[str], timeout: float = 60.0,
               on_done: Callable[[ScanRequest], None] | None = None) -> ScanRequest:
        """Scan host:port again, cheaply, for a host whose keys were scanned before
        (`expected`, as scan() returned them): one connection asks for the type of the
        first expected key; when the host presents that very key, `result` is
        `expected`; when it presents another one, every type is scanned as scan() does.
        A host that does not answer fails as scan() fails."""
        if not expected:
            return self.scan(host, port, timeout, on_done=on_done)
        return self._submit(ScanRequest(host, port, timeout, DEFAULT_KEY_TYPES, on_done,
                                        expected=expected))

    def probe(self, host: str, port: int, timeout: float = 60.0,
              on_done: Callable[[ScanRequest], None] | None = None) -> ScanRequest:
        """Wait until host:port accepts a TCP connection, speaking no ssh: the check of
        a connection without host keys (winrm), as Nodepool makes it. `result` is []."""
        return self._submit(ScanRequest(host, port, timeout, (), on_done))

    def _submit(self, req: ScanRequest) -> ScanRequest:
        with self._lock:
            if not self._running or self._loop is None:
                raise RuntimeError("NodeScanner is not running: call start() first")
            self._loop.call_soon_threadsafe(self._begin, req)
        return req

    # -- the loop thread ---------------------------------------------------

    def _run_loop(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._main(ready))
        except Exception:
            log.exception("nodescan loop crashed")
        finally:
            with self._lock:
                self._running = False
            ready.set()

    async def _main(self, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(self.max_connections)
        # A keyscan never authenticates: no client keys or agent to load (asyncssh would
        # read ~/.ssh for each connection otherwise).
        self._ssh_options = asyncssh.SSHClientConnectionOptions(
            client_keys=None, agent_identities=None, agent_path=None)
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._running = True
        ready.set()
        await self._stopping.wait()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        log.debug("nodescan stopped; cancelled %d scans", len(tasks))

    def _begin(self, req: ScanRequest) -> None:
        assert self._loop is not None and self._stopping is not None
        if req.done:
            return  # cancelled before the loop got to it
        if self._stopping.is_set():
            req._finish(error=self._cancelled(req, "the scanner stopped"))
            return
        task = self._loop.create_task(self._scan(req))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # A task cancelled before its first step never runs _scan's handlers.
        task.add_done_callback(lambda _: req._finish(error=self._cancelled(req, self._why())))
        loop = self._loop
        with req._lock:
            if req._event.is_set():  # cancel() won the race with this callback
                task.cancel()
            else:
                req._cancel = lambda: self._call_in_loop(loop, task.cancel)

    @staticmethod
    def _call_in_loop(loop: asyncio.AbstractEventLoop, func: Callable[[], object]) -> None:
        try:
            loop.call_soon_threadsafe(func)
        except RuntimeError:
            pass  # the loop has closed: stop() already ended every scan

    def _cancelled(self, req: ScanRequest, why: str) -> NodeScanCancelled:
        return NodeScanCancelled(
            f"ssh host key scan of {_hostport(req.host, req.port)} cancelled: {why}",
            req.host, req.port)

    def _why(self) -> str:
        stopped = self._stopping is not None and self._stopping.is_set()
        return "the scanner stopped" if stopped else "cancelled by caller"

    async def _scan(self, req: ScanRequest) -> None:
        deadline = req.started + req.timeout
        log.debug("host=%s port=%s scanning for %s", req.host, req.port, ",".join(req.key_types))
        try:
            if req.expected:
                keys = await self._recheck(req, deadline)
            elif req.key_types:
                keys = await self._gather(req, deadline)
            else:
                keys = await self._connect(req, deadline)
        except asyncio.CancelledError:
            why = self._why()
            log.info("host=%s port=%s scan %s after %.3fs", req.host, req.port, why, req.duration)
            req._finish(error=self._cancelled(req, why))
            raise
        except NodeScanError as exc:
            log.warning("host=%s port=%s %s", req.host, req.port, exc)
            req._finish(error=exc)
        except Exception as exc:
            log.exception("host=%s port=%s unexpected error while scanning", req.host, req.port)
            req._finish(error=NodeScanError(
                f"ssh host key scan of {_hostport(req.host, req.port)} failed: {_describe(exc)}",
                req.host, req.port, exc))
        else:
            log.info("host=%s port=%s got %d host keys (%s) in %.3fs after %d connections",
                     req.host, req.port, len(keys), ",".join(k.split()[0] for k in keys),
                     req.duration, req.attempts)
            req._finish(result=keys)

    async def _gather(self, req: ScanRequest, deadline: float) -> list[str]:
        """Fetch keys one connection at a time, each offering the types not yet found.

        sshd picks the first offered algorithm it has a key for, so every
        connection yields a new key type, and the server closing the connection
        means it has none of the rest. Until a first key arrives any failure means
        "still booting" and is retried. The connections run one after the other,
        not at once: concurrent ones from one scanner can trip sshd's MaxStartups,
        whose dropped connections look exactly like "no key of this type".
        """
        found: dict[str, str] = {}
        while len(found) < len(req.key_types):
            algs = [alg for kt in req.key_types if kt not in found for alg in KEY_TYPE_ALGS[kt]]
            key = await self._fetch(req, algs, deadline, closed_is_final=bool(found))
            if key is None:
                break
            key_type = key.split()[0]
            if key_type in found or key_type not in req.key_types:
                # Not what we offered: stop rather than loop on a confused server.
                log.warning("host=%s port=%s answered %s to an offer of %s",
                            req.host, req.port, key_type, ",".join(algs))
                break
            found[key_type] = key
        return [found[kt] for kt in req.key_types if kt in found]

    async def _recheck(self, req: ScanRequest, deadline: float) -> list[str]:
        """verify(): the expected keys when the host still presents the first of them."""
        key_type = req.expected[0].split()[0]
        if key_type in KEY_TYPE_ALGS:
            key = await self._fetch(req, list(KEY_TYPE_ALGS[key_type]), deadline,
                                    closed_is_final=True)
            if key is not None and key.split()[:2] == req.expected[0].split()[:2]:
                return list(req.expected)
            log.info("host=%s port=%s presents another %s key than last time: scanning "
                     "every key type", req.host, req.port, key_type)
        return await self._gather(req, deadline)

    async def _fetch(self, req: ScanRequest, algs: list[str], deadline: float,
                     closed_is_final: bool) -> str | None:
        """One key offered among `algs`, retried with backoff until `deadline`.

        Returns None when `closed_is_final` and the server closed the connection
        (it has no key of these types); raises NodeScanTimeout at the deadline.
        """
        assert self._slots is not None
        delay = self.backoff_initial
        last: BaseException | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout(req, last)
            req.attempts += 1
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a
                # cancel that races with the attempt failing, and stop() would hang.
                async with self._slots, asyncio.timeout(min(self.attempt_timeout, remaining)):
                    key = await asyncssh.get_server_host_key(
                        req.host, req.port, server_host_key_algs=algs, config=None,
                        options=self._ssh_options)
                if key is not None:
                    return f"{key.get_algorithm()} {base64.b64encode(key.public_data).decode()}"
                last = NodeScanError("server sent no host key", req.host, req.port)
            except (OSError, asyncssh.Error, EOFError) as exc:  # TimeoutError is an OSError
                last = exc
                if closed_is_final and _server_closed(exc):
                    log.debug("host=%s port=%s offers none of %s (%s)",
                              req.host, req.port, ",".join(algs), _describe(exc))
                    return None
                log.debug("host=%s port=%s not answering yet: %s",
                          req.host, req.port, _describe(exc))
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # a library swallowed our cancel: honour it
            sleep = min(delay, deadline - time.monotonic())
            if sleep > 0:
                await asyncio.sleep(sleep)
            delay = min(delay * 2, self.backoff_max)

    async def _connect(self, req: ScanRequest, deadline: float) -> list[str]:
        """A probe: connect until one TCP connection succeeds, with backoff until `deadline`."""
        assert self._slots is not None
        delay = self.backoff_initial
        last: BaseException | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout(req, last)
            req.attempts += 1
            try:
                async with self._slots, asyncio.timeout(min(self.attempt_timeout, remaining)):
                    _, writer = await asyncio.open_connection(req.host, req.port)
                writer.close()
                return []
            except OSError as exc:  # TimeoutError is an OSError
                last = exc
                log.debug("host=%s port=%s not accepting yet: %s", req.host, req.port,
                          _describe(exc))
            sleep = min(delay, deadline - time.monotonic())
            if sleep > 0:
                await asyncio.sleep(sleep)
            delay = min(delay * 2, self.backoff_max)

    def _timeout(self, req: ScanRequest, last: BaseException | None) -> NodeScanTimeout:
        where = _hostport(req.host, req.port)
        why = _describe(last) if last is not None else "no attempt was made"
        if not req.key_types:
            return NodeScanTimeout(
                f"port check of {where} timed out after {req.timeout:g}s"
                f" ({req.attempts} connection attempts); last error: {why}",
                req.host, req.port, last)
        hint = ""
        if last is not None and _server_closed(last):
            hint = (" (a server that closes every handshake may have no host key of the"
                    f" requested types: {','.join(req.key_types)})")
        return NodeScanTimeout(
            f"ssh host key scan of {where} timed out after {req.timeout:g}s"
            f" ({req.attempts} connection attempts); last error: {why}{hint}",
            req.host, req.port, last)
