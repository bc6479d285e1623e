"""`nodepool-builder`: the daemon entry point (arguments, logging, signals)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading

from nodepool import __version__
from nodepool.launcher.main import DEFAULT_CONFIG, dump_stacks, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodepool-builder",
        description="Build diskimages with diskimage-builder and upload them to every provider.")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                        help=f"path to nodepool.yaml (default {DEFAULT_CONFIG})")
    parser.add_argument("-s", "--secure", metavar="FILE",
                        help="secure file: zookeeper-servers, zookeeper-tls and diskimage "
                             "env-vars kept out of nodepool.yaml (none by default)")
    parser.add_argument("-l", "--logconfig", help="a Python logging config file (INI or YAML)")
    parser.add_argument("-f", "--foreground", action="store_true",
                        help="run in the foreground (logs to stderr; the only mode)")
    parser.add_argument("--build-workers", type=int, default=1, metavar="N",
                        help="images built at once by this builder (default 1)")
    parser.add_argument("--upload-workers", type=int, default=4, metavar="N",
                        help="uploads at once by this builder (default 4)")
    parser.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve Prometheus metrics at http://ADDRESS:PORT/metrics "
                             "(default: not served)")
    parser.add_argument("--metrics-address", default="0.0.0.0", metavar="ADDRESS",
                        help="the address --metrics-port listens on (default 0.0.0.0)")
    parser.add_argument("--debug", action="store_true", help="debug logging")
    parser.add_argument("--check-config", action="store_true",
                        help="load and validate the config, then exit")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    from nodepool.builder.daemon import Builder, BuilderConfigError
    from nodepool.builder.plan import DEFAULT
    from nodepool.config import ConfigError, ConfigFiles
    if args.build_workers < 1 or args.upload_workers < 1:
        print("nodepool-builder: --build-workers and --upload-workers must be at least 1",
              file=sys.stderr)
        return 2
    if args.metrics_port is not None and not 1 <= args.metrics_port <= 65535:
        print(f"nodepool-builder: --metrics-port: expected a port from 1 to 65535, got "
              f"{args.metrics_port}", file=sys.stderr)
        return 2
    metrics = None if args.metrics_port is None else (args.metrics_address, args.metrics_port)
    files = ConfigFiles(args.config, args.secure)
    tuning = dataclasses.replace(DEFAULT, builders=args.build_workers,
                                 uploaders=args.upload_workers)
    try:
        builder = Builder(files, tuning=tuning, metrics_listen=metrics)
    except (ConfigError, BuilderConfigError) as e:
        print(f"nodepool-builder: invalid configuration:\n{e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"nodepool-builder: cannot read {args.config}: {e}", file=sys.stderr)
        return 1
    if args.check_config:
        print(f"{args.config}: {len(builder.config.diskimages)} diskimage(s): valid")
        return 0
    return run(builder)


def run(builder) -> int:
    """Until SIGTERM or SIGINT; SIGHUP checks the config now, SIGUSR2 dumps stacks.
    ZooKeeper away at start is retried until it answers or a stop signal comes."""
    log = logging.getLogger("nodepool.builder")
    stop = threading.Event()

    def on_stop(*_) -> None:
        stop.set()
        builder.interrupt()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_stop)
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(
        target=builder.check_config, name="sighup-config-check", daemon=True).start())
    signal.signal(signal.SIGUSR2, dump_stacks)
    try:
        if not builder.start(zk_retry=True):
            log.info("Stopped while waiting for ZooKeeper")
            builder.stop()
            return 0
    except OSError as e:
        print(f"nodepool-builder: {e}", file=sys.stderr)
        return 1
    stop.wait()
    log.info("Signal received: stopping")
    builder.stop()
    if builder.uploads.busy():
        # An upload thread blocked in a PUT would hold the interpreter's exit (executor
        # threads are joined at exit) for as long as the upload takes: leave now. Its
        # record and cloud image are cleaned up by the next cleanup pass of any builder.
        log.info("Leaving the uploads in progress to the next cleanup")
        logging.shutdown()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
