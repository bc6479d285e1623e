"""One metrics API over statsd (Nodepool's names) and Prometheus (labelled series).

Every launcher part reports through `ctx.metrics`, a `Metrics`: statsd when
STATSD_HOST and/or STATSD_PORT are set (read as Nodepool reads them), and
always a Prometheus registry of its own (one per object, so several launchers
in one process do not collide), served by `/metrics` through `exposition()`.
`NullMetrics` turns both off (the benchmark's `--metrics off`).

Cost per event: a Prometheus `observe`/`inc` (a dict lookup and a lock held
for an add) and, for statsd, a put on a queue that a thread of its own drains
into UDP packets: no socket call on a provider loop, nothing that waits.
doc/metrics.md lists every name.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from typing import Iterable, Mapping

import statsd
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("nodepool.metrics")

# Prometheus histogram buckets (seconds), each sized to what it measures.
HANDOVER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
                    300, 600, 1800, 3600)
LAUNCH_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 180, 300, 600, 1200, 1800, 3600)
LIFETIME_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
PASS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
ROUND_TRIP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
CLOUD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Nodepool's name for each kind of leaked object (`nodepool.provider.<p>.leaked.<kind>`).
LEAK_KINDS = {"server": "instances", "floating-ip": "floatingips", "port": "ports",
              "volume": "volumes", "object": "objects", "image": "images"}

_STATSD_UNSAFE = str.maketrans({".": "_", ":": "_", "|": "_", "@": "_", " ": "_",
                                "\n": "_", "\t": "_"})


def normalize_statsd_name(name: object) -> str:
    """A user-supplied part of a statsd name: '.' (graphite's hierarchy) and ':' (statsd's
    delimiter) become '_', as Nodepool does; so do '|', '@' and whitespace, which would
    break the line protocol."""
    return str(name).translate(_STATSD_UNSAFE)


def statsd_from_environ(environ: Mapping[str, str] | None = None) -> dict | None:
    """STATSD_HOST / STATSD_PORT as Nodepool reads them: either enables statsd, the other
    keeps statsd's default (localhost, 8125). None when neither is set (or both empty)."""
    env = os.environ if environ is None else environ
    target: dict = {}
    if env.get("STATSD_HOST"):
        target["host"] = env["STATSD_HOST"]
    if env.get("STATSD_PORT"):
        try:
            target["port"] = int(env["STATSD_PORT"])
        except ValueError:
            raise ValueError(f"STATSD_PORT: expected a port number, got "
                             f"{env['STATSD_PORT']!r}") from None
    return target or None


def error_class(error: BaseException) -> str:
    """The class a classified driver error reports as: quota, capacity, transient, failure."""
    from nodepool import errors
    if isinstance(error, errors.QuotaError):
        return "quota"
    if isinstance(error, errors.CapacityError):
        return "capacity"
    if isinstance(error, errors.TransientError):
        return "transient"
    return "failure"


_CALL_STOP = {"of", "for", "on", "from", "to", "in"}


def call_name(what: str) -> str:
    """A bounded name for a cloud call from its description: its leading plain words
    ("get server 8c1f..." -> "get_server", "list floating IPs of node 42" ->
    "list_floating_ips"), never an id or a name."""
    words = []
    for word in what.split():
        if word in _CALL_STOP or not word.isalpha():
            break
        words.append(word.lower())
    return "_".join(words) or "call"


class StatsdSender:
    """statsd packets sent from a thread of its own: callers only put on a queue.

    A statsd server that is down or unreachable costs nothing here (UDP);
    the client resolves the host once, at start.
    """

    def __init__(self, host: str = "localhost", port: int = 8125):
        self.client = statsd.StatsClient(host, port)
        self.host, self.port = host, port
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="statsd", daemon=True)
        self._thread.start()

    def send(self, items: list[tuple[str, str, float]]) -> None:
        """(kind, name, value) with kind "c" (counter), "ms" (timer) or "g" (gauge)."""
        self._queue.put(items)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(5.0)

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            pipe = self.client.pipeline()
            stop = False
            while True:
                for kind, name, value in batch:
                    if kind == "c":
                        pipe.incr(name, value)
                    elif kind == "ms":
                        pipe.timing(name, value)
                    else:
                        pipe.gauge(name, value)
                try:
                    batch = self._queue.get_nowait()
                except queue.Empty:
                    break
                if batch is None:
                    stop = True
                    break
            try:
                pipe.send()
            except Exception as e:   # never let metrics end the thread
                log.warning("Sending statsd packets to %s:%s failed: %s", self.host,
                            self.port, e)
            if stop:
                return


