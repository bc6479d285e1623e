"""The Adapter contract suite, as this repository's tests import it: the suite itself is
nodepool/testing/adapter_contract.py (installed, so third-party drivers run it too)."""

from nodepool.testing.adapter_contract import (  # noqa: F401  (re-exported)
    AdapterContract,
    ContextFactory,
    Faults,
    LaunchingAdapterContract,
    Loop,
    NoFaults,
    Run,
    StandingAdapterContract,
    context_factory,
    node_for_delete,
)
