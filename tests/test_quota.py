"""Quota arithmetic: pool and tenant limits from real config values, node costs, usage."""

from __future__ import annotations

import math

import pytest

from nodepool.config import OpenStackPool, StaticPool, TenantLimits, parse_config
from nodepool.drivers.adapter import Resources
from nodepool.launcher.quota import (
    UNLIMITED,
    fits,
    node_cost,
    pool_limits,
    tenant_limits,
    usage,
)
from nodepool.model import Node, NodeState

CONFIG = parse_config("""
zookeeper-servers:
  - host: zk.example.org
labels:
  - name: small
tenant-resource-limits:
  - tenant-name: capped
    max-servers: 4
    max-cores: 16
    max-ram: 32768
  - tenant-name: cores-only
    max-cores: 8
  - tenant-name: volumes
    max-volumes: 2
    max-volume-gb: 100
providers:
  - name: cloud-a
    cloud: a
    cloud-images:
      - name: base
    pools:
      - name: limited
        max-servers: 10
        max-cores: 40
        max-ram: 81920
        max-volumes: 5
        max-volume-gb: 500
        labels:
          - name: small
            cloud-image: base
            min-ram: 2048
      - name: servers-only
        max-servers: 3
        labels:
          - name: small
            cloud-image: base
            min-ram: 2048
      - name: open
        labels:
          - name: small
            cloud-image: base
            min-ram: 2048
  - name: lab
    driver: static
    pools:
      - name: main
        nodes:
          - name: host1.example.org
            labels: small
""", source="test_quota.yaml")

POOLS = CONFIG.providers["cloud-a"].pools
SMALL = Resources(instances=1, cores=2, ram=2048)


def node(nid: str, state: NodeState = NodeState.READY, resources: dict | None = None,
         **kw) -> Node:
    return Node(id=nid, state=state, type=["small"], provider="cloud-a", pool="limited",
                resources=resources, **kw)


def label_cost(_node: Node) -> Resources:
    return SMALL


# -- pool_limits -------------------------------------------------------------------------------


def test_pool_limits_come_from_every_openstack_pool_limit():
    pool = POOLS["limited"]
    assert isinstance(pool, OpenStackPool)
    assert pool_limits(pool) == Resources(instances=10, cores=40, ram=81920, volumes=5,
                                          volume_gb=500)


def test_pool_limits_left_unset_are_unlimited():
    assert pool_limits(POOLS["servers-only"]) == Resources(
        instances=3, cores=math.inf, ram=math.inf, volumes=math.inf, volume_gb=math.inf)
    assert pool_limits(POOLS["open"]) == UNLIMITED


def test_pool_limits_of_a_driver_without_resource_limits_only_count_servers():
    pool = CONFIG.providers["lab"].pools["main"]
    assert isinstance(pool, StaticPool)
    limits = pool_limits(pool)
    assert limits.cores == limits.ram == limits.volumes == limits.volume_gb == math.inf
    assert limits.instances == pool.max_servers


def test_pool_limits_cap_launches_by_cores_as_well_as_servers():
    limits = pool_limits(POOLS["limited"])
    used = SMALL.scaled(5)                                  # 5 servers, 10 cores
    assert fits(Resources(instances=1, cores=30), used, limits)
    assert not fits(Resources(instances=1, cores=31), used, limits)


# -- tenant_limits -----------------------------------------------------------------------------


def test_tenant_limits_from_config():
    limits = tenant_limits(CONFIG.tenant_resource_limits["capped"])
    assert limits == Resources(instances=4, cores=16, ram=32768, volumes=math.inf,
                               volume_gb=math.inf)


def test_tenant_limits_left_unset_are_unlimited():
    limits = tenant_limits(CONFIG.tenant_resource_limits["cores-only"])
    assert limits == Resources(instances=math.inf, cores=8, ram=math.inf, volumes=math.inf,
                               volume_gb=math.inf)


def test_tenant_volume_limits_are_read():
    limits = tenant_limits(CONFIG.tenant_resource_limits["volumes"])
    assert (limits.volumes, limits.volume_gb) == (2, 100)
    assert not fits(Resources(instances=1, volumes=1, volume_gb=60),
                    Resources(instances=1, volumes=1, volume_gb=50), limits)


def test_tenant_without_limits_is_unlimited():
    assert tenant_limits(None) == UNLIMITED


def test_tenant_limits_accept_a_directly_built_value():
    limits = tenant_limits(TenantLimits(tenant_name="t", max_servers=2))
    assert limits.instances == 2
    assert limits.cores == math.inf


# -- node_cost ---------------------------------------------------------------------------------


def test_node_cost_is_its_recorded_resources():
    n = node("0000000001", resources={"instances": 1, "cores": 8, "ram": 16384})
    assert node_cost(n, label_cost) == Resources(instances=1, cores=8, ram=16384)


def test_node_cost_reads_volume_keys_in_both_spellings():
    dashed = node("0000000001", resources={"cores": 1, "volumes": 2, "volume-gb": 80})
    snake = node("0000000002", resources={"cores": 1, "volumes": 2, "volume_gb": 80})
    assert node_cost(dashed, label_cost).volume_gb == 80
    assert node_cost(snake, label_cost).volume_gb == 80
    assert node_cost(dashed, label_cost).volumes == 2


