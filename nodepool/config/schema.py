"""Voluptuous building blocks and the schemas of the keys every config shares."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import voluptuous as v

from nodepool.config.errors import format_path

Validator = Callable[[Any], Any]

_TYPE_NAMES = {str: "str", int: "int", float: "float", bool: "bool",
               dict: "mapping", list: "list", type(None): "null"}


def type_name(value: Any) -> str:
    """What kind of YAML value it is: "str", "int", "mapping", "null"..."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def describe(value: Any) -> str:
    """Say what a YAML value is, for messages: "str 'abc'", "int 12", "null"."""
    if value is None:
        return "null"
    text = repr(value)
    # Long values (ssh keys, whole mappings) would drown the message.
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type_name(value)} {text}"


# A key path holding one of these is a place for secrets: its values are never quoted
# in a message (messages reach logs). Matched within a key's words, any case.
_SECRET_PARTS = ("password", "passwd", "secret", "token", "credential", "apikey",
                 "private")
# Whole words only ("keyscan", "passenger" are not secrets; "api-key", "DIB_PASS" are).
_SECRET_WORDS = frozenset({"pass", "pwd", "pw", "key", "auth"})
_WORDS = re.compile(r"[A-Za-z0-9]+")


def secret_path(path: str) -> bool:
    """Whether a key path may hold a secret: a key that names one (password, token,
    key...), or anything under a diskimage's env-vars (a build's environment)."""
    lowered = path.lower()
    if "env-vars" in lowered or any(part in lowered for part in _SECRET_PARTS):
        return True
    return any(word in _SECRET_WORDS for word in _WORDS.findall(lowered))


class BadValue(v.Invalid):
    """A value of the wrong kind. Its message quotes the value only where the key path
    cannot hold a secret (`schema_findings` decides, knowing the path)."""

    def __init__(self, what: str, value: Any, path: list | None = None, hint: str = ""):
        self.what, self.value, self.hint = what, value, hint
        super().__init__(self.message(True), path=path)

    def message(self, quoted: bool, why: str = "the key may hold a secret") -> str:
        got = describe(self.value) if quoted or self.value is None else \
            f"{type_name(self.value)} (its value is not shown: {why})"
        return f"expected {self.what}, got {got}{self.hint}"


def _expected(what: str, value: Any) -> v.Invalid:
    return BadValue(what, value)


def Str(value: Any) -> str:
    """A string."""
    if not isinstance(value, str):
        raise _expected("str", value)
    return value


def Int(value: Any) -> int:
    """An integer; YAML true/false are refused although bool is an int in Python."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _expected("int", value)
    return value


def Bool(value: Any) -> bool:
    """true or false."""
    if not isinstance(value, bool):
        raise _expected("bool", value)
    return value


def Number(value: Any) -> float:
    """An int or a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _expected("number", value)
    return value


def CoercedFloat(value: Any) -> Any:
    """A number or a numeric string: Nodepool reads ``rate`` with Coerce(float)."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            raise _expected("number", value) from None
        return value
    return Number(value)


def StrOrInt(value: Any) -> Any:
    """A string or an integer (``release: 9`` and ``release: '9-stream'``)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _expected("str or int", value)
    return value


def Anything(value: Any) -> Any:
    """Any YAML value, kept as given."""
    return value


def FreeMap(value: Any) -> Any:
    """A mapping with any content (metadata, instance properties...)."""
    if not isinstance(value, dict):
        raise _expected("a mapping", value)
    return value


def ListOf(item: Any) -> Validator:
    """A list whose every item is checked, all failures reported.

    voluptuous' own ``[item]`` stops at the first item with a nested error,
    and every problem must be reported at once.
    """
    schema = v.Schema(item)

    def check(value: Any) -> Any:
        if not isinstance(value, list):
            raise _expected("a list", value)
        errors: list[v.Invalid] = []
        for index, entry in enumerate(value):
            try:
                schema(entry)
            except v.MultipleInvalid as e:
                for error in e.errors:
                    error.prepend([index])
                    errors.append(error)
            except v.Invalid as e:
                e.prepend([index])
                errors.append(e)
        if errors:
            raise v.MultipleInvalid(errors)
        return value

    return check


