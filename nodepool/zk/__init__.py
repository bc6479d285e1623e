"""The ZooKeeper store: connection, paths, locks, records, components and caches."""
