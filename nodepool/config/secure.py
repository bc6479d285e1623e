"""The secure file (`-s FILE`, Nodepool's secure.conf): ZooKeeper servers and TLS, and
diskimage env-vars, kept out of nodepool.yaml.

Same format as nodepool.yaml, with only these keys. As in Nodepool, its
``zookeeper-servers`` (when not empty) replace those of nodepool.yaml, its
``zookeeper-tls`` replaces nodepool.yaml's, and each ``diskimages[]`` entry's
``env-vars`` are merged over that (non-abstract) image's own, after its
parents are applied. Unlike Nodepool, any other key is refused rather than
silently ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import voluptuous as v

from nodepool.config.checks import Finding, RawMap, entries, text
from nodepool.config.errors import Problem, join_path
from nodepool.config.model import Config, freeze
from nodepool.config.reading import parse, read_text
from nodepool.config.schema import Anything, ListOf, MapOf, Str, Struct, schema_findings

# Top-level keys the secure file replaces in nodepool.yaml when it sets them.
REPLACED_KEYS = ("zookeeper-servers", "zookeeper-tls")

_SCHEMA = Struct({
    # Checked with nodepool.yaml's schema once in place (problems still name this file).
    "zookeeper-servers": Anything,
    "zookeeper-tls": Anything,
    "diskimages": ListOf(Struct({
        v.Required("name"): Str,
        v.Required("env-vars"): MapOf(Str),
    })),
})

# Why no value of the secure file is quoted in a message.
SECRET_VALUES = "the secure file holds secrets"

_EXPECTED = "a mapping with keys zookeeper-servers, zookeeper-tls or diskimages"


@dataclass(frozen=True)
class SecureFile:
    """A read secure file: its data and the problems of the file itself."""

    path: str
    data: RawMap
    problems: tuple[Problem, ...] = ()

    def overlay(self, main: RawMap) -> tuple[RawMap, frozenset[str]]:
        """nodepool.yaml's data with this file's keys in place, and which keys it gave."""
        given = frozenset(k for k in REPLACED_KEYS if self.data.get(k))
        return {**main, **{k: self.data[k] for k in given}}, given

    def check_diskimages(self, main: Mapping[str, Any]) -> list[Problem]:
        """Each secure diskimage must be a non-abstract diskimage of nodepool.yaml."""
        images = {text(i, "name"): i for _, i in entries(main, "diskimages", "")}
        problems = []
        for path, item in entries(self.data, "diskimages", ""):
            name = text(item, "name")
            if name is None:
                continue
            where = join_path(path, "name")
            if name not in images:
                problems.append(Problem(self.path, where, f"diskimage '{name}' is not defined "
                                                          f"in the diskimages of the config file"))
            elif images[name].get("abstract") is True:
                problems.append(Problem(self.path, where, f"diskimage '{name}' is abstract; "
                                        f"env-vars apply to the image itself, so set them on "
                                        f"the images built from it"))
        return problems

    def apply(self, config: Config) -> Config:
        """The built config with this file's diskimage env-vars merged in."""
        images = dict(config.diskimages)
        for item in self.data.get("diskimages") or ():
            image = images.get(item["name"])
            if image is None:   # a load of the ZooKeeper keys only: no diskimages
                continue
            env = freeze({**image.env_vars, **item["env-vars"]})
            images[image.name] = dataclasses.replace(image, env_vars=env)
        tls = config.zookeeper_tls
        if tls is not None and self.data.get("zookeeper-tls"):
            tls = dataclasses.replace(tls, source=self.path)
        return dataclasses.replace(config, diskimages=MappingProxyType(images),
                                   zookeeper_tls=tls, secure_path=self.path)


def read_secure(path: str, env: Mapping[str, str]) -> SecureFile:
    """The secure file at ``path``, with its problems (any problem makes the load fail)."""
    content, why = read_text(path)
    if content is None:
        return SecureFile(path, {}, (Problem(path, "", f"secure file: {why}"),))
    data, findings = parse(content, env, expected=_EXPECTED, empty_ok=True)
    if data is None:
        return SecureFile(path, {}, tuple(Problem(path, p, m) for p, m in findings))
    findings += schema_findings(_SCHEMA, data, hidden=lambda *_: SECRET_VALUES)
    return SecureFile(path, data, tuple(Problem(path, p, m) for p, m in dict.fromkeys(findings)))


def owned_by(finding: Finding, given: frozenset[str]) -> bool:
    """Whether a finding on the merged data is about a key the secure file gave."""
    return given_by(finding[0], given)


def given_by(path: str, given: frozenset[str]) -> bool:
    """Whether a key path of the merged data is under a key the secure file gave."""
    return any(path == k or path.startswith((f"{k}.", f"{k}[")) for k in given)
