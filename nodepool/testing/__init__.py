"""In-memory cloud (FakeCloud) and its adapter (FakeAdapter), for tests and benchmarks.

Not a production driver: nothing in the launcher's driver table points here, and a
nodepool.yaml cannot name it. Tests and tools/bench_launcher.py pass FakeAdapter to the
Launcher through its adapter_factory.
"""
