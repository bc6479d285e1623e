"""Config loading: real OpenDev files load, broken variants of them are reported precisely."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodepool.config import ConfigError, Problem, load_config, validate_config_file
from nodepool.drivers.plugins import installed as installed_drivers

REPO = Path(__file__).resolve().parents[1]


OWN = REPO / "tests" / "data" / "opendev"   # copies of nl05 and nb07 (see its README.md)


def shared_configs_dir() -> Path:
    """NODEPOOL_SHARED_CONFIGS if set, else ../shared/configs next to the repo (may be absent)."""
    return Path(os.environ.get("NODEPOOL_SHARED_CONFIGS", REPO.parent / "shared" / "configs"))


# Every real config we have: the whole shared set when it is there, and always our two copies.
REAL_FILES = [pytest.param(p, id=str(p.relative_to(shared_configs_dir())))
              for p in sorted(shared_configs_dir().glob("**/*.yaml"))] + \
             [pytest.param(p, id=f"tests-data/{p.name}") for p in sorted(OWN.glob("*.yaml"))]
EXAMPLES = sorted((REPO / "etc").glob("nodepool*.yaml"))


def real(name: str) -> dict[str, Any]:
    """One of our copies of a real config as plain data; the JSON round trip undoes YAML
    aliases so that mutating one provider does not mutate the others sharing a list."""
    with open(OWN / name) as f:
        return json.loads(json.dumps(yaml.safe_load(f)))


def write(tmp_path: Path, data: Any, name: str = "nodepool.yaml") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return str(path)


def found(path: str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in validate_config_file(path, env=env)]


# -- files that must load --------------------------------------------------

def test_own_copies_of_real_configs_are_there() -> None:
    assert {p.name for p in OWN.glob("*.yaml")} == {NL05, NB07}


@pytest.mark.parametrize("path", REAL_FILES)
def test_real_opendev_config_has_no_problems(path: Path) -> None:
    assert validate_config_file(str(path)) == []
    load_config(str(path))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_in_etc_is_valid(path: Path) -> None:
    assert validate_config_file(str(path)) == []


def test_examples_in_etc_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"nodepool.yaml", "nodepool-static.yaml"}


# -- broken variants of a real launcher config (opendev-2025/nl05) --------

NL05 = "nl05.opendev.org.yaml"
NB07 = "nb07.opendev.org.yaml"


def test_typo_key_is_an_extra_key_at_its_path(tmp_path: Path) -> None:
    data = real(NL05)
    pool = data["providers"][1]["pools"][0]
    pool["max-server"] = pool.pop("max-servers")
    assert found(write(tmp_path, data)) == [
        ("providers[1].pools[0].max-server", "extra key not allowed")]


def test_wrong_type_names_expected_and_actual(tmp_path: Path) -> None:
    data = real(NL05)
    data["providers"][1]["pools"][0]["labels"][3]["min-ram"] = "abc"
    path = write(tmp_path, data)
    problems = validate_config_file(path)
    assert problems == [Problem(path, "providers[1].pools[0].labels[3].min-ram",
                                "expected int, got str 'abc'")]
    assert str(problems[0]) == \
        f"{path}: providers[1].pools[0].labels[3].min-ram: expected int, got str 'abc'"


def test_missing_required_key(tmp_path: Path) -> None:
    data = real(NL05)
    del data["providers"][2]["cloud"]
    assert found(write(tmp_path, data)) == [("providers[2].cloud", "required key not provided")]


def test_pool_label_missing_from_top_level_labels(tmp_path: Path) -> None:
    data = real(NL05)
    data["providers"][0]["pools"][0]["labels"][3]["name"] = "no-such-label"
    assert found(write(tmp_path, data)) == [(
        "providers[0].pools[0].labels[3].name",
        "label 'no-such-label' is not defined in the top-level labels section")]


def test_label_diskimage_missing_from_provider_diskimages(tmp_path: Path) -> None:
    data = real(NL05)
    data["providers"][3]["pools"][0]["labels"][2]["diskimage"] = "centos-7"
    assert found(write(tmp_path, data)) == [(
        "providers[3].pools[0].labels[2].diskimage",
        "diskimage 'centos-7' is not listed in this provider's diskimages")]


def test_provider_diskimage_missing_from_top_level_diskimages(tmp_path: Path) -> None:
    data = real(NB07)
    data["diskimages"] = [d for d in data["diskimages"] if d["name"] != "ubuntu-noble-arm64"]
    assert found(write(tmp_path, data)) == [(
        "providers[0].diskimages[3].name",
        "diskimage 'ubuntu-noble-arm64' is not defined in the top-level diskimages section")]


def test_label_with_both_diskimage_and_cloud_image(tmp_path: Path) -> None:
    data = real(NL05)
    data["providers"][0]["cloud-images"] = [{"name": "stock-noble"}]
    data["providers"][0]["pools"][0]["labels"][1]["cloud-image"] = "stock-noble"
    assert found(write(tmp_path, data)) == [(
        "providers[0].pools[0].labels[1]",
        "diskimage and cloud-image are mutually exclusive; set exactly one")]


def test_cloud_image_reference_missing_from_cloud_images(tmp_path: Path) -> None:
    data = real(NL05)
    label = data["providers"][0]["pools"][0]["labels"][1]
    del label["diskimage"]
    label["cloud-image"] = "stock-noble"
    assert found(write(tmp_path, data)) == [(
        "providers[0].pools[0].labels[1].cloud-image",
        "cloud-image 'stock-noble' is not listed in this provider's cloud-images")]


def test_label_with_neither_diskimage_nor_cloud_image(tmp_path: Path) -> None:
    data = real(NL05)
    del data["providers"][0]["pools"][0]["labels"][1]["diskimage"]
    assert found(write(tmp_path, data)) == [(
        "providers[0].pools[0].labels[1]", "one of diskimage or cloud-image is required")]


def test_label_with_neither_flavor_name_nor_min_ram(tmp_path: Path) -> None:
    data = real(NL05)
    label = data["providers"][0]["pools"][0]["labels"][4]
    del label["flavor-name"], label["min-ram"]
    assert found(write(tmp_path, data)) == [(
        "providers[0].pools[0].labels[4]", "one of flavor-name or min-ram is required")]


def test_duplicate_provider_name_points_at_first(tmp_path: Path) -> None:
    data = real(NL05)
    data["providers"][2]["name"] = data["providers"][0]["name"]
    assert found(write(tmp_path, data)) == [(
        "providers[2].name", "duplicate provider 'rax-dfw' (first defined at providers[0])")]


@pytest.mark.parametrize("section,what", [("labels", "label"), ("diskimages", "diskimage")])
def test_duplicate_top_level_names(tmp_path: Path, section: str, what: str) -> None:
    data = real(NL05)
    data[section].append({"name": data[section][0]["name"]})
    index = len(data[section]) - 1
    first = data[section][0]["name"]
    assert found(write(tmp_path, data)) == [(
        f"{section}[{index}].name",
        f"duplicate {what} '{first}' (first defined at {section}[0])")]


def test_duplicate_pool_and_duplicate_label_in_pool(tmp_path: Path) -> None:
    data = real(NL05)
    pools = data["providers"][0]["pools"]
    pools[0]["labels"].append(dict(pools[0]["labels"][0]))
    pools.append({"name": "main"})
    n = len(pools[0]["labels"]) - 1
    assert found(write(tmp_path, data)) == [
        (f"providers[0].pools[0].labels[{n}].name",
         "duplicate label 'centos-9-stream' (first defined at providers[0].pools[0].labels[0])"),
        ("providers[0].pools[1].name",
         "duplicate pool 'main' (first defined at providers[0].pools[0])"),
    ]


def test_unknown_driver(tmp_path: Path) -> None:
    data = real(NL05)
    data["providers"][0]["driver"] = "no-such-driver"
    installed = ", ".join(installed_drivers().names())   # openstack, static and any others
    assert "openstack, static" in installed
    assert found(write(tmp_path, data)) == [(
        "providers[0].driver", f"unknown driver 'no-such-driver'; installed drivers: {installed}")]


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    data = real(NL05)
    data["zookeeper-servers"][0]["prot"] = 2181
    data["labels"][0]["min-ready"] = "one"
    data["providers"][1]["rate"] = "fast"
    del data["providers"][4]["pools"][0]["labels"][0]["name"]
    data["providers"][4]["pools"][0]["labels"][2]["diskimage"] = "nope"
    assert found(write(tmp_path, data)) == [
        ("zookeeper-servers[0].prot", "extra key not allowed"),
        ("labels[0].min-ready", "expected int, got str 'one'"),
        ("providers[1].rate", "expected number, got str 'fast'"),
        ("providers[4].pools[0].labels[0].name", "required key not provided"),
        ("providers[4].pools[0].labels[2].diskimage",
         "diskimage 'nope' is not listed in this provider's diskimages"),
    ]


def test_config_error_lists_all_problems_one_per_line(tmp_path: Path) -> None:
    data = real(NL05)
    data["labels"][0]["min-ready"] = "one"
    data["labels"][1]["colour"] = "blue"
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert [p.path for p in raised.value.problems] == ["labels[0].min-ready", "labels[1].colour"]
    assert str(raised.value).splitlines() == [str(p) for p in raised.value.problems]


# -- environment substitution ----------------------------------------------

def test_unset_environment_variable_names_key_path(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODEPOOL_TEST_CLOUD", raising=False)
    data = real(NL05)
    data["providers"][0]["cloud"] = "%(NODEPOOL_TEST_CLOUD)"
    assert found(write(tmp_path, data)) == [(
        "providers[0].cloud",
        "environment variable NODEPOOL_TEST_CLOUD is not set (referenced as %(NODEPOOL_TEST_CLOUD))")]


def test_environment_variables_are_substituted_in_strings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODEPOOL_TEST_CLOUD", "rax-from-env")
    data = real(NL05)
    data["providers"][0]["cloud"] = "%(NODEPOOL_TEST_CLOUD)"
    data["providers"][1]["cloud"] = "prefix-%(NODEPOOL_TEST_CLOUD)-suffix"
    config = load_config(write(tmp_path, data))
    assert config.providers["rax-dfw"].cloud == "rax-from-env"  # type: ignore[attr-defined]
    assert config.providers["rax-iad"].cloud == "prefix-rax-from-env-suffix"  # type: ignore[attr-defined]


def test_substitution_leaves_other_percent_text_alone(tmp_path: Path) -> None:
    data = real(NL05)
    data["providers"][0]["region-name"] = "100% %(HOME) %s"
    data["zookeeper-servers"][0]["host"] = "%(NODEPOOL_ZK)"
    config = load_config(write(tmp_path, data), env={"NODEPOOL_ZK": "zk.local", "HOME": "/x"})
    assert config.providers["rax-dfw"].region_name == "100% %(HOME) %s"  # type: ignore[attr-defined]
    assert config.zookeeper_servers[0].host == "zk.local"


# -- whole-file problems ----------------------------------------------------

def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    lines = (OWN / NL05).read_text().splitlines()
    lines.insert(3, "\tlabels: []")
    path = write(tmp_path, "\n".join(lines) + "\n")
    [problem] = validate_config_file(path)
    assert problem.path == ""
    assert problem.message.startswith("YAML syntax error at line 4, column 1: ")


def test_unclosed_flow_list_points_at_where_parsing_stopped(tmp_path: Path) -> None:
    path = write(tmp_path, "zookeeper-servers:\n  - host: a\n    port: [1\n")
    [problem] = validate_config_file(path)
    assert problem.message == (
        "YAML syntax error at line 4, column 1: expected ',' or ']', but got '<stream end>'"
        " (while parsing a flow sequence started at line 3, column 11)")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    expected = "a mapping with keys such as zookeeper-servers, labels and providers"
    assert found(path) == [("", f"the file is empty; expected {expected}")]


def test_top_level_list_is_a_clear_error(tmp_path: Path) -> None:
    [problem] = validate_config_file(write(tmp_path, "- providers\n"))
    assert problem.message.startswith("the top level must be a mapping")
    assert problem.message.endswith("got list")   # its type: a secure file's text is secret


def test_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yaml")
    assert found(path) == [("", "cannot read the file: No such file or directory")]
    with pytest.raises(ConfigError):
        load_config(path)


def test_elements_dir_need_not_exist(tmp_path: Path) -> None:
    data = real(NB07)
    data["elements-dir"] = str(tmp_path / "does-not-exist")
    assert load_config(write(tmp_path, data)).elements_dir == data["elements-dir"]
