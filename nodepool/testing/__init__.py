"""In-memory cloud (FakeCloud) and its adapter (FakeAdapter), for tests and benchmarks.

Not a production driver: nothing in the launcher's driver table points here, and a
nodepool.yaml cannot name it. Tests and tools/bench_launcher.py pass FakeAdapter to the
Launcher through its adapter_factory. adapter_contract.py and contract_harness.py are the
Adapter contract suite (pytest cases) every driver's tests run, here or in its own package.
"""
