"""Read one config file: its text, %(NODEPOOL_...) substitution in that text, then YAML.

Substitution works as Nodepool's: every ``%(NAME)`` whose NAME starts with
``NODEPOOL_`` and is set in the environment is replaced in the raw text,
before YAML parsing, so ``port: %(NODEPOOL_ZK_PORT)`` reads as an integer.
There is no escape and no ``s`` suffix (as in Nodepool). Where we differ:
a reference to an unset NODEPOOL_ variable is an error naming its key path
(Nodepool leaves the text, and the YAML or the cloud fails on it later);
one in a comment is ignored.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

import yaml

from nodepool.config.checks import Finding, RawMap
from nodepool.config.errors import join_path
from nodepool.config.schema import type_name

_REF = re.compile(r"%\((NODEPOOL_[^()\s]*)\)")

_EXPECTED = "a mapping with keys such as zookeeper-servers, labels and providers"


def read_text(path: str) -> tuple[str | None, str | None]:
    """The file's text, or None and why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return None, f"cannot read the file: {reason}"


def parse(text: str, env: Mapping[str, str], expected: str = _EXPECTED,
          empty_ok: bool = False) -> tuple[RawMap | None, list[Finding]]:
    """The YAML mapping of ``text`` after substitution, and the problems found.

    The mapping is None when the file cannot be used at all (YAML syntax,
    empty unless ``empty_ok``, not a mapping); unset variables are findings
    at their key paths.
    """
    text, unset = _substitute(text, env)
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        return None, [("", _yaml_message(e))]
    except yaml.YAMLError as e:
        return None, [("", f"YAML syntax error: {e}")]
    if data is None and empty_ok:
        return {}, []
    if data is None:
        return None, [("", f"the file is empty; expected {expected}")]
    if not isinstance(data, dict):
        # Its type only: the text of a secure file is secret.
        return None, [("", f"the top level must be {expected}, got {type_name(data)}")]
    return unset.restore(data)


class _Unset:
    """References to unset variables, each replaced by a marker the YAML parser reads
    as plain text wherever it stands, so that its key path can be found afterwards."""

    def __init__(self) -> None:
        self.prefix = f"NODEPOOLUNSET{secrets.token_hex(6)}x"
        self.marker = re.compile(re.escape(self.prefix) + r"(\d+)x")
        self.refs: list[str] = []

    def mark(self, ref: str) -> str:
        self.refs.append(ref)
        return f"{self.prefix}{len(self.refs) - 1}x"

    def restore(self, data: RawMap) -> tuple[RawMap, list[Finding]]:
        findings: list[Finding] = []
        if not self.refs:
            return data, findings

        def text(value: str, where: str) -> str:
            def put_back(m: re.Match[str]) -> str:
                ref = self.refs[int(m.group(1))]
                findings.append((where, f"environment variable {ref[2:-1]} is not set "
                                        f"(referenced as {ref})"))
                return ref
            return self.marker.sub(put_back, value)

        def walk(value: Any, where: str) -> Any:
            if isinstance(value, dict):
                out = {}
                for k, item in value.items():
                    key = text(k, where) if isinstance(k, str) else k
                    out[key] = walk(item, join_path(where, key))
                return out
            if isinstance(value, list):
                return [walk(item, join_path(where, i)) for i, item in enumerate(value)]
            return text(value, where) if isinstance(value, str) else value

        return walk(data, ""), findings


def substituted(text: str, env: Mapping[str, str]) -> frozenset[str]:
    """The values the text takes from the environment (no message may quote them)."""
    return frozenset(env[m.group(1)] for m in _REF.finditer(text)
                     if m.group(1) in env and env[m.group(1)])


def _substitute(text: str, env: Mapping[str, str]) -> tuple[str, _Unset]:
    unset = _Unset()

    def replace(m: re.Match[str]) -> str:
        name = m.group(1)
        return env[name] if name in env else unset.mark(m.group(0))

    return _REF.sub(replace, text), unset


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
