"""Config values: Nodepool defaults, inheritance, frozen-ness, structural equality."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from types import MappingProxyType

import pytest
import yaml

from nodepool.config import (
    UNLIMITED,
    DiskImage,
    OpenStackProvider,
    PoolLabel,
    StaticProvider,
    load_config,
    provider_changes,
    validate_config_file,
)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "config"
NL05 = REPO / "tests" / "data" / "opendev" / "nl05.opendev.org.yaml"   # see its README.md


def fixture(name: str) -> str:
    return str(DATA / name)


def test_provider_pool_and_label_defaults_match_nodepool() -> None:
    config = load_config(fixture("defaults.yaml"))
    provider = config.providers["cloud-a"]
    assert isinstance(provider, OpenStackProvider)
    assert (provider.driver, provider.rate, provider.boot_timeout, provider.launch_timeout,
            provider.launch_retries, provider.max_concurrency, provider.priority) == \
        ("openstack", 1.0, 60, 3600, 3, -1, 100)
    assert (provider.region_name, provider.image_name_format, provider.clean_floating_ips,
            provider.port_cleanup_interval, provider.image_upload_timeout,
            provider.hostname_format, provider.post_upload_hook) == \
        (None, "{image_name}-{timestamp}", False, 600, 3600,
         "{label.name}-{provider.name}-{node.id}", None)
    pool = provider.pools["main"]
    assert pool.max_servers == UNLIMITED == math.inf
    assert (pool.priority, pool.networks, pool.auto_floating_ip, pool.host_key_checking,
            pool.ignore_provider_quota, pool.availability_zones) == \
        (100, (), True, True, False, ())
    assert pool.max_cores == pool.max_ram == pool.max_volumes == pool.max_volume_gb == UNLIMITED
    label = pool.labels["small"]
    assert (label.cloud_image, label.diskimage, label.min_ram, label.flavor_name,
            label.volume_size, label.boot_from_volume, label.console_log,
            label.host_key_checking, label.networks, dict(label.instance_properties)) == \
        ("base", None, 2048, None, 50, False, False, True, (), {})
    image = provider.cloud_images["base"]
    assert (image.connection_type, image.connection_port, image.python_path) == ("ssh", 22, "auto")


def test_top_level_defaults_match_nodepool() -> None:
    config = load_config(fixture("defaults.yaml"))
    [server] = config.zookeeper_servers
    assert (server.host, server.port, server.chroot) == ("zk.example.org", 2281, None)
    assert config.zookeeper_tls is None
    assert config.zookeeper_timeout == 10.0
    assert (config.webapp.port, config.webapp.listen_address) == (8005, "0.0.0.0")
    assert config.max_hold_age == UNLIMITED
    assert (config.build_log_dir, config.build_log_retention) == ("/var/log/nodepool/builds", 7)
    assert (config.elements_dir, config.images_dir) == (None, None)
    label = config.labels["small"]
    assert (label.min_ready, label.max_ready_age) == (0, 0)
    assert dict(config.diskimages) == {} and dict(config.tenant_resource_limits) == {}


def test_pool_and_label_values_inherit_from_provider_and_pool() -> None:
    provider = load_config(fixture("inheritance.yaml")).providers["cloud-a"]
    assert provider.pools["inherits-provider"].priority == 50
    assert provider.pools["own-priority"].priority == 10
    inherits = provider.pools["inherits-provider"].labels["inherits"]
    overrides = provider.pools["inherits-provider"].labels["overrides"]
    assert (inherits.host_key_checking, inherits.networks) == (False, ("pool-net",))
    assert (overrides.host_key_checking, overrides.networks) == (True, ("label-net",))


def test_diskimage_parent_chain_is_applied() -> None:
    images = load_config(fixture("inheritance.yaml")).diskimages
    child = images["child"]
    assert child.elements == ("base-element", "middle-element", "child-element")
    assert dict(child.env_vars) == {"FROM_BASE": "b", "SHARED": "child", "FROM_CHILD": "c"}
    assert (child.rebuild_age, child.username, child.release) == (3600, "builder", "9")
    assert child.abstract is False and images["middle"].abstract is True
    assert child.parent == "middle"
    # Keys nobody set keep Nodepool's defaults.
    assert (child.build_timeout, child.dib_cmd, child.formats) == (28800, "disk-image-create", ())
    assert list(images) == ["child", "middle", "base", "windows"]


def test_provider_diskimage_takes_user_and_shell_from_top_level_image() -> None:
    provider = load_config(fixture("inheritance.yaml")).providers["cloud-a"]
    assert isinstance(provider, OpenStackProvider)
    child, windows = provider.diskimages["child"], provider.diskimages["windows"]
    assert (child.username, child.python_path, child.shell_type) == \
        ("builder", "/usr/bin/python3", "bash")
    assert (windows.username, windows.python_path, windows.shell_type) == \
        ("Administrator", "/usr/bin/python3.12", "cmd")
    # winrm's default port, as in Nodepool.
    assert (windows.connection_type, windows.connection_port) == ("winrm", 5986)


def test_every_accepted_key_reaches_a_value() -> None:
    config = load_config(fixture("every-key.yaml"))
    assert config.zookeeper_hosts() == "zk1.example.org:2281,[2001:db8::1]:2281"
    assert config.zookeeper_chroot() == "/nodepool"
    assert config.zookeeper_tls is not None and config.zookeeper_tls.ca == "/etc/nodepool/tls/ca.pem"
    assert (config.zookeeper_timeout, config.max_hold_age, config.images_dir_required_free) == \
        (30.0, 86400, 2048)
    limits = config.tenant_resource_limits["tenant-a"]
    assert (limits.max_servers, limits.max_cores, limits.max_ram, dict(limits.extra)) == \
        (10, 40, 81920, {"gpus": 2})
    image = config.diskimages["dib-image"]
    assert (image.pause, image.formats, image.keep_formats, image.delete_after_upload) == \
        (True, ("qcow2", "raw"), ("qcow2",), True)
    assert image.block_device == ({"local_loop": {"name": "image0"}},)
    provider = config.providers["cloud-a"]
    assert isinstance(provider, OpenStackProvider)
    assert (provider.rate, provider.max_concurrency, provider.launch_retries) == (0.5, 4, 5)
    assert provider.cloud_images["cloud-base"].connection_port == 5985
    pool = provider.pools["main"]
    assert (pool.max_servers, pool.priority, dict(pool.node_attributes)) == (25, 5, {"team": "ci"})
    assert (pool.availability_zones, pool.max_volume_gb) == (("az1", "az2"), 2000)
    label = pool.labels["from-dib"]
    assert (label.flavor_name, label.min_ram, label.networks, label.userdata) == \
        ("m1.large", 8192, ("net-b",), "#cloud-config\n")
    assert dict(label.dynamic_instance_properties) == {"request": "{request.id}"}


def test_max_hold_age_zero_means_unlimited(tmp_path: Path) -> None:
    data = yaml.safe_load(Path(fixture("defaults.yaml")).read_text())
    data["max-hold-age"] = 0
    path = tmp_path / "nodepool.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_config(str(path)).max_hold_age == UNLIMITED


# -- static driver ------------------------------------------------------------

def test_static_driver_config() -> None:
    config = load_config(str(REPO / "etc" / "nodepool-static.yaml"))
    provider = config.providers["lab"]
    assert isinstance(provider, StaticProvider)
    pool = provider.pools["main"]
    assert list(pool.labels) == ["fedora-metal", "windows-vm"]
    assert pool.labels["windows-vm"] == PoolLabel(name="windows-vm")
    metal01, metal02, win01 = pool.nodes
    assert metal01.labels == ("fedora-metal",) and len(metal01.host_keys) == 1
    assert (metal01.username, metal01.timeout, metal01.connection_port, metal01.python_path) == \
        ("zuul", 5, 22, "/usr/bin/python3")
    assert (metal02.max_parallel_jobs, metal02.host_key_checking) == (2, False)
    assert (win01.connection_type, win01.connection_port, win01.shell_type) == ("winrm", 5986, "cmd")


def test_static_host_is_identified_by_name_and_port() -> None:
    problems = validate_config_file(fixture("static-ports.yaml"))
    assert [(p.path, p.message) for p in problems] == [(
        "providers[0].pools[1].nodes[0].name",
        "duplicate static node 'host1.example.org' (first defined at providers[0].pools[0].nodes[0])")]


def test_static_node_label_must_be_defined(tmp_path: Path) -> None:
    text = (REPO / "etc" / "nodepool-static.yaml").read_text()
    path = tmp_path / "static.yaml"
    path.write_text(text.replace("labels: [windows-vm]", "labels: [windows-vm, gpu]"))
    assert [(p.path, p.message) for p in validate_config_file(str(path))] == [(
        "providers[0].pools[0].nodes[2].labels[1]",
        "label 'gpu' is not defined in the top-level labels section")]


# -- frozen values and equality ------------------------------------------------

def test_values_are_frozen() -> None:
    config = load_config(fixture("every-key.yaml"))
    provider = config.providers["cloud-a"]
    label = provider.pools["main"].labels["from-dib"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        provider.rate = 2.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.labels["from-dib"].min_ready = 9  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.providers["other"] = provider  # type: ignore[index]
    with pytest.raises(TypeError):
        label.instance_properties["owner"] = "me"  # type: ignore[index]
    assert isinstance(config.providers, MappingProxyType)
    assert isinstance(provider.pools["main"].networks, tuple)
    assert isinstance(config.diskimages["dib-image"].elements, tuple)
    assert isinstance(config.diskimages["dib-image"].block_device[0], MappingProxyType)


def test_two_loads_of_one_file_are_equal(tmp_path: Path) -> None:
    copy = tmp_path / "copy.yaml"
    copy.write_text(NL05.read_text())
    first, second = load_config(str(NL05)), load_config(str(copy))
    assert first is not second and first == second
    assert first.source_path != second.source_path
    for name, provider in first.providers.items():
        assert provider == second.providers[name]
    changes = provider_changes(first, second)
    assert changes.changed == () and changes.unchanged == tuple(first.providers)


def test_changing_one_provider_changes_only_its_value(tmp_path: Path) -> None:
    data = yaml.safe_load(NL05.read_text())
    # The pools of raxflex-sjc3 are not YAML aliases, so only it changes.
    data["providers"][4]["pools"][0]["max-servers"] = 8
    path = tmp_path / "nodepool.yaml"
    path.write_text(yaml.safe_dump(data))
    old, new = load_config(str(NL05)), load_config(str(path))
    assert old != new
    assert [n for n in old.providers if old.providers[n] != new.providers[n]] == ["raxflex-sjc3"]
    assert old.labels == new.labels and old.diskimages == new.diskimages
    changes = provider_changes(old, new)
    assert (changes.added, changes.removed, changes.changed) == ((), (), ("raxflex-sjc3",))


def test_provider_changes_on_first_load_and_removal() -> None:
    config = load_config(str(NL05))
    assert provider_changes(None, config).added == tuple(config.providers)
    smaller = dataclasses.replace(config, providers=MappingProxyType(
        {k: v for k, v in config.providers.items() if k != "rax-iad"}))
    assert provider_changes(config, smaller).removed == ("rax-iad",)


def test_mappings_keep_file_order() -> None:
    config = load_config(str(NL05))
    assert list(config.providers) == ["rax-dfw", "rax-iad", "rax-ord", "raxflex-dfw3",
                                      "raxflex-sjc3"]
    assert list(config.labels)[:3] == ["centos-9-stream", "debian-bookworm", "debian-bullseye"]


def test_equal_values_built_by_hand_compare_equal() -> None:
    assert DiskImage(name="x", elements=("a",)) == DiskImage(name="x", elements=("a",))
    assert DiskImage(name="x") != DiskImage(name="x", pause=True)


def test_every_schema_key_is_documented() -> None:
    doc = (REPO / "doc" / "configuration.md").read_text()
    # Schema entries map a key to a validator: Str, Int, ListOf(...), POOL...
    key = re.compile(r'^\s+(?:v\.Required\()?"([a-z][a-z_-]*)"\)?: [A-Z]', re.MULTILINE)
    keys = {k for name in ("schema.py", "openstack.py", "static.py")
            for k in key.findall((REPO / "nodepool" / "config" / name).read_text())}
    assert len(keys) > 60
    # Documented as `key`, or inside a dotted name such as `webapp.port`.
    assert sorted(k for k in keys if not re.search(rf"[`.]{re.escape(k)}`", doc)) == []
