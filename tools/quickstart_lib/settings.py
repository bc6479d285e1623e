"""Where the quickstart keeps its state and which ports it uses: options, then environment, then defaults."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
TEMPLATE = REPO / "etc" / "quickstart" / "nodepool.yaml"
LOGGING = REPO / "etc" / "logging.yaml"
VENV = REPO / ".venv"

# Fixed defaults, so the printed commands are the same every time: ZooKeeper's usual
# plain and TLS ports, and the simulator's default port (the one etc/clouds.yaml names).
# The launcher's web endpoints on Nodepool's default port.
DEFAULTS = {"zk_port": 2181, "zk_tls_port": 2281, "sim_port": 8775, "web_port": 8005}
ENV = {"state_dir": "QUICKSTART_DIR", "zk_port": "QUICKSTART_ZK_PORT",
       "zk_tls_port": "QUICKSTART_ZK_TLS_PORT", "sim_port": "QUICKSTART_SIM_PORT",
       "web_port": "QUICKSTART_WEB_PORT"}
PROVIDER = "quickstart"  # the provider name in etc/quickstart/nodepool.yaml
CLOUD = "quickstart"  # the clouds.yaml entry the simulator writes
HOLD_REASON = "quickstart"


class SettingsError(ValueError):
    """An option or environment variable has a value we cannot use."""


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    zk_port: int
    zk_tls_port: int
    sim_port: int
    web_port: int
    real_nodes: bool
    label: str
    timeout: float
    setup: bool

    # Everything the quickstart writes lives in the state directory.
    @property
    def zk_dir(self) -> Path:
        return self.state_dir / "zk"

    @property
    def key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def clouds_yaml(self) -> Path:
        return self.state_dir / "clouds.yaml"

    @property
    def config(self) -> Path:
        return self.state_dir / "nodepool.yaml"

    @property
    def ports_file(self) -> Path:
        return self.state_dir / "ports.json"

    @property
    def node_file(self) -> Path:
        return self.state_dir / "node.json"

    def log(self, name: str) -> Path:
        return self.state_dir / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.pid"


def add_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by start, stop and status (stop and status need the same state dir)."""
    parser.add_argument("--state-dir", type=Path, metavar="DIR",
                        help=f"where pids, logs, keys and configs go (env {ENV['state_dir']}; "
                             "default .quickstart/ in the repository)")
    for name, what in (("zk_port", "ZooKeeper plain port"), ("zk_tls_port", "ZooKeeper TLS port"),
                       ("sim_port", "OpenStack simulator port"),
                       ("web_port", "launcher web endpoints port")):
        parser.add_argument("--" + name.replace("_", "-"), type=int, metavar="PORT",
                            help=f"{what} on 127.0.0.1 (env {ENV[name]}; default {DEFAULTS[name]})")


def resolve(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    state = args.state_dir or (Path(env[ENV["state_dir"]]) if env.get(ENV["state_dir"]) else None)
    ports = {}
    for name, default in DEFAULTS.items():
        value, source = getattr(args, name), "--" + name.replace("_", "-")
        if value is None and env.get(ENV[name]):
            source = ENV[name]
            try:
                value = int(env[ENV[name]])
            except ValueError:
                raise SettingsError(f"{source}={env[ENV[name]]!r}: expected a port number") from None
        value = default if value is None else value
        if not 1 <= value <= 65535:
            raise SettingsError(f"{source}: {value} is not a port number (1-65535; the quickstart "
                                "uses fixed ports so that its printed commands stay valid)")
        ports[name] = value
    if len(set(ports.values())) != len(ports):
        raise SettingsError(f"the ports must differ, got {ports}")
    return Settings(
        state_dir=(state or REPO / ".quickstart").resolve(),
        real_nodes=os.geteuid() == 0 and not getattr(args, "no_real_nodes", False),
        label=getattr(args, "label", "debian-bookworm"), timeout=getattr(args, "timeout", 120.0),
        setup=not getattr(args, "no_setup", False), **ports)