def test_recorded_resources_without_instances_count_one_instance():
    n = node("0000000001", resources={"cores": 4, "ram": 4096})
    assert node_cost(n, label_cost) == Resources(instances=1, cores=4, ram=4096)


def test_resources_we_write_are_read_back_unchanged():
    cost = Resources(instances=1, cores=4, ram=8192, volumes=1, volume_gb=40)
    n = node("0000000001", resources=cost.to_dict())
    assert node_cost(n, label_cost) == cost
    # Nodepool's keys (its OpenStack adapter writes `volume-gb`), which Zuul reads too.
    assert cost.to_dict() == {"instances": 1, "cores": 4, "ram": 8192, "volumes": 1,
                              "volume-gb": 40}


def test_node_without_recorded_resources_costs_its_label():
    asked: list[str] = []

    def fallback(n: Node) -> Resources:
        asked.append(n.id)
        return Resources(instances=1, cores=3)

    assert node_cost(node("0000000001"), fallback) == Resources(instances=1, cores=3)
    assert node_cost(node("0000000002", resources={}), fallback) == Resources(instances=1,
                                                                              cores=3)
    assert asked == ["0000000001", "0000000002"]


def test_node_with_non_dict_resources_costs_its_label():
    n = node("0000000001", resources=["garbage"])  # type: ignore[arg-type]
    assert node_cost(n, label_cost) == SMALL


# -- usage -------------------------------------------------------------------------------------


def test_usage_sums_the_cost_of_every_node():
    nodes = [node("0000000001"), node("0000000002"), node("0000000003")]
    assert usage(nodes, label_cost) == SMALL.scaled(3)


def test_usage_of_no_nodes_is_zero():
    assert usage([], label_cost) == Resources()


def test_deleted_nodes_use_nothing():
    nodes = [node("0000000001"), node("0000000002", state=NodeState.DELETED)]
    assert usage(nodes, label_cost) == SMALL


@pytest.mark.parametrize("state", [s for s in NodeState if s != NodeState.DELETED])
def test_nodes_in_every_other_state_hold_their_resources(state):
    assert usage([node("0000000001", state=state)], label_cost) == SMALL


def test_usage_mixes_recorded_and_fallback_costs():
    nodes = [node("0000000001", resources={"instances": 1, "cores": 8, "ram": 1000}),
             node("0000000002")]
    total = usage(nodes, lambda n: node_cost(n, label_cost))
    assert total == Resources(instances=2, cores=10, ram=3048)


# -- fits --------------------------------------------------------------------------------------


def test_launch_that_reaches_the_limit_exactly_fits():
    assert fits(SMALL, SMALL.scaled(2), SMALL.scaled(3))


def test_launch_that_exceeds_any_one_limit_does_not_fit():
    limit = Resources(instances=10, cores=6, ram=math.inf, volumes=math.inf,
                      volume_gb=math.inf)
    assert not fits(SMALL, SMALL.scaled(3), limit)  # 8 cores > 6


def test_anything_fits_unlimited():
    assert fits(Resources(instances=1000, cores=1e9, ram=1e12), SMALL.scaled(10**6), UNLIMITED)


def test_nothing_fits_a_zero_limit():
    zero = Resources(instances=0, cores=math.inf, ram=math.inf, volumes=math.inf,
                     volume_gb=math.inf)
    assert not fits(SMALL, Resources(), zero)


def test_over_used_quota_fits_nothing_more():
    # Someone else's usage may already exceed the limit (quota lowered, outside servers).
    limit = Resources(instances=2, cores=math.inf, ram=math.inf, volumes=math.inf,
                      volume_gb=math.inf)
    assert not fits(Resources(instances=1), Resources(instances=5), limit)


# -- pool, provider and tenant limits together ------------------------------------------------


def first_limit_broken(need: Resources, used: Resources, *limits: tuple[str, Resources]
                       ) -> str | None:
    """The launcher's order (Capacity.launch_blocker): each limit is checked on its own."""
    for name, limit in limits:
        if not fits(need, used, limit):
            return name
    return None


def test_a_launch_must_fit_the_pool_the_provider_and_the_tenant_limits_each():
    limits = (("pool", pool_limits(POOLS["limited"])),      # 10 servers, 40 cores, 5 volumes
              ("provider", Resources(instances=100, cores=20, ram=1e6, volumes=100,
                                     volume_gb=1e4)),
              ("tenant", tenant_limits(CONFIG.tenant_resource_limits["capped"])))  # 4, 16
    none = Resources()
    assert first_limit_broken(Resources(instances=1, cores=16), none, *limits) is None
    assert first_limit_broken(Resources(instances=1, cores=17), none, *limits) == "tenant"
    assert first_limit_broken(Resources(instances=1, cores=21), none, *limits) == "provider"
    assert first_limit_broken(Resources(instances=1, cores=41), none, *limits) == "pool"
    assert first_limit_broken(Resources(instances=1, volumes=6), none, *limits) == "pool"
    assert first_limit_broken(SMALL, SMALL.scaled(3), *limits) is None
    assert first_limit_broken(SMALL, SMALL.scaled(4), *limits) == "tenant"    # a 5th server
