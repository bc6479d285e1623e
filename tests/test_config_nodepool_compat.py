"""Loader behaviour that must match Nodepool's (issue 16): raw-text substitution, the
ZooKeeper port default and chroot, abstract diskimages, diskimage metadata, secure file."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodepool.config import ConfigError, load_config, validate_config_file

BASE = """\
zookeeper-servers:
  - host: zk1.example.org
labels:
  - name: small
diskimages:
  - name: base
    abstract: true
    env-vars: {A: from-base}
  - name: ubuntu
    parent: base
    env-vars: {B: from-ubuntu}
providers:
  - name: cloud1
    cloud: c1
    diskimages:
      - name: ubuntu
    pools:
      - name: main
        labels:
          - name: small
            diskimage: ubuntu
            min-ram: 1024
"""


def write(tmp_path: Path, text: str, name: str = "nodepool.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def found(path: str, **kwargs) -> list[str]:
    return [str(p) for p in validate_config_file(path, **kwargs)]


# -- environment substitution, in the raw text as Nodepool does it -----------------

def test_unquoted_substitution_parses_as_yaml_so_a_port_becomes_an_int(tmp_path: Path) -> None:
    text = BASE.replace("  - host: zk1.example.org\n",
                        "  - host: %(NODEPOOL_ZK_HOST)\n    port: %(NODEPOOL_ZK_PORT)\n")
    config = load_config(write(tmp_path, text),
                         env={"NODEPOOL_ZK_HOST": "zk9", "NODEPOOL_ZK_PORT": "2999"})
    assert (config.zookeeper_servers[0].host, config.zookeeper_servers[0].port) == ("zk9", 2999)


def test_substitution_applies_to_keys_too_and_only_to_nodepool_names(tmp_path: Path) -> None:
    text = BASE.replace("    env-vars: {B: from-ubuntu}",
                        "    env-vars: {'%(NODEPOOL_KEY)': '%(HOME)%(NODEPOOL_V)s'}")
    config = load_config(write(tmp_path, text),
                         env={"NODEPOOL_KEY": "DIB_X", "NODEPOOL_V": "v", "HOME": "/h"})
    # No 's' suffix and no other names: as Nodepool's plain text replacement.
    assert config.diskimages["ubuntu"].env_vars["DIB_X"] == "%(HOME)vs"


def test_unset_variable_unquoted_names_its_key_path(tmp_path: Path) -> None:
    text = BASE.replace("  - host: zk1.example.org\n",
                        "  - host: zk1.example.org\n    port: %(NODEPOOL_ZK_PORT)\n")
    path = write(tmp_path, text)
    assert found(path, env={}) == [
        f"{path}: zookeeper-servers[0].port: environment variable NODEPOOL_ZK_PORT is not set "
        f"(referenced as %(NODEPOOL_ZK_PORT))"]


def test_unset_variable_in_a_comment_is_no_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "# set %(NODEPOOL_NOT_SET) one day\n" + BASE)
    assert found(path, env={}) == []


# -- ZooKeeper -----------------------------------------------------------------------

def test_zookeeper_port_defaults_to_2281_as_nodepool(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert config.zookeeper_hosts() == "zk1.example.org:2281"


def test_chroot_written_on_the_last_server_applies_to_the_ensemble(tmp_path: Path) -> None:
    text = BASE.replace("  - host: zk1.example.org\n",
                        "  - host: zk1\n  - host: zk2\n  - host: zk3\n    chroot: /nodepool\n")
    config = load_config(write(tmp_path, text))
    assert config.zookeeper_hosts() == "zk1:2281,zk2:2281,zk3:2281"
    assert config.zookeeper_chroot() == "/nodepool"


def test_conflicting_chroots_are_refused_at_their_key_path(tmp_path: Path) -> None:
    text = BASE.replace("  - host: zk1.example.org\n",
                        "  - host: zk1\n    chroot: /a\n  - host: zk2\n    chroot: /a/\n"
                        "  - host: zk3\n    chroot: /b\n")
    path = write(tmp_path, text)
    assert found(path) == [
        f"{path}: zookeeper-servers[2].chroot: chroot '/b' differs from '/a' at "
        f"zookeeper-servers[0].chroot; the servers of one ensemble share one chroot"]


def test_relative_chroot_is_refused(tmp_path: Path) -> None:
    text = BASE.replace("  - host: zk1.example.org\n", "  - host: zk1\n    chroot: nodepool\n")
    path = write(tmp_path, text)
    assert found(path) == [f"{path}: zookeeper-servers[0].chroot: a chroot is a ZooKeeper "
                           f"path and starts with '/', got 'nodepool'"]


# -- diskimages ----------------------------------------------------------------------

def test_provider_using_an_abstract_diskimage_is_refused(tmp_path: Path) -> None:
    text = BASE.replace("    diskimages:\n      - name: ubuntu\n",
                        "    diskimages:\n      - name: ubuntu\n      - name: base\n")
    path = write(tmp_path, text)
    assert found(path) == [
        f"{path}: providers[0].diskimages[1].name: diskimage 'base' is abstract (only a parent "
        f"for other images, never built); a provider cannot use it"]


def test_diskimage_metadata_is_accepted_and_kept_per_image(tmp_path: Path) -> None:
    text = BASE.replace("    abstract: true\n", "    abstract: true\n    metadata: {os: linux}\n")
    text = text.replace("    parent: base\n", "    parent: base\n    metadata: {distro: ubuntu}\n")
    config = load_config(write(tmp_path, text))
    # As Nodepool: each image's own metadata (a parent's is not merged in).
    assert dict(config.diskimages["ubuntu"].metadata) == {"distro": "ubuntu"}
    assert dict(config.diskimages["base"].metadata) == {"os": "linux"}


# -- the secure file -----------------------------------------------------------------

SECURE = """\
zookeeper-servers:
  - host: zk-secure
    port: 3281
    chroot: /secret