class LabelledChildren:
    """A labelled metric with its children kept by label values: prometheus-client's
    `labels()` validates and takes a lock on every call, which doubles an observation."""

    def __init__(self, metric) -> None:
        self.metric = metric
        self.children: dict[tuple, object] = {}

    def __call__(self, *labels: str):
        child = self.children.get(labels)
        if child is None:   # a race makes the same child twice: labels() returns one
            child = self.children[labels] = self.metric.labels(*labels)
        return child


class RegistrySnapshot:
    """Gauges computed elsewhere, swapped in whole, read at scrape time."""

    def __init__(self, registry: CollectorRegistry):
        self.families: dict[str, tuple[str, tuple[str, ...], dict]] = {}
        registry.register(self)

    def collect(self):
        for name, (doc, labels, values) in list(self.families.items()):
            family = GaugeMetricFamily(name, doc, labels=list(labels))
            for key, value in values.items():
                family.add_metric(list(key), value)
            yield family

    def describe(self):
        return []


class Metrics:
    """The launcher's metrics; `statsd` is a StatsdSender or None (Prometheus only)."""

    enabled = True

    def __init__(self, sender: StatsdSender | None = None):
        self.statsd = sender
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry

        def counter(name: str, doc: str, labels: list[str]) -> LabelledChildren:
            return LabelledChildren(Counter(name, doc, labels, registry=r))

        def histogram(name: str, doc: str, labels: list[str], buckets) -> LabelledChildren:
            return LabelledChildren(Histogram(name, doc, labels, buckets=buckets, registry=r))

        self._launches = counter("nodepool_launches", "Node launches finished, by result",
                                 ["provider", "az", "label", "result"])
        self._launch_seconds = histogram(
            "nodepool_launch_duration_seconds", "From a launch's start to its result",
            ["provider", "label", "result"], LAUNCH_BUCKETS)
        self._handover = histogram(
            "nodepool_request_handover_seconds",
            "From a request's creation to its fulfilment; from_ready: every node was ready",
            ["label", "from_ready"], HANDOVER_BUCKETS)
        self._used_to_deleted = histogram(
            "nodepool_node_used_to_deleted_seconds",
            "From a node's release by its user (used) to its record's removal",
            ["provider", "label"], LIFETIME_BUCKETS)
        self._pass = histogram("nodepool_provider_loop_pass_seconds",
                               "Wall time of one provider loop pass", ["provider"], PASS_BUCKETS)
        self._zk = histogram("nodepool_zookeeper_round_trip_seconds",
                             "ZooKeeper requests waited for: the session probe and the "
                             "provider loops' blocking calls", ["op"], ROUND_TRIP_BUCKETS)
        self._cloud = histogram("nodepool_cloud_api_call_seconds", "Cloud API calls",
                                ["provider", "call"], CLOUD_BUCKETS)
        self._cloud_errors = counter("nodepool_cloud_api_errors",
                                     "Cloud API calls that failed, by classified error",
                                     ["provider", "call", "class"])
        self._leaks = counter("nodepool_leaked_resources", "Leaked cloud objects deleted",
                              ["provider", "kind"])
        self._made_room = counter("nodepool_unused_nodes_deleted",
                                  "Unused ready nodes deleted to make room for a request "
                                  "of another label (no statsd name)", ["provider", "pool"])
        self._vanished = counter("nodepool_vanished_nodes",
                                 "Ready or in-use nodes deleted because their server vanished "
                                 "from the cloud (no statsd name)", ["provider", "state"])
        self._snapshot = RegistrySnapshot(r)
        self._limits: dict[str, Mapping[str, float]] = {}
        self._limits_lock = threading.Lock()   # providers' loops report their own limits

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Metrics:
        """statsd if STATSD_HOST/STATSD_PORT say so (a bad value or an unknown host is
        logged and leaves Prometheus only), and Prometheus."""
        try:
            target = statsd_from_environ(environ)
            sender = StatsdSender(**target) if target else None
        except (ValueError, OSError) as e:
            log.error("statsd disabled: %s", e)
            sender = None
        if sender is not None:
            log.info("Sending statsd metrics to %s:%s", sender.host, sender.port)
        return cls(sender)

    def statsd_config(self, prefix: str) -> dict | None:
        """For an SDK that reports its own calls (openstacksdk): host, port and `prefix`."""
        if self.statsd is None:
            return None
        return {"host": self.statsd.host, "port": self.statsd.port, "prefix": prefix}

    def stop(self) -> None:
        if self.statsd is not None:
            self.statsd.stop()

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text exposition for `GET /metrics`, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # -- events (any thread; a dict lookup, an add and maybe a queue put each) ---------

    def launched(self, node, result: str, now: float) -> None:
        """A launch ended: `result` is Nodepool's (ready, error.quota, ...)."""
        seconds = max(0.0, now - (node.created_time or now))
        label = node.type[0] if node.type else ""
        self._launches(node.provider or "", node.az or "", label, result).inc()
        self._launch_seconds(node.provider or "", label, result).observe(seconds)
        if self.statsd is None:
            return
        provider = normalize_statsd_name(node.provider)
        keys = [f"nodepool.launch.provider.{provider}.{result}", f"nodepool.launch.{result}"]
        if node.az:
            keys.append(f"nodepool.launch.provider.{provider}."
                        f"{normalize_statsd_name(node.az)}.{result}")
        if node.requestor:
            keys.append(f"nodepool.launch.requestor.{normalize_statsd_name(node.requestor)}."
                        f"{result}")
        ms = int(seconds * 1000)
        self.statsd.send([item for key in keys for item in (("ms", key, ms), ("c", key, 1))])

    def handed_over(self, request, from_ready: bool, now: float) -> None:
        """A request was fulfilled."""
        created = request.created_time or now
        label = "+".join(sorted(set(request.node_types)))
        self._handover(label, "true" if from_ready else "false").observe(
            max(0.0, now - created))

    def node_deleted(self, node, used_at: float | None, now: float) -> None:
        """A node's record is being removed; `used_at`: when its user released it."""
        if used_at:
            label = node.type[0] if node.type else ""
            self._used_to_deleted(node.provider or "", label).observe(
                max(0.0, now - used_at))

    def loop_pass(self, provider: str, seconds: float) -> None:
        self._pass(provider).observe(seconds)

    def zk_round_trip(self, op: str, seconds: float) -> None:
        self._zk(op).observe(seconds)

    def cloud_call(self, provider: str, call: str, seconds: float,
                   error_class: str | None) -> None:
        """A cloud API call; `error_class` quota, capacity, transient or failure if it
        failed (the driver's classify())."""
        self._cloud(provider, call).observe(seconds)
        if error_class is not None:
            self._cloud_errors(provider, call, error_class).inc()

    def leaked(self, provider: str, kind: str) -> None:
        """A leaked object found (a second time) and deleted; `kind` as the driver names it."""
        plural = LEAK_KINDS.get(kind, normalize_statsd_name(kind) + "s")
        self._leaks(provider, plural).inc()
        if self.statsd is not None:
            self.statsd.send([("c", f"nodepool.provider.{normalize_statsd_name(provider)}."
                                    f"leaked.{plural}", 1)])

    def unused_node_deleted(self, provider: str, pool: str) -> None:
        """An unused ready node deleted to make room for a waiting request (eviction.py);
        Prometheus only: Nodepool has no statsd name for it."""
        self._made_room(provider, pool).inc()

    def vanished(self, provider: str, state: str) -> None:
        """A ready or in-use node whose server vanished from two listings (vanished.py);
        Prometheus only: Nodepool has no such name."""
        self._vanished(provider, state).inc()

    def quota_limits(self, provider: str, limits) -> None:
        """A provider's limits as the cloud last said (None: unlimited)."""
        values = {} if limits is None else {k: v for k, v in vars(limits).items()
                                            if v is not None and not math.isinf(v)}
        with self._limits_lock:   # once a minute per provider: not on the hand-over path
            self._limits[provider] = values
            self._set_family("nodepool_provider_quota_limit",
                             "Quota limit per provider and resource, as the cloud last said",
                             ("provider", "resource"),
                             {(p, k): v for p, vals in self._limits.items()
                              for k, v in vals.items()})

    # -- gauges (the reporter thread, launcher/stats.py) ------------------------------

    def quota_used(self, used: Mapping[tuple[str, str], float]) -> None:
        """(provider, resource) -> what our nodes use, for the providers this launcher holds."""
        self._set_family("nodepool_provider_quota_used",
                         "Quota used by our nodes per provider and resource",
                         ("provider", "resource"), dict(used))

    def gauges(self, figures: Gauges | None) -> None:
        """The cluster's gauges (the min-ready owner), or None: not ours to report."""
        if figures is None:
            for name in CLUSTER_GAUGES:
                self._snapshot.families.pop(name, None)
            return
        for name, (doc, labels) in CLUSTER_GAUGES.items():
            self._set_family(name, doc, labels, figures.prometheus.get(name, {}))
        if self.statsd is not None:
            self.statsd.send([("g", key, value) for key, value in figures.statsd.items()])

    def _set_family(self, name: str, doc: str, labels: tuple[str, ...], values: dict) -> None:
        self._snapshot.families[name] = (doc, labels, values)