def StrOrList(value: Any) -> Any:
    """One string or a list of strings (static ``labels``, ``host-key``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ListOf(Str)(value)
    raise _expected("str or a list of str", value)


def MapOf(value_validator: Validator) -> Validator:
    """A mapping of string keys to checked values (``env-vars``)."""

    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            raise _expected("a mapping", value)
        errors: list[v.Invalid] = []
        for key, item in value.items():
            if not isinstance(key, str):
                errors.append(v.Invalid(f"key must be a str, got {describe(key)}",
                                        path=[key]))
                continue
            try:
                value_validator(item)
            except v.Invalid as e:
                e.prepend([key])
                errors.append(e)
        if errors:
            raise v.MultipleInvalid(errors)
        return value

    return check


def Struct(keys: Mapping[Any, Any]) -> Validator:
    """A mapping with known keys: extra keys, missing required keys and bad
    values are all reported, each with its own path."""
    schema = v.Schema(dict(keys), extra=v.PREVENT_EXTRA, required=False)

    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            raise _expected("a mapping", value)
        return schema(value)

    return check


# -- keys shared by all providers and pools; drivers extend these dicts ------

PROVIDER_COMMON: dict[Any, Any] = {
    v.Required("name"): Str,
    "driver": Str,
    "max-concurrency": Int,
    "priority": Int,
    "rate": CoercedFloat,
    "boot-timeout": Int,
    "launch-timeout": Int,
    "launch-retries": Int,
}

POOL_COMMON: dict[Any, Any] = {
    v.Required("name"): Str,
    "max-servers": Int,
    "priority": Int,
    "node-attributes": FreeMap,
}

# -- top-level sections -------------------------------------------------------

ZOOKEEPER_SERVER = Struct({
    v.Required("host"): Str,
    "port": Int,
    "chroot": Str,
})

ZOOKEEPER_TLS = Struct({
    v.Required("cert"): Str,
    v.Required("key"): Str,
    v.Required("ca"): Str,
})

LABEL = Struct({
    v.Required("name"): Str,
    "min-ready": Int,
    "max-ready-age": Int,
})

DISKIMAGE = Struct({
    v.Required("name"): Str,
    "abstract": Bool,
    "parent": Str,
    "elements": ListOf(Str),
    "env-vars": MapOf(Str),
    "release": StrOrInt,
    "rebuild-age": Int,
    "formats": ListOf(Str),
    "pause": Bool,
    "python-path": Str,
    "shell-type": Str,
    "username": Str,
    "build-timeout": Int,
    "dib-cmd": Str,
    "delete-after-upload": Bool,
    "keep-formats": ListOf(Str),
    "block-device": Anything,
    # Defaults for the provider-specific upload metadata (builder); not inherited.
    "metadata": FreeMap,
})

WEBAPP = Struct({
    "port": Int,
    "listen_address": Str,
})

TENANT_RESOURCE_LIMIT = Struct({
    v.Required("tenant-name"): Str,
    "max-servers": Int,
    "max-cores": Int,
    "max-ram": Int,
    # Any other key names a resource (as Nodepool allows) with an int limit.
    str: Int,
})


def top_level_schema(provider: Validator) -> Validator:
    """The whole file; ``provider`` checks one providers[] entry per its driver."""
    return Struct({
        v.Required("zookeeper-servers"): ListOf(ZOOKEEPER_SERVER),
        "zookeeper-tls": ZOOKEEPER_TLS,
        "zookeeper-timeout": Number,
        "labels": ListOf(LABEL),
        "providers": ListOf(provider),
        "diskimages": ListOf(DISKIMAGE),
        "webapp": WEBAPP,
        "max-hold-age": Int,
        "tenant-resource-limits": ListOf(TENANT_RESOURCE_LIMIT),
        "elements-dir": Str,
        "images-dir": Str,
        "images-dir-required-free": Int,
        "build-log-dir": Str,
        "build-log-retention": Int,
    })


# voluptuous' own wording, adjusted to read naturally for one key.
_MESSAGES = {"extra keys not allowed": "extra key not allowed"}


Hidden = Callable[[str, Any], "str | None"]


def schema_findings(schema: Validator, data: Any,
                    hidden: Hidden | None = None) -> list[tuple[str, str]]:
    """Every (key path, message) the schema finds wrong with ``data``.

    A wrong value is quoted in its message unless its key path may hold a secret
    (`secret_path`) or ``hidden(path, value)`` gives a reason not to (a secure
    file's keys, a value from the environment).
    """
    try:
        schema(data)
    except v.MultipleInvalid as e:
        return [_finding(error, hidden) for error in e.errors]
    except v.Invalid as e:
        return [_finding(e, hidden)]
    return []


def _finding(error: v.Invalid, hidden: Hidden | None) -> tuple[str, str]:
    # A missing key shows up in the path as its v.Required marker.
    parts = [p.schema if isinstance(p, v.Marker) else p for p in error.path]
    path = format_path(parts)
    if isinstance(error, BadValue):
        why = hidden(path, error.value) if hidden else None
        if why is not None:
            return path, error.message(False, why)
        return path, error.message(not secret_path(path))
    return path, _MESSAGES.get(error.msg, error.msg)
