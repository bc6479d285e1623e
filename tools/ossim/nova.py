"""Nova v2.1 outside servers: version documents, flavors, limits, quota sets, AZs, keypairs."""

from __future__ import annotations

import base64
import hashlib
import re
import time

from .config import FlavorSpec
from .httpkit import JSON, ApiError, Request, Response, Router, paginate, with_query
from .models import Keypair, iso
from .state import CloudState

MIN_MICROVERSION = "2.1"
KEYPAIR_NAME = re.compile(r"^[a-zA-Z0-9 _-]+$")


def parse_microversion(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


class NovaApi:
    def __init__(self, state: CloudState) -> None:
        self.state = state
        self.config = state.config

    def register(self, router: Router) -> None:
        add = router.add
        for path in ("/compute", "/compute/"):
            add("GET", path, self.versions, "compute", public=True)
        add("GET", "/compute/v2.1", self.version, "compute", public=True)
        add("GET", "/compute/v2.1/flavors", self.list_flavors, "compute")
        add("GET", "/compute/v2.1/flavors/detail", self.list_flavors_detail, "compute")
        add("GET", "/compute/v2.1/flavors/{id}", self.get_flavor, "compute")
        add("GET", "/compute/v2.1/flavors/{id}/os-extra_specs", self.flavor_extra_specs, "compute")
        add("GET", "/compute/v2.1/limits", self.limits, "compute")
        add("GET", "/compute/v2.1/os-quota-sets/{project}", self.quota_set, "compute")
        add("GET", "/compute/v2.1/os-quota-sets/{project}/detail", self.quota_set_detail, "compute")
        add("GET", "/compute/v2.1/os-availability-zone", self.availability_zones, "compute")
        add("GET", "/compute/v2.1/os-keypairs", self.list_keypairs, "compute")
        add("POST", "/compute/v2.1/os-keypairs", self.create_keypair, "compute")
        add("GET", "/compute/v2.1/os-keypairs/{name}", self.get_keypair, "compute")
        add("DELETE", "/compute/v2.1/os-keypairs/{name}", self.delete_keypair, "compute")

    # -- versions ------------------------------------------------------------------------------

    def _v21(self, base: str) -> JSON:
        return {"id": "v2.1", "status": "CURRENT", "version": self.config.max_microversion,
                "min_version": MIN_MICROVERSION, "updated": "2013-07-23T11:33:21Z",
                "links": [{"rel": "self", "href": f"{base}/compute/v2.1/"},
                          {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}],
                "media-types": [{"base": "application/json",
                                 "type": "application/vnd.openstack.compute+json;version=2.1"}]}

    def versions(self, req: Request) -> Response:
        v20 = {"id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "",
               "updated": "2011-01-21T11:33:21Z", "links": [{"rel": "self", "href": f"{req.base_url}/compute/v2/"}]}
        v21 = self._v21(req.base_url)
        v21.pop("media-types")
        return Response(200, {"versions": [v20, v21]})

    def version(self, req: Request) -> Response:
        return Response(200, {"version": self._v21(req.base_url)})

    # -- flavors -------------------------------------------------------------------------------

    def _flavor_links(self, base: str, flavor_id: str) -> list[JSON]:
        return [{"rel": "self", "href": f"{base}/compute/v2.1/flavors/{flavor_id}"},
                {"rel": "bookmark", "href": f"{base}/compute/flavors/{flavor_id}"}]

    def flavor_view(self, req: Request, flavor: FlavorSpec, detail: bool = True) -> JSON:
        view: JSON = {"id": flavor.id, "name": flavor.name, "links": self._flavor_links(req.base_url, flavor.id)}
        if req.microversion >= (2, 55):
            view["description"] = None
        if not detail:
            return view
        view.update({"ram": flavor.ram, "vcpus": flavor.vcpus, "disk": flavor.disk,
                     "OS-FLV-EXT-DATA:ephemeral": 0, "swap": 0 if req.microversion >= (2, 75) else "",
                     "rxtx_factor": 1.0, "os-flavor-access:is_public": True, "OS-FLV-DISABLED:disabled": False})
        if req.microversion >= (2, 61):
            view["extra_specs"] = {}
        return view

    def _flavors(self, req: Request, detail: bool) -> Response:
        flavors = sorted(self.state.flavors.values(), key=lambda f: (len(f.id), f.id))
        min_ram, min_disk = req.arg("minRam"), req.arg("minDisk")
        if min_ram:
            flavors = [f for f in flavors if f.ram >= int(min_ram)]
        if min_disk:
            flavors = [f for f in flavors if f.disk >= int(min_disk)]
        page, next_marker = paginate(flavors, req, lambda f: f.id, 1000, 1000)
        body: JSON = {"flavors": [self.flavor_view(req, f, detail) for f in page]}
        if next_marker:
            href = with_query(f"{req.base_url}{req.path}", req.query, marker=next_marker)
            body["flavors_links"] = [{"rel": "next", "href": href}]
        return Response(200, body)

    def list_flavors(self, req: Request) -> Response:
        return self._flavors(req, detail=False)

    def list_flavors_detail(self, req: Request) -> Response:
        return self._flavors(req, detail=True)

    def find_flavor(self, flavor_id: str) -> FlavorSpec:
        flavor = self.state.flavors.get(flavor_id)
        if flavor is None:
            raise ApiError(404, "itemNotFound", f"Flavor {flavor_id} could not be found.")
        return flavor

    def get_flavor(self, req: Request) -> Response:
        return Response(200, {"flavor": self.flavor_view(req, self.find_flavor(req.params["id"]))})

    def flavor_extra_specs(self, req: Request) -> Response:
        self.find_flavor(req.params["id"])
        return Response(200, {"extra_specs": {}})

    # -- limits, quotas, zones -----------------------------------------------------------------

    def limits(self, req: Request) -> Response:
        quotas, mv = self.config.quotas, req.microversion
        with self.state.lock:
            used = self.state.usage()
            fips_used = len(self.state.fips)
        absolute: JSON = {
            "maxServerMeta": 128, "maxTotalInstances": quotas.instances, "maxTotalCores": quotas.cores,
            "maxTotalRAMSize": quotas.ram, "maxServerGroups": 10, "maxServerGroupMembers": 10,
            "maxTotalKeypairs": 100, "totalInstancesUsed": used["instances"], "totalCoresUsed": used["cores"],
            "totalRAMUsed": used["ram"], "totalServerGroupsUsed": 0,
        }
        if mv < (2, 36):  # proxied network figures were dropped in 2.36
            absolute.update({"maxTotalFloatingIps": quotas.floating_ips, "totalFloatingIpsUsed": fips_used,
                             "maxSecurityGroups": 10, "maxSecurityGroupRules": 20,
                             "totalSecurityGroupsUsed": 1})
        if mv < (2, 39):
            absolute["maxImageMeta"] = 128
        if mv < (2, 57):
            absolute.update({"maxPersonality": 5, "maxPersonalitySize": 10240})
        return Response(200, {"limits": {"rate": [], "absolute": absolute}})

    def _quota_values(self, mv: tuple[int, int]) -> dict[str, int]:
        q = self.config.quotas
        values = {"instances": q.instances, "cores": q.cores, "ram": q.ram, "key_pairs": 100,
                  "metadata_items": 128, "server_groups": 10, "server_group_members": 10}
        if mv < (2, 57):
            values.update({"injected_files": 5, "injected_file_content_bytes": 10240,
                           "injected_file_path_bytes": 255})
        if mv < (2, 36):
            values.update({"fixed_ips": -1, "floating_ips": q.floating_ips, "security_group_rules": 20,
                           "security_groups": 10})
        return values

    def quota_set(self, req: Request) -> Response:
        body: JSON = {"id": req.params["project"], **self._quota_values(req.microversion)}
        return Response(200, {"quota_set": body})

    def quota_set_detail(self, req: Request) -> Response:
        with self.state.lock:
            used: dict[str, int] = {**self.state.usage(), "key_pairs": len(self.state.keypairs),
                                    "floating_ips": len(self.state.fips)}
        body: JSON = {"id": req.params["project"]}
        for key, limit in self._quota_values(req.microversion).items():
            body[key] = {"in_use": used.get(key, 0), "limit": limit, "reserved": 0}
        return Response(200, {"quota_set": body})

    def availability_zones(self, req: Request) -> Response:
        zones = [{"zoneName": z, "zoneState": {"available": True}, "hosts": None}
                 for z in self.config.availability_zones]
        return Response(200, {"availabilityZoneInfo": zones})

    # -- keypairs ------------------------------------------------------------------------------

    def _keypair_view(self, req: Request, kp: Keypair, full: bool) -> JSON:
        view: JSON = {"name": kp.name, "public_key": kp.public_key, "fingerprint": kp.fingerprint}
        if req.microversion >= (2, 2):
            view["type"] = kp.type
        if full:
            view.update({"user_id": self.state.user_id, "deleted": False, "created_at": iso(kp.created),
                         "updated_at": None, "deleted_at": None, "id": kp.id})
        return view

    def list_keypairs(self, req: Request) -> Response:
        with self.state.lock:
            keypairs = sorted(self.state.keypairs.values(), key=lambda k: k.name)
        page, next_marker = paginate(keypairs, req, lambda k: k.name, 1000, 1000)
        body: JSON = {"keypairs": [{"keypair": self._keypair_view(req, k, False)} for k in page]}
        if next_marker and req.microversion >= (2, 35):
            body["keypairs_links"] = [{"rel": "next", "href": with_query(
                f"{req.base_url}{req.path}", req.query, marker=next_marker)}]
        return Response(200, body)

    def _find_keypair(self, name: str) -> Keypair:
        kp = self.state.keypairs.get(name)
        if kp is None:
            raise ApiError(404, "itemNotFound", f"Keypair {name} not found for user {self.state.user_id}")
        return kp

    def get_keypair(self, req: Request) -> Response:
        with self.state.lock:
            kp = self._find_keypair(req.params["name"])
        return Response(200, {"keypair": self._keypair_view(req, kp, True)})

    def create_keypair(self, req: Request) -> Response:
        spec = req.json().get("keypair")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ApiError(400, "badRequest", "Invalid input for field/attribute keypair. "
                                              "'name' is a required property")
        name = spec["name"]
        if not 1 <= len(name) <= 255 or not KEYPAIR_NAME.match(name):
            raise ApiError(400, "badRequest", "Keypair data is invalid: Keypair name contains unsafe characters")
        public_key, private_key = spec.get("public_key"), None
        if public_key is None:
            if req.microversion >= (2, 92):
                raise ApiError(400, "badRequest", "Invalid input for field/attribute keypair. "
                                                  "'public_key' is a required property")
            public_key, private_key = generate_keypair()
        fingerprint = fingerprint_of(public_key)
        with self.state.lock:
            if name in self.state.keypairs:
                raise ApiError(409, "conflictingRequest", f"Key pair '{name}' already exists.")
            self.state.keypair_seq += 1
            kp = Keypair(name=name, public_key=public_key.strip(), fingerprint=fingerprint,
                         type=spec.get("type", "ssh"), created=time.time(), id=self.state.keypair_seq)
            self.state.keypairs[name] = kp
        view = self._keypair_view(req, kp, False)
        view["user_id"] = self.state.user_id
        if private_key:
            view["private_key"] = private_key
        return Response(201 if req.microversion >= (2, 2) else 200, {"keypair": view})

    def delete_keypair(self, req: Request) -> Response:
        with self.state.lock:
            self._find_keypair(req.params["name"])
            del self.state.keypairs[req.params["name"]]
        return Response(204 if req.microversion >= (2, 2) else 202)


def fingerprint_of(public_key: str) -> str:
    """Nova's fingerprint: MD5 of the key blob, colon-separated hex."""
    parts = public_key.strip().split()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (IndexError, ValueError) as exc:
        raise ApiError(400, "badRequest", "Keypair data is invalid: failed to generate fingerprint") from exc
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


def generate_keypair() -> tuple[str, str]:
    """An RSA key pair as Nova generates before 2.92: (OpenSSH public, PEM private)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return public + " Generated-by-Nova", private

