"""Check the zookeeper-tls files before connecting: a missing or unreadable one would
otherwise show as a connection time-out."""

from __future__ import annotations

import ssl

from nodepool.config.errors import Problem
from nodepool.config.model import Config


def tls_problems(config: Config) -> list[Problem]:
    """One problem per zookeeper-tls file that cannot be read or used; [] without TLS."""
    tls = config.zookeeper_tls
    if tls is None:
        return []
    source = tls.source or config.source_path
    problems = []
    for key in ("cert", "key", "ca"):
        path = getattr(tls, key)
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as e:
            problems.append(Problem(source, f"zookeeper-tls.{key}",
                                    f"cannot read {path}: {e.strerror or e}"))
    if problems:
        return problems
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=tls.ca)
    except ssl.SSLError as e:
        problems.append(Problem(source, "zookeeper-tls.ca",
                                f"{tls.ca} is not a PEM CA certificate ({_reason(e)})"))
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except ssl.SSLError as e:
        problems.append(Problem(source, "zookeeper-tls.cert",
                                f"{tls.cert} and {tls.key} are not a PEM certificate and its "
                                f"private key ({_reason(e)})"))
    return problems


def _reason(e: ssl.SSLError) -> str:
    return e.reason or str(e)