zookeeper-tls:
  cert: /s/cert.pem
  key: /s/key.pem
  ca: /s/ca.pem
diskimages:
  - name: ubuntu
    env-vars: {B: secret-b, C: secret-c}
"""


def test_secure_file_replaces_zookeeper_keys_and_merges_env_vars(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE), secure=write(tmp_path, SECURE, "secure.conf"))
    assert (config.zookeeper_hosts(), config.zookeeper_chroot()) == ("zk-secure:3281", "/secret")
    assert config.zookeeper_tls is not None and config.zookeeper_tls.cert == "/s/cert.pem"
    assert dict(config.diskimages["ubuntu"].env_vars) == {
        "A": "from-base", "B": "secret-b", "C": "secret-c"}


def test_zookeeper_servers_may_come_from_the_secure_file_only(tmp_path: Path) -> None:
    main = BASE.replace("zookeeper-servers:\n  - host: zk1.example.org\n", "")
    secure = write(tmp_path, SECURE, "secure.conf")
    assert load_config(write(tmp_path, main), secure=secure).zookeeper_hosts() == "zk-secure:3281"
    with pytest.raises(ConfigError, match="zookeeper-servers: required key not provided"):
        load_config(str(tmp_path / "nodepool.yaml"))


def test_secure_file_problems_name_the_secure_file(tmp_path: Path) -> None:
    secure = write(tmp_path, SECURE.replace("port: 3281", "port: high")
                   .replace("name: ubuntu", "name: base") + "labels: []\n", "secure.conf")
    assert found(write(tmp_path, BASE), secure=secure) == [
        f"{secure}: labels: extra key not allowed",
        f"{secure}: zookeeper-servers[0].port: expected int, got str (its value is not "
        f"shown: the secure file holds secrets)",
        f"{secure}: diskimages[0].name: diskimage 'base' is abstract; env-vars apply to the "
        f"image itself, so set them on the images built from it"]


def test_named_secure_file_that_is_missing_is_a_clear_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "secure.conf")
    assert found(write(tmp_path, BASE), secure=missing) == [
        f"{missing}: secure file: cannot read the file: No such file or directory"]


def test_empty_secure_file_changes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    assert load_config(path, secure=write(tmp_path, "", "secure.conf")) == load_config(path)


def test_example_secure_file_in_etc_goes_with_the_example_config() -> None:
    etc = Path(__file__).resolve().parents[1] / "etc"
    config = load_config(str(etc / "nodepool.yaml"), secure=str(etc / "secure.conf"))
    assert (config.zookeeper_hosts(), config.zookeeper_chroot()) == (
        "zk01.example.org:2281", "/nodepool")
