"""The status page (`GET /`, `GET /status.json`) of a running launcher, over HTTP and in Chromium.

The browser is Debian's headless Chromium driven by Selenium through Debian's
chromedriver (tools/run-tests installs both when missing); Selenium Manager is
never asked for anything. A missing browser fails the test, it never skips.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest
from kazoo.client import KazooClient
from plugins.launcher_env import cache_has_request, passes_go_by
from requestor import NODES, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def get(url: str, method: str = "GET") -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def browser():
    """Headless Chromium with its console log kept ("browser": "ALL")."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: the browser test needs Debian's "
                    f"chromium and chromium-driver packages. tools/run-tests installs them "
                    f"(as root); or run `apt-get install chromium chromium-driver`.")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def status(env):
    """A launcher (min-ready 1 for `small`, max-servers 2) serving its web endpoints on an
    ephemeral port; yields it and the base URL."""
    env.write_config(min_ready=1, max_servers=2, web=True)
    launcher = env.start_launcher(webapp=True)
    yield launcher, f"http://127.0.0.1:{launcher.web.port}/"


def ready_nodes(env) -> list[dict]:
    nodes = [env.requestor.node(n) for n in env.kazoo.get_children(NODES)]
    return [n for n in nodes if n and n["state"] == "ready"]


def test_status_page_shows_label_node_count_and_waiting_request_in_chromium(
        env, status, browser, tmp_path):
    launcher, url = status
    rq = env.requestor
    wait_for(lambda: ready_nodes(env), what="min-ready's spare")
    handed = rq.submit(["small"])                  # takes the spare: a hand-over for the chart
    assert rq.wait(handed)["state"] == "fulfilled"
    failed = rq.submit(["other"])                  # no pool offers it: declined, failed
    assert rq.wait(failed)["state"] == "failed"
    wait_for(lambda: len(ready_nodes(env)) == 2, what="min-ready's new spare")
    # The pool is at max-servers 2; deleting the spare would not make room for two: it waits.
    waiting = rq.submit(["large", "large"])
    cache_has_request(launcher, waiting)
    passes_go_by(launcher, "fake1")
    assert rq.get(waiting)["state"] in ("requested", "pending")
    zk_nodes = len(env.kazoo.get_children(NODES))

    browser.get(url)

    def shown(driver) -> bool:
        found = driver.execute_script("""
            function txt(sel) { var e = document.querySelector(sel);
                                return e ? e.textContent : null; }
            return {total: txt('#nodes-total'),
                    label: txt('tr[data-label="small"]'),
                    waiting: txt('tr[data-request="' + arguments[0] + '"]'),
                    failures: txt('#failures'),
                    dots: document.querySelectorAll('#chart svg circle').length,
                    pool: txt('tr[data-pool="fake1/main"]'),
                    connection: txt('#connection')};""", waiting)
        shown.last = found
        return (found["total"] == str(zk_nodes) and found["label"] is not None
                and "2 (1)" in found["label"] and found["waiting"] is not None
                and failed in (found["failures"] or "") and found["dots"] >= 1
                and "2 / 2" in (found["pool"] or "") and found["connection"] == "connected")

    from selenium.webdriver.support.ui import WebDriverWait
    try:
        WebDriverWait(browser, 30, poll_frequency=0.2).until(shown)
    except Exception:
        browser.save_screenshot(str(tmp_path / "status-page-timeout.png"))
        raise AssertionError(f"the page did not show what ZooKeeper holds ({zk_nodes} "
                             f"nodes, request {waiting} waiting): {shown.last}") from None
    assert "large" in shown.last["waiting"]
    browser.save_screenshot(str(tmp_path / "status-page.png"))
    log = browser.get_log("browser")
    assert (tmp_path / "status-page.png").stat().st_size > 0
    severe = [entry for entry in log if entry.get("level") == "SEVERE"]
    assert severe == [], f"the page logged errors in the browser console: {severe}"


def test_status_json_and_page_are_served_over_http(env, status):
    launcher, url = status
    wait_for(lambda: ready_nodes(env), what="min-ready's spare")
    code, headers, body = get(url)
    assert code == 200 and headers["Content-Type"] == "text/html; charset=UTF-8"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    html = body.decode()
    # Self-contained: nothing is loaded from another address.
    assert "<script src" not in html and "<link rel=\"stylesheet\"" not in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html

    code, headers, body = get(url + "status.json")
    assert code == 200 and headers["Content-Type"] == "application/json; charset=UTF-8"
    assert headers["Access-Control-Allow-Origin"] == "*"
    data = json.loads(body)
    assert data["launcher"] == launcher.hostname and data["connected"] is True
    assert data["nodes"]["total"] == len(env.kazoo.get_children(NODES))

    assert get(url + "status.json", method="HEAD")[2] == b""
    code, _, body = get(url + "nowhere")
    assert code == 404 and b"not found: /nowhere" in body
    code, headers, _ = get(url + "status.json", method="POST")
    assert code == 405 and headers["Allow"] == "GET, HEAD"


@pytest.fixture
def ensemble_launcher(ensemble_tls, tmp_path):
    """A launcher on the 3-server ensemble (test_launcher_ensemble's config), min-ready 1."""
    from test_launcher_ensemble import EnsembleEnv
    kazoo = KazooClient(hosts=ensemble_tls["hosts"] + ensemble_tls["chroot"], use_ssl=True,
                        certfile=ensemble_tls["cert"], keyfile=ensemble_tls["key"],
                        ca=ensemble_tls["ca"])
    kazoo.start(timeout=10)
    env = EnsembleEnv(ensemble_tls, tmp_path, kazoo)
    env.write_config(min_ready=1, max_servers=2,
                     extra="webapp:\n  listen_address: 127.0.0.1\n  port: 0\n")
    try:
        yield env, env.start_launcher(webapp=True)
    finally:
        env.stop()
        kazoo.stop()
        kazoo.close()


def test_status_page_keeps_its_last_view_and_says_zookeeper_is_down(
        ensemble_launcher, zk_ensemble, browser, tmp_path):
    env, launcher = ensemble_launcher
    wait_for(lambda: ready_nodes(env), what="min-ready's spare")
    from selenium.webdriver.support.ui import WebDriverWait

    def page(driver) -> dict:
        return driver.execute_script(
            "return {total: document.getElementById('nodes-total').textContent,"
            " connection: document.getElementById('connection').textContent,"
            " problem: document.getElementById('zk-problem').textContent};")

    browser.get(f"http://127.0.0.1:{launcher.web.port}/")
    WebDriverWait(browser, 30, poll_frequency=0.2).until(
        lambda d: page(d)["total"] == "1" and page(d)["connection"] == "connected")
    zk_ensemble.kill(0)   # two of three gone: no quorum, the last one serves nobody
    zk_ensemble.kill(1)
    WebDriverWait(browser, 60, poll_frequency=0.2).until(
        lambda d: page(d)["connection"].startswith("ZooKeeper disconnected"))
    seen = page(browser)
    assert seen["total"] == "1"                       # the cache's last view, still shown
    assert "last view shown" in seen["connection"] and "ZooKeeper" in seen["problem"]
    browser.save_screenshot(str(tmp_path / "status-page-zookeeper-down.png"))
    zk_ensemble.start_member(0)   # a quorum again (the fixture restarts the other)
    WebDriverWait(browser, 90, poll_frequency=0.5).until(
        lambda d: page(d)["connection"] == "connected")
    log = browser.get_log("browser")
    severe = [entry for entry in log if entry.get("level") == "SEVERE"]
    assert severe == [], f"the page logged errors in the browser console: {severe}"