# The gauges one launcher computes for the whole cluster: name -> (help, labels).
CLUSTER_GAUGES = {
    "nodepool_nodes": ("Nodes by state", ("state",)),
    "nodepool_provider_nodes": ("Nodes by provider and state", ("provider", "state")),
    "nodepool_label_nodes": ("Nodes by label and state", ("label", "state")),
    "nodepool_pool_addressable_requests": (
        "Open requests whose every label the pool offers", ("provider", "pool")),
    "nodepool_provider_max_servers": ("The sum of the provider's pools' max-servers",
                                      ("provider",)),
    "nodepool_tenant_limit": ("tenant-resource-limits, by tenant and resource",
                              ("tenant", "resource")),
    "nodepool_label_min_ready": ("The label's min-ready (no statsd name)", ("label",)),
}


class Gauges:
    """One report of the cluster's gauges: statsd name -> value, and the same figures
    as Prometheus families (name -> {label values: value})."""

    def __init__(self) -> None:
        self.statsd: dict[str, float] = {}
        self.prometheus: dict[str, dict[tuple, float]] = {n: {} for n in CLUSTER_GAUGES}

    def set(self, statsd_name: str | None, family: str, labels: Iterable[str],
            value: float) -> None:
        if statsd_name is not None:
            self.statsd[statsd_name] = value
        self.prometheus[family][tuple(labels)] = value

    def add(self, statsd_name: str, family: str, labels: Iterable[str], n: float = 1) -> None:
        self.statsd[statsd_name] = self.statsd.get(statsd_name, 0) + n
        key = tuple(labels)
        fam = self.prometheus[family]
        fam[key] = fam.get(key, 0) + n


class NullMetrics(Metrics):
    """Metrics turned off: every call does nothing, `/metrics` is empty."""

    enabled = False

    def __init__(self) -> None:
        self.statsd = None

    def exposition(self) -> tuple[bytes, str]:
        return b"", CONTENT_TYPE_LATEST

    def launched(self, node, result, now) -> None:
        pass

    def handed_over(self, request, from_ready, now) -> None:
        pass

    def node_deleted(self, node, used_at, now) -> None:
        pass

    def loop_pass(self, provider, seconds) -> None:
        pass

    def zk_round_trip(self, op, seconds) -> None:
        pass

    def cloud_call(self, provider, call, seconds, error_class) -> None:
        pass

    def leaked(self, provider, kind) -> None:
        pass

    def unused_node_deleted(self, provider, pool) -> None:
        pass

    def vanished(self, provider, state) -> None:
        pass

    def quota_limits(self, provider, limits) -> None:
        pass

    def quota_used(self, used) -> None:
        pass

    def gauges(self, figures) -> None:
        pass
