"""Argument parsing and the run-until-signalled loop behind `python3 tools/ossim`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from .config import DEFAULT_PORT, Quotas, SimConfig, Timings
from .server import Simulator


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ossim", description="Local OpenStack API simulator on 127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"TCP port on 127.0.0.1 (default {DEFAULT_PORT}, as in etc/clouds.yaml; 0 = any free)")
    parser.add_argument("--real-nodes", action="store_true",
                        help="run every ACTIVE server as a network namespace with its own sshd (root only)")
    parser.add_argument("--real-cidr", default=None, help="private /16 for real nodes (default: a free 10.x/16)")
    parser.add_argument("--authorized-key", action="append", default=[], metavar="FILE",
                        help="public key file installed on every real node (repeatable)")
    parser.add_argument("--boot-delay", type=float, default=Timings.boot_delay, help="seconds BUILD -> ACTIVE")
    parser.add_argument("--delete-delay", type=float, default=Timings.delete_delay,
                        help="seconds a deleted server stays visible")
    parser.add_argument("--instances", type=int, default=Quotas.instances, help="instances quota (-1 unlimited)")
    parser.add_argument("--cores", type=int, default=Quotas.cores, help="cores quota (-1 unlimited)")
    parser.add_argument("--ram", type=int, default=Quotas.ram, help="RAM quota in MiB (-1 unlimited)")
    parser.add_argument("--volumes", type=int, default=Quotas.volumes,
                        help="Cinder maxTotalVolumes (-1 unlimited)")
    parser.add_argument("--volume-gigabytes", type=int, default=Quotas.gigabytes,
                        help="Cinder maxTotalVolumeGigabytes (-1 unlimited)")
    parser.add_argument("--no-block-storage", action="store_true",
                        help="no block-storage service in the catalog (a cloud without Cinder)")
    parser.add_argument("--region", default="RegionOne")
    parser.add_argument("--clouds-yaml", metavar="PATH", help="write a clouds.yaml for this simulator to PATH")
    parser.add_argument("--cloud-name", default="local", help="cloud name in the written clouds.yaml")
    parser.add_argument("--private", action="store_true",
                        help="write `private: true` (nodes reached on their private address)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> SimConfig:
    keys = []
    for path in args.authorized_key:
        with open(path) as fh:
            keys.append(fh.read().strip())
    return SimConfig(port=args.port, region=args.region, real_nodes=args.real_nodes, real_cidr=args.real_cidr,
                     authorized_keys=tuple(keys), block_storage=not args.no_block_storage,
                     quotas=Quotas(instances=args.instances, cores=args.cores, ram=args.ram,
                                   volumes=args.volumes, gigabytes=args.volume_gigabytes),
                     timings=Timings(boot_delay=args.boot_delay, delete_delay=args.delete_delay))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sim = Simulator(build_config(args)).start()
    except (OSError, RuntimeError) as exc:
        print(f"ossim: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        if args.clouds_yaml:
            extra = {"private": True} if args.private else {}
            sim.write_clouds_yaml(args.clouds_yaml, args.cloud_name, **extra)
        print(f"ossim: listening on {sim.url} (auth_url {sim.auth_url}, region {sim.config.region}"
              f"{', real nodes on ' + str(sim.config.real_cidr) if args.real_nodes else ''})", flush=True)
        stop.wait()
    finally:
        sim.stop()
    print("ossim: stopped", flush=True)
    return 0
