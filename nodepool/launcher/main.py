"""`nodepool-launcher`: the daemon entry point (arguments, logging, signals)."""

from __future__ import annotations

import argparse
import gc
import logging
import logging.config
import signal
import sys
import threading
import traceback
from typing import TYPE_CHECKING

from nodepool import __version__

if TYPE_CHECKING:
    from nodepool.config import ConfigFiles
    from nodepool.launcher.spread import ProviderFilter

DEFAULT_CONFIG = "/etc/nodepool/nodepool.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nodepool-launcher",
                                     description="Launch and delete single-use CI nodes.")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                        help=f"path to nodepool.yaml (default {DEFAULT_CONFIG})")
    parser.add_argument("-s", "--secure", metavar="FILE",
                        help="secure file: zookeeper-servers, zookeeper-tls and diskimage "
                             "env-vars kept out of nodepool.yaml (none by default)")
    parser.add_argument("-f", "--foreground", action="store_true",
                        help="run in the foreground (logs to stderr)")
    parser.add_argument("-l", "--logconfig", help="a Python logging config file (INI or YAML)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="debug logging")
    parser.add_argument("--check-config", action="store_true",
                        help="load and validate the config, then exit")
    parser.add_argument("--no-webapp", action="store_true",
                        help="do not serve the web endpoints (webapp.listen_address:port)")
    parser.add_argument("--providers", metavar="NAME,...",
                        help="own only these providers (names or shell patterns such as "
                             "'rax-*'); by default any, spread over the live launchers")
    parser.add_argument("--exclude-providers", metavar="NAME,...",
                        help="never own these providers (names or shell patterns)")
    return parser


def load_logging_config(path: str) -> None:
    """A Python logging config: `.yaml`/`.yml` as dictConfig, else INI as fileConfig."""
    open(path).close()   # a missing file is an OSError naming it (fileConfig says KeyError)
    if path.endswith((".yaml", ".yml")):
        import yaml
        with open(path) as f:
            logging.config.dictConfig(yaml.safe_load(f))
    else:
        logging.config.fileConfig(path, disable_existing_loggers=False)


def setup_logging(args: argparse.Namespace) -> None:
    if args.logconfig:
        load_logging_config(args.logconfig)
        return
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.debug:
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)


# Libraries whose INFO lines drown the launcher's own without -l or --debug: apscheduler
# logs every job run (two lines a second), kazoo every connection state, waitress its
# serving line, openstacksdk and keystoneauth their discovery (etc/logging.yaml agrees).
QUIET_LIBRARIES = ("apscheduler", "kazoo", "waitress", "openstack", "keystoneauth",
                   "urllib3", "stevedore", "asyncssh")


def dump_stacks(*_) -> None:
    """SIGUSR2: every thread's stack to the log (as Nodepool's stack dump does)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    lines = ["Thread stack dump (SIGUSR2):"]
    for ident, frame in sys._current_frames().items():
        lines.append(f"Thread {names.get(ident, '?')} ({ident}):")
        lines.extend(line.rstrip("\n") for line in traceback.format_stack(frame))
    logging.getLogger("nodepool.stack_dump").warning("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    from nodepool.config import ConfigError, ConfigFiles
    files = ConfigFiles(args.config, args.secure)
    try:
        config, stamp = files.load_stamped()   # once: the launcher starts with it
    except ConfigError as e:
        print(f"nodepool-launcher: invalid configuration:\n{e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"nodepool-launcher: cannot read {args.config}: {e}", file=sys.stderr)
        return 1
    serves = _provider_filter(args, config)
    if serves is None:
        return 1
    if args.check_config:
        print(f"{args.config}: {len(config.providers)} provider(s), "
              f"{len(config.labels)} label(s): valid")
        return 0
    from nodepool.metrics import statsd_from_environ
    try:
        statsd_from_environ()   # the SDKs read them too: a bad one must not start
    except ValueError as e:
        print(f"nodepool-launcher: invalid environment: {e}", file=sys.stderr)
        return 1
    return run(files, webapp=not args.no_webapp, loaded=(config, stamp), serves=serves)


def _provider_filter(args: argparse.Namespace, config) -> ProviderFilter | None:
    """--providers/--exclude-providers; None (after saying why) when nothing is left to own."""
    from nodepool.launcher.spread import ProviderFilter
    serves = ProviderFilter.from_option(args.providers, args.exclude_providers)
    unmatched = [p for p in serves.only + serves.exclude
                 if not any(ProviderFilter(only=(p,)).allows(n) for n in config.providers)]
    if unmatched:
        logging.getLogger("nodepool.launcher").warning(
            "--providers/--exclude-providers: %s match(es) no provider of %s",
            ", ".join(unmatched), args.config)
    if serves.only and not any(serves.allows(n) for n in config.providers):
        print(f"nodepool-launcher: --providers {args.providers}: no provider of "
              f"{args.config} is left for this launcher to own", file=sys.stderr)
        return None
    return serves


# Cyclic garbage collection, tuned for a long-running daemon: almost everything the
# launcher drops is freed by reference counting, while a full collection walks every
# object (with 10,000 cached nodes that held the GIL for 50-100 ms, every thread
# waiting: the worst hand-over latencies). Fewer, younger collections instead.
GC_THRESHOLDS = (10_000, 50, 1_000)


def tune_gc() -> None:
    """After start-up: what start-up made stays (moved out of the collector's walks), and
    collections run less often. Memory made of reference cycles is still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


EXIT_WEB = 4   # the web endpoints' address cannot be bound


def run(config_path: str | ConfigFiles, stop_timeout: float = 30.0, webapp: bool = True,
        loaded=None, serves: ProviderFilter | None = None) -> int:
    """Run the daemon until SIGTERM or SIGINT, then stop in a bounded time and exit 0.

    SIGHUP has the config files checked now (a reload when they changed; never a stop),
    SIGUSR2 logs every thread's stack. ZooKeeper away at start is retried (1 s doubling
    to 30 s) until it answers or a stop signal comes. `loaded`: the config and its stamp,
    when the caller read the files already (they are then not read again)."""
    from nodepool.errors import ZooKeeperUnavailable
    from nodepool.launcher.daemon import Launcher
    from nodepool.launcher.spread import ProviderFilter
    from nodepool.web import WebBindError

    log = logging.getLogger("nodepool.launcher")
    stop = threading.Event()
    launcher = Launcher(config_path, webapp=webapp, zk_retry=True, loaded=loaded,
                        serves=serves or ProviderFilter())

    def on_stop(signum, _frame) -> None:
        stop.set()
        launcher.interrupt()

    def on_hup(*_) -> None:
        log.info("SIGHUP: checking the configuration files now")
        launcher.want_config_check()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGUSR2, dump_stacks)
    try:
        launcher.start()
    except WebBindError as e:
        print(f"nodepool-launcher: web endpoints: {e} (see webapp: in the config, "
              f"or --no-webapp)", file=sys.stderr)
        return EXIT_WEB
    except ZooKeeperUnavailable as e:
        launcher.stop(0)
        print(f"nodepool-launcher: {e}", file=sys.stderr)
        return 3
    tune_gc()
    stop.wait()
    log.info("Signal received: stopping")
    done = threading.Thread(target=launcher.stop, args=(stop_timeout,), daemon=True)
    done.start()
    done.join(stop_timeout + 5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
