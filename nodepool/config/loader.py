"""Read nodepool.yaml: YAML, %(NODEPOOL_...) substitution, schema, checks, values."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import voluptuous as v
import yaml

from nodepool.config.build import build_config
from nodepool.config.checks import (
    Finding,
    RawMap,
    check_top_level,
    context_for,
    entries,
)
from nodepool.config.drivers import driver_for, validate_provider
from nodepool.config.errors import ConfigError, Problem, format_path, join_path
from nodepool.config.model import Config
from nodepool.config.schema import describe, top_level_schema

# %(NODEPOOL_NAME), optionally written %(NODEPOOL_NAME)s as in Python's %
# formatting; %%( escapes a literal "%(". Only NODEPOOL_ names are looked up
# so that a config cannot read arbitrary secrets from the environment.
_ENV_REF = re.compile(r"%%(?=\()|%\((NODEPOOL_[A-Za-z0-9_]+)\)s?")

# voluptuous' own wording, adjusted to read naturally for one key.
_MESSAGES = {"extra keys not allowed": "extra key not allowed"}

_SCHEMA = top_level_schema(validate_provider)

# The last ".key" or "[index]" of a formatted key path.
_LAST_PART = re.compile(r"(\.[^.\[]*|\[[^\]]*\])$")


def load_config(path: str, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate a nodepool.yaml; raise ConfigError listing every problem.

    ``env`` defaults to os.environ and feeds %(NODEPOOL_...) substitution.
    """
    config, problems = _load_file(path, env)
    if problems or config is None:
        raise ConfigError(problems)
    return config


def validate_config_file(path: str, env: Mapping[str, str] | None = None) -> list[Problem]:
    """Every problem of a nodepool.yaml; an empty list means it is valid."""
    return _load_file(path, env)[1]


def parse_config(text: str, source: str = "<string>",
                 env: Mapping[str, str] | None = None) -> Config:
    """Like load_config, for YAML text already in memory (``source`` names it)."""
    config, problems = _load_text(text, source, env)
    if problems or config is None:
        raise ConfigError(problems)
    return config


def _load_file(path: str, env: Mapping[str, str] | None) -> tuple[Config | None, list[Problem]]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return None, [Problem(path, "", f"cannot read the file: {reason}")]
    return _load_text(text, path, env)


def _load_text(text: str, source: str,
               env: Mapping[str, str] | None) -> tuple[Config | None, list[Problem]]:
    def problems(findings: list[Finding]) -> list[Problem]:
        # Never print the same line twice, whichever checks produced it.
        return [Problem(source, p, m) for p, m in dict.fromkeys(findings)]

    data, findings = _parse_yaml(text)
    if data is None:
        return None, problems(findings)
    data, findings = substitute_env(data, os.environ if env is None else env)
    findings += _schema_findings(data)
    findings += _semantic_findings(data)
    if findings:
        return None, problems(_in_file_order(findings, data))
    return build_config(data, source), []


def _parse_yaml(text: str) -> tuple[RawMap | None, list[Finding]]:
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        return None, [("", _yaml_message(e))]
    except yaml.YAMLError as e:
        return None, [("", f"YAML syntax error: {e}")]
    expected = "a mapping with keys such as zookeeper-servers, labels and providers"
    if data is None:
        return None, [("", f"the file is empty; expected {expected}")]
    if not isinstance(data, dict):
        return None, [("", f"the top level must be {expected}, got {describe(data)}")]
    return data, []


def _yaml_message(e: yaml.MarkedYAMLError) -> str:
    """PyYAML's error as one line, with 1-based line and column numbers."""
    def at(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    mark = e.problem_mark or e.context_mark
    text = f"YAML syntax error at {at(mark)}: " if mark else "YAML syntax error: "
    text += e.problem or e.context or "invalid YAML"
    if e.problem and e.context:
        started = f" started at {at(e.context_mark)}" if e.context_mark else ""
        text += f" ({e.context}{started})"
    return text


def substitute_env(data: Any, env: Mapping[str, str],
                   path: str = "") -> tuple[Any, list[Finding]]:
    """A copy of ``data`` with %(NODEPOOL_...) replaced in every string value.

    Mapping keys are left alone. A reference to an unset variable is a
    finding at the value's key path, and the value is kept unreplaced.
    """
    findings: list[Finding] = []

    def walk(value: Any, where: str) -> Any:
        if isinstance(value, dict):
            return {k: walk(item, join_path(where, k)) for k, item in value.items()}
        if isinstance(value, list):
            return [walk(item, join_path(where, i)) for i, item in enumerate(value)]
        if isinstance(value, str) and "%" in value:
            return _ENV_REF.sub(lambda m: replace(m, where), value)
        return value

    def replace(match: re.Match[str], where: str) -> str:
        name = match.group(1)
        if name is None:
            return "%"
        if name not in env:
            message = f"environment variable {name} is not set (referenced as {match.group(0)})"
            findings.append((where, message))
            return match.group(0)
        return env[name]

    return walk(data, path), findings


def _schema_findings(data: RawMap) -> list[Finding]:
    try:
        _SCHEMA(data)
    except v.MultipleInvalid as e:
        return [_finding(error) for error in e.errors]
    except v.Invalid as e:
        return [_finding(e)]
    return []


def _finding(error: v.Invalid) -> Finding:
    # A missing key shows up in the path as its v.Required marker.
    parts = [p.schema if isinstance(p, v.Marker) else p for p in error.path]
    return format_path(parts), _MESSAGES.get(error.msg, error.msg)


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
