"""The AWS driver's test rig, a pytest plugin: moto's server over HTTP, and a fault proxy.

Fixtures: `moto_server` (a ThreadedMotoServer on a free loopback port, per session),
`aws_proxy` (an HTTP proxy in front of it that injects AWS error responses, per session),
`aws_env` (the standard AWS environment pointing boto3 at the proxy, S3 and EBS at moto;
moto reset per test), the import tasks moto lacks answered by the proxy (awsimport.py),
`ec2` (the test's own boto3 client, straight to moto), `aws_network` (a VPC with two
subnets), `aws_provider` (a parsed provider) and `AwsFaults` for the contract suite.
"""

from __future__ import annotations

import http.client
import http.server
import logging
import re
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer
from plugins.awsimport import ACTIONS as IMPORT_ACTIONS
from plugins.awsimport import ImportTasks

from nodepool.config import parse_config

REGION = "us-east-1"
AMI = "ami-12c6146b"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": REGION}
TAG_PROVIDER, TAG_NODE = "nodepool_provider_name", "nodepool_node_id"

# What AWS answers for each kind of refusal (status, code).
REFUSALS = {"quota": (400, "VcpuLimitExceeded"), "instances": (400, "InstanceLimitExceeded"),
            "capacity": (500, "InsufficientInstanceCapacity"),
            "transient": (503, "RequestLimitExceeded"), "throttle": (400, "Throttling"),
            "busy": (400, "ResourceCountLimitExceeded")}   # too many import tasks at once


def error_body(code: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
            f"<Message>injected by the test proxy</Message></Error></Errors>"
            f"<RequestID>{uuid.uuid4()}</RequestID></Response>").encode()


def fleet_errors(code: str) -> bytes:
    """A CreateFleet answer that made no instance, with its error (HTTP 200, as EC2 says it)."""
    return (f'<CreateFleetResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>{uuid.uuid4()}</requestId><fleetId>fleet-0</fleetId><errorSet><item>"
            f"<errorCode>{code}</errorCode><errorMessage>injected by the test proxy"
            f"</errorMessage><lifecycle>on-demand</lifecycle></item></errorSet>"
            f"<fleetInstanceSet/></CreateFleetResponse>").encode()


class Rule:
    """Answer the next `count` requests of `action` (whose params include `match`) with the
    refusal `kind` (REFUSALS); `fleet-<kind>`: a CreateFleet answer listing that error."""

    def __init__(self, action: str, kind: str, count: int = 1, retry_after: float | None = None,
                 match: dict[str, str] | None = None):
        self.action, self.kind, self.count = action, kind, count
        self.retry_after, self.match = retry_after, match or {}

    def applies(self, action: str, params: dict[str, str]) -> bool:
        return (self.count > 0 and action == self.action
                and all(params.get(k) == val for k, val in self.match.items()))


