"""Config problems never quote a value that may be secret (messages reach logs): values of
secret-looking keys, of diskimage env-vars, of the secure file, or from the environment."""

from __future__ import annotations

from pathlib import Path

from nodepool.config import validate_config_file

SECRET = "Hunter2-s3cret-7731"

BASE = """\
zookeeper-servers:
  - host: zk1.example.org
labels:
  - name: small
diskimages:
  - name: ubuntu
    env-vars:
      DIB_REPO_PASSWORD: {password}
      DIB_RELEASE: [bookworm]
providers:
  - name: cloud1
    cloud: c1
    diskimages:
      - name: ubuntu
    pools:
      - name: main
        max-servers: {max_servers}
        labels:
          - name: small
            diskimage: ubuntu
            min-ram: 1024
"""


def problems(tmp_path: Path, text: str, secure: str | None = None,
             env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "nodepool.yaml"
    path.write_text(text)
    secure_path = None
    if secure is not None:
        secure_path = str(tmp_path / "secure.conf")
        Path(secure_path).write_text(secure)
    found = validate_config_file(str(path), env=env or {}, secure=secure_path)
    return [f"{p.path}: {p.message}" for p in found]


def test_env_vars_and_secret_looking_keys_show_the_type_but_not_the_value(
        tmp_path: Path) -> None:
    text = BASE.format(password=f"[{SECRET}]", max_servers="five")
    assert problems(tmp_path, text) == [
        "diskimages[0].env-vars.DIB_REPO_PASSWORD: expected str, got list (its value is not "
        "shown: the key may hold a secret)",
        "diskimages[0].env-vars.DIB_RELEASE: expected str, got list (its value is not shown: "
        "the key may hold a secret)",
        # Where no secret can be, the value helps: it is quoted.
        "providers[0].pools[0].max-servers: expected int, got str 'five'",
    ]


def test_secure_file_values_are_never_quoted(tmp_path: Path) -> None:
    text = BASE.format(password="x", max_servers=5).replace("      DIB_RELEASE: [bookworm]\n", "")
    secure = (f"zookeeper-servers:\n  - host: zk\n    port: {SECRET}\n"
              f"diskimages:\n  - name: ubuntu\n    env-vars: {{TOKEN: [{SECRET}]}}\n")
    found = problems(tmp_path, text, secure=secure)
    assert found == [
        "diskimages[0].env-vars.TOKEN: expected str, got list (its value is not shown: the "
        "secure file holds secrets)",
        "zookeeper-servers[0].port: expected int, got str (its value is not shown: the "
        "secure file holds secrets)",
    ]


def test_a_secure_file_that_is_not_a_mapping_is_not_quoted(tmp_path: Path) -> None:
    text = BASE.format(password="x", max_servers=5).replace("      DIB_RELEASE: [bookworm]\n", "")
    found = problems(tmp_path, text, secure=f"{SECRET}\n")
    assert len(found) == 1 and found[0].endswith("got str"), found
    assert SECRET not in found[0]


def test_a_value_from_the_environment_is_not_quoted(tmp_path: Path) -> None:
    text = BASE.format(password="x", max_servers="%(NODEPOOL_MAX)").replace(
        "      DIB_RELEASE: [bookworm]\n", "")
    assert problems(tmp_path, text, env={"NODEPOOL_MAX": SECRET}) == [
        "providers[0].pools[0].max-servers: expected int, got str (its value is not shown: "
        "it comes from an environment variable)"]


def test_a_secret_looking_key_anywhere_hides_its_value(tmp_path: Path) -> None:
    text = (BASE.format(password="x", max_servers=5).replace("      DIB_RELEASE: [bookworm]\n", "")
            + f"zookeeper-tls:\n  cert: /c.pem\n  key: [{SECRET}]\n  ca: /ca.pem\n")
    found = problems(tmp_path, text)
    assert found == ["zookeeper-tls.key: expected str, got list (its value is not shown: the "
                     "key may hold a secret)"]
