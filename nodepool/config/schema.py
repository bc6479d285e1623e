"""Voluptuous building blocks and the schemas of the keys every config shares."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import voluptuous as v

from nodepool.config.errors import format_path

Validator = Callable[[Any], Any]

_TYPE_NAMES = {str: "str", int: "int", float: "float", bool: "bool",
               dict: "mapping", list: "list", type(None): "null"}


def describe(value: Any) -> str:
    """Say what a YAML value is, for messages: "str 'abc'", "int 12", "null"."""
    if value is None:
        return "null"
    name = _TYPE_NAMES.get(type(value), type(value).__name__)
    text = repr(value)
    # Long values (ssh keys, whole mappings) would drown the message.
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{name} {text}"


def _expected(what: str, value: Any) -> v.Invalid:
    return v.Invalid(f"expected {what}, got {describe(value)}")


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


def schema_findings(schema: Validator, data: Any) -> list[tuple[str, str]]:
    """Every (key path, message) the schema finds wrong with ``data``."""
    try:
        schema(data)
    except v.MultipleInvalid as e:
        return [_finding(error) for error in e.errors]
    except v.Invalid as e:
        return [_finding(e)]
    return []


def _finding(error: v.Invalid) -> tuple[str, str]:
    # A missing key shows up in the path as its v.Required marker.
    parts = [p.schema if isinstance(p, v.Marker) else p for p in error.path]
    return format_path(parts), _MESSAGES.get(error.msg, error.msg)
