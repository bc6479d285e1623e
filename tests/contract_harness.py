"""The contract suite's provider-loop harness, as this repository's tests import it: the
harness itself is nodepool/testing/contract_harness.py."""

from nodepool.testing.contract_harness import (  # noqa: F401  (re-exported)
    ContextFactory,
    Faults,
    Loop,
    NoFaults,
    Run,
    context_factory,
    node_for_delete,
)