class FaultProxy:
    """A loopback HTTP proxy in front of moto's server that injects AWS error responses,
    accepts a terminate without doing it (a hung delete) and shows chosen instances as
    `pending` forever (a hung build). Requests are counted by action, and the last one's
    parameters kept (`params[action]`: what was sent, for what moto does not keep)."""

    def __init__(self, upstream: str):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.imports = ImportTasks(upstream, REGION)   # the import calls moto lacks
        self.rules: list[Rule] = []
        self.hung: set[str] = set()
        self.hang_next_run = False
        self.stop_next_run = False
        self.calls: dict[str, int] = {}
        self.params: dict[str, dict[str, str]] = {}
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                proxy.handle(self)

            do_GET = do_POST

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.rules, self.hung, self.calls, self.params = [], set(), {}, {}
            self.hang_next_run = self.stop_next_run = False
            self.imports.reset()

    def add(self, rule: Rule) -> None:
        with self.lock:
            self.rules.append(rule)

    def _take(self, action: str, params: dict[str, str]) -> Rule | None:
        with self.lock:
            self.calls[action] = self.calls.get(action, 0) + 1
            self.params[action] = params
            for rule in self.rules:
                if rule.applies(action, params):
                    rule.count -= 1
                    return rule
        return None

    def handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items()}
        action = params.get("Action", "")
        rule = self._take(action, params)
        if rule is not None and rule.kind == "accept":
            self._reply(req, 200, b'<TerminateInstancesResponse xmlns="http://ec2.amazonaws.com/'
                        b'doc/2016-11-15/"><requestId>1</requestId><instancesSet/>'
                        b"</TerminateInstancesResponse>", {})
            return
        if rule is not None and rule.kind.startswith("fleet-"):
            self._reply(req, 200, fleet_errors(REFUSALS[rule.kind[len("fleet-"):]][1]), {})
            return
        if rule is not None:
            status, code = REFUSALS[rule.kind]
            headers = {} if rule.retry_after is None else {"Retry-After": f"{rule.retry_after:g}"}
            self._reply(req, status, error_body(code), headers)
            return
        if action in IMPORT_ACTIONS:
            self._reply(req, *self.imports.handle(action, params), {})
            return
        status, data, headers = self._forward(req, body)
        if action in ("RunInstances", "CreateFleet") and status == 200:
            self._after_run(data)
        if action == "DescribeInstances" and self.hung:
            data = self._show_pending(data)
        self._reply(req, status, data, headers)

    def _forward(self, req: Any, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        headers = {k: v for k, v in req.headers.items() if k.lower() != "host"}
        conn.request(req.command, req.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        kept = {k: v for k, v in response.getheaders()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")}
        conn.close()
        return response.status, data, kept

    def _after_run(self, data: bytes) -> None:
        # RunInstances: <instanceId>; CreateFleet: <instanceIds><item>
        found = re.search(rb"<(?:instanceId|item)>(i-[0-9a-f]+)</", data)
        if found is None:
            return
        instance_id = found.group(1).decode()
        with self.lock:
            hang, stop = self.hang_next_run, self.stop_next_run
            self.hang_next_run = self.stop_next_run = False
            if hang:
                self.hung.add(instance_id)
        if stop:   # the instance fails: stopped, not running (a launch failure)
            moto_client(self.upstream.geturl()).stop_instances(InstanceIds=[instance_id])

    def _show_pending(self, data: bytes) -> bytes:
        text = data.decode()
        out, last = [], 0
        for state in re.finditer(r"<instanceState>.*?</instanceState>", text, re.S):
            owner = re.findall(r"<instanceId>(i-[0-9a-f]+)</instanceId>", text[:state.start()])
            out.append(text[last:state.start()])
            if owner and owner[-1] in self.hung and "running" in state.group(0):
                out.append("<instanceState><code>0</code><name>pending</name></instanceState>")
            else:
                out.append(state.group(0))
            last = state.end()
        out.append(text[last:])
        return "".join(out).encode()

    def _reply(self, req: Any, status: int, data: bytes, headers: dict[str, str]) -> None:
        req.send_response(status)
        for key, value in headers.items():
            req.send_header(key, value)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def moto_client(url: str) -> Any:
    return boto3.client("ec2", endpoint_url=url, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def aws_proxy(moto_server: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(moto_server)
    yield proxy
    proxy.stop()


@pytest.fixture
def aws_env(moto_server: str, aws_proxy: FaultProxy,
            monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The standard AWS environment (botocore honours AWS_ENDPOINT_URL), moto reset."""
    requests.post(f"{moto_server}/moto-api/reset", timeout=10).raise_for_status()
    aws_proxy.reset()
    # S3 and EBS direct (the builder's uploads) go straight to moto: the proxy speaks EC2's
    # query API only.
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": aws_proxy.url, "AWS_ENDPOINT_URL_S3": moto_server,
           "AWS_ENDPOINT_URL_EBS": moto_server}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    return env


@pytest.fixture
def ec2(moto_server: str, aws_env: dict[str, str]) -> Any:
    return moto_client(moto_server)


@pytest.fixture
def aws_network(ec2: Any) -> dict[str, Any]:
    vpc = ec2.create_vpc(CidrBlock="10.10.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.10.{i}.0/24",
                                 AvailabilityZone=f"{REGION}{zone}")["Subnet"]["SubnetId"]
               for i, zone in ((1, "a"), (2, "b"))]
    group = ec2.create_security_group(GroupName="np", Description="np", VpcId=vpc)["GroupId"]
    ec2.create_key_pair(KeyName="zuul")
    return {"vpc": vpc, "subnets": subnets, "group": group}


def provider_config(network: dict[str, Any], subnets: str | None = None,
                    extra_pool: str = "") -> str:
    return f"""
zookeeper-servers:
  - host: zk.example.org
labels:
  - name: small
  - name: spot
providers:
  - name: ec2-test
    driver: aws
    region-name: {REGION}
    rate: 1000
    cloud-images:
      - name: debian
        image-id: {AMI}
        username: admin
    pools:
      - name: main
        max-servers: 10
        subnet-id: {subnets or network['subnets'][0]}
        security-group-id: {network['group']}
        host-key-checking: false
{extra_pool}        labels:
          - name: small
            cloud-image: debian
            instance-type: t3.medium
            key-name: zuul
            volume-size: 20
          - name: spot
            cloud-image: debian
            instance-type: t3.small
            key-name: zuul
            use-spot: true
"""


@pytest.fixture
def aws_provider(aws_network: dict[str, Any]) -> Any:
    return parse_config(provider_config(aws_network)).providers["ec2-test"]


class AwsFaults:
    """The contract suite's Faults over moto: errors come from the proxy, objects from moto."""

    def __init__(self, proxy: FaultProxy, ec2: Any, provider: str, network: dict[str, Any],
                 create_action: str = "RunInstances"):
        self.proxy, self.ec2, self.provider, self.network = proxy, ec2, provider, network
        self.create_action = create_action   # CreateFleet for a provider of fleet labels

    def fail_next_create(self, kind: str, count: int = 1, retry_after: float | None = None) -> None:
        if kind == "error":
            self.proxy.stop_next_run = True
        elif kind == "hang":
            self.hang_next_create()
        else:
            self.proxy.add(Rule(self.create_action, kind, count, retry_after))

    def fail_next_delete(self, kind: str, count: int = 1, retry_after: float | None = None) -> None:
        if kind == "hang":
            self.hang_next_delete()
        else:
            self.proxy.add(Rule("TerminateInstances", kind, count, retry_after))

    def hang_next_create(self) -> None:
        self.proxy.hang_next_run = True

    def hang_next_delete(self) -> None:
        self.proxy.add(Rule("TerminateInstances", "accept"))

    def _run(self, tags: dict[str, str]) -> str:
        spec = [{"ResourceType": "instance",
                 "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []
        return self.ec2.run_instances(ImageId=AMI, InstanceType="t3.medium", MinCount=1,
                                      MaxCount=1, SubnetId=self.network["subnets"][0],
                                      TagSpecifications=spec)["Instances"][0]["InstanceId"]

    def create_leaked_server(self, node_id: str) -> str:
        return self._run({TAG_PROVIDER: self.provider, TAG_NODE: node_id,
                          "nodepool_pool_name": "main"})

    def create_untagged_server(self) -> str:
        return self._run({})

    def create_leaked_resource(self, node_id: str) -> str | None:
        tags = [{"Key": TAG_PROVIDER, "Value": self.provider}, {"Key": TAG_NODE, "Value": node_id}]
        return self.ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=8, TagSpecifications=[
            {"ResourceType": "volume", "Tags": tags}])["VolumeId"]

    def tick(self) -> None:
        pass
