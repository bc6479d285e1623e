"""tools/quickstart: ZooKeeper, the OpenStack simulator and nodepool-launcher on this machine, one command."""
