"""Read nodepool.yaml (and a secure file): substitution, YAML, schema, checks, values."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from nodepool.config.build import build_config
from nodepool.config.checks import (
    Finding,
    RawMap,
    check_top_level,
    context_for,
    entries,
)
from nodepool.config.drivers import driver_for, validate_provider
from nodepool.config.errors import ConfigError, Problem, join_path
from nodepool.config.model import Config
from nodepool.config.reading import parse, read_text, substituted
from nodepool.config.schema import schema_findings, top_level_schema
from nodepool.config.secure import SECRET_VALUES, SecureFile, given_by, owned_by, read_secure

_SCHEMA = top_level_schema(validate_provider)

# The keys a command that only talks to ZooKeeper needs (nodepool/config/files.py).
ZOOKEEPER_KEYS = ("zookeeper-servers", "zookeeper-tls", "zookeeper-timeout")

# The last ".key" or "[index]" of a formatted key path.
_LAST_PART = re.compile(r"(\.[^.\[]*|\[[^\]]*\])$")


def load_config(path: str, env: Mapping[str, str] | None = None,
                secure: str | None = None) -> Config:
    """Load and validate a nodepool.yaml; raise ConfigError listing every problem.

    ``env`` defaults to os.environ and feeds %(NODEPOOL_...) substitution;
    ``secure`` is the path of a secure file (nodepool/config/secure.py).
    """
    config, problems = load_file(path, env, secure)
    if problems or config is None:
        raise ConfigError(problems)
    return config


def validate_config_file(path: str, env: Mapping[str, str] | None = None,
                         secure: str | None = None) -> list[Problem]:
    """Every problem of a nodepool.yaml (and secure file); an empty list means valid."""
    return load_file(path, env, secure)[1]


def parse_config(text: str, source: str = "<string>",
                 env: Mapping[str, str] | None = None) -> Config:
    """Like load_config, for YAML text already in memory (``source`` names it)."""
    config, problems = load_text(text, source, env)
    if problems or config is None:
        raise ConfigError(problems)
    return config


def load_file(path: str, env: Mapping[str, str] | None, secure: str | None = None,
              only: tuple[str, ...] | None = None) -> tuple[Config | None, list[Problem]]:
    """The Config (None when there are problems) and every problem.

    ``only`` restricts the load to those top-level keys (the rest is not read).
    """
    text, why = read_text(path)
    if text is None:
        return None, [Problem(path, "", why or "cannot read the file")]
    return load_text(text, path, env, secure, only)


def load_text(text: str, source: str, env: Mapping[str, str] | None,
              secure: str | None = None,
              only: tuple[str, ...] | None = None) -> tuple[Config | None, list[Problem]]:
    env = os.environ if env is None else env
    data, findings = parse(text, env)
    if data is None:
        return None, _problems(source, findings)
    part = read_secure(secure, env) if secure else None
    if part is not None and not part.data and part.problems:
        # Unusable (missing, YAML): nodepool.yaml's own ZooKeeper keys would mislead.
        return None, list(part.problems) + _problems(source, findings)
    if only is not None:
        data = {k: data[k] for k in only if k in data}
        findings = [f for f in findings if top_key(f[0]) in only]
    return _check(data, findings, source, part, only, substituted(text, env))


def top_key(path: str) -> str:
    """The top-level key a key path starts with ('' for the file as a whole)."""
    return path.split(".", 1)[0].split("[", 1)[0]


def _check(data: RawMap, findings: list[Finding], source: str, part: SecureFile | None,
           only: tuple[str, ...] | None, from_env: frozenset[str] = frozenset(),
           ) -> tuple[Config | None, list[Problem]]:
    given: frozenset[str] = frozenset()
    if part is not None:
        data, given = part.overlay(data)
    # A value with an unset variable in it: that is its problem, not its type.
    unset = {path for path, _ in findings}

    def hidden(path: str, value: Any) -> str | None:
        if given_by(path, given):
            return SECRET_VALUES
        if any(part in str(value) for part in from_env):
            return "it comes from an environment variable"
        return None

    findings = findings + [f for f in schema_findings(_SCHEMA, data, hidden)
                           + _semantic_findings(data) if f[0] not in unset]
    ordered = _in_file_order(list(dict.fromkeys(findings)), data)
    problems = [Problem(part.path if part and owned_by(f, given) else source, *f)
                for f in ordered]
    if part is not None:
        problems = [p for p in part.problems
                    if only is None or not p.path or top_key(p.path) in only] + problems
        if only is None:
            problems += part.check_diskimages(data)
    if problems:
        return None, problems
    config = build_config(data, source)
    return (part.apply(config) if part else config), []


def _problems(source: str, findings: list[Finding]) -> list[Problem]:
    # Never print the same line twice, whichever checks produced it.
    return [Problem(source, p, m) for p, m in dict.fromkeys(findings)]


def _in_file_order(findings: list[Finding], data: RawMap) -> list[Finding]:
    """Sort findings as their keys appear in the file, so the list reads top
    to bottom; a missing key sorts with the mapping that lacks it."""
    order: dict[str, int] = {"": -1}

    def walk(value: Any, where: str) -> None:
        order.setdefault(where, len(order))
        if isinstance(value, dict):
            for k, item in value.items():
                walk(item, join_path(where, k))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, join_path(where, i))

    walk(data, "")

    def position(finding: Finding) -> int:
        path = finding[0]
        while path not in order:
            shorter = _LAST_PART.sub("", path)
            # A top-level key has no parent part left: sort it with the file.
            path = shorter if shorter != path else ""
        return order[path]

    return sorted(findings, key=position)


def _semantic_findings(data: RawMap) -> list[Finding]:
    found = check_top_level(data)
    ctx = context_for(data)
    for path, provider in entries(data, "providers", ""):
        driver = driver_for(provider)
        # An unknown driver is a schema finding already; nothing to check.
        if driver is not None:
            found += driver.check(provider, path, ctx)
    return found
