"""The files a configuration is read from (nodepool.yaml and an optional secure file)
and the loads the commands need: the daemon's whole config, `config-validate`'s
problems, and the CLI's ZooKeeper settings that work despite problems elsewhere."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from nodepool.config.errors import ConfigError, Problem
from nodepool.config.loader import ZOOKEEPER_KEYS, load_file
from nodepool.config.model import Config
from nodepool.config.tlsfiles import tls_problems

Stamp = tuple[tuple[int, int] | None, ...]


@dataclass(frozen=True)
class ConfigFiles:
    """nodepool.yaml (``config``) and the secure file (``secure``, `-s`), if any.

    As in Nodepool there is no default secure file: only one named with `-s`
    is read, and then it must exist.
    """

    config: str
    secure: str | None = None

    def problems(self, env: Mapping[str, str] | None = None) -> list[Problem]:
        """Every problem of the files (`config-validate`); TLS files are not opened,
        so a config can be checked away from the machines that hold them."""
        return load_file(self.config, env, self.secure)[1]

    def load(self, env: Mapping[str, str] | None = None) -> Config:
        """The whole config, its TLS files readable; raise ConfigError otherwise."""
        config, problems = load_file(self.config, env, self.secure)
        if config is None or problems:
            raise ConfigError(problems)
        return _with_tls_checked(config)

    def load_stamped(self, env: Mapping[str, str] | None = None) -> tuple[Config, Stamp | None]:
        """The whole config (as `load`) and the files' stamp taken before they were read,
        so an edit made while they are read shows as a change later."""
        stamp = self.stamp()
        return self.load(env), stamp

    def load_for_zookeeper(self, env: Mapping[str, str] | None = None
                           ) -> tuple[Config, list[Problem]]:
        """For commands that only talk to ZooKeeper: the whole config and [] when the
        files are valid; else a config of the ZooKeeper keys alone (no labels, no
        providers) and every problem of the files. Raise ConfigError when the
        ZooKeeper keys themselves (or the files as a whole) have problems."""
        config, problems = load_file(self.config, env, self.secure)
        if config is not None and not problems:
            return _with_tls_checked(config), []
        config, zk_problems = load_file(self.config, env, self.secure, only=ZOOKEEPER_KEYS)
        if config is None or zk_problems:
            raise ConfigError(zk_problems)
        return _with_tls_checked(config), problems

    def stamp(self) -> Stamp | None:
        """What changes when a file is edited; None when nodepool.yaml is missing."""
        stamps = tuple(_stamp(p) for p in (self.config, self.secure) if p)
        return None if stamps[0] is None else stamps


def _with_tls_checked(config: Config) -> Config:
    problems = tls_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)
