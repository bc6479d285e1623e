"""A chaos soak: a ZooKeeper ensemble, the OpenStack simulator and launchers under seeded faults, then invariants."""
