"""Keystone v3: version discovery, password and token authentication, token validation."""

from __future__ import annotations

import time
import uuid
from typing import Any

from .httpkit import JSON, ApiError, Request, Response, Router
from .models import iso
from .state import CloudState

TOKEN_LIFETIME = 24 * 3600.0


class KeystoneApi:
    def __init__(self, state: CloudState) -> None:
        self.state = state
        self.config = state.config

    def register(self, router: Router) -> None:
        for path in ("/identity", "/identity/"):
            router.add("GET", path, self.versions, "identity", public=True)
        router.add("GET", "/identity/v3", self.version, "identity", public=True)
        router.add("POST", "/identity/v3/auth/tokens", self.issue_token, "identity", public=True)
        router.add("GET", "/identity/v3/auth/tokens", self.validate_token, "identity")
        router.add("HEAD", "/identity/v3/auth/tokens", self.validate_token, "identity")
        router.add("DELETE", "/identity/v3/auth/tokens", self.revoke_token, "identity")

    def _v3(self, base: str) -> JSON:
        return {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
                "links": [{"rel": "self", "href": f"{base}/identity/v3/"}],
                "media-types": [{"base": "application/json",
                                 "type": "application/vnd.openstack.identity-v3+json"}]}

    def versions(self, req: Request) -> Response:
        # Keystone answers its root with 300 Multiple Choices listing the versions it speaks.
        return Response(300, {"versions": {"values": [self._v3(req.base_url)]}})

    def version(self, req: Request) -> Response:
        return Response(200, {"version": self._v3(req.base_url)})

    def issue_token(self, req: Request) -> Response:
        body = req.json()
        identity = body.get("auth", {}).get("identity", {})
        methods = identity.get("methods", [])
        if "password" in methods:
            user = identity.get("password", {}).get("user", {})
            names = (self.config.username, *self.config.extra_users)
            name_ok = user.get("name") in names or user.get("id") == self.state.user_id
            if not name_ok or user.get("password") != self.config.password:
                raise ApiError(401, "Unauthorized", "The request you have made requires authentication.")
            user_name = user.get("name") or self.config.username
        elif "token" in methods:
            old = identity.get("token", {}).get("id")
            if old not in self.state.tokens:
                raise ApiError(401, "Unauthorized", "The request you have made requires authentication.")
            user_name = self.state.token_users.get(old, self.config.username)
        else:
            raise ApiError(400, "Bad Request", f"Unsupported auth methods {methods}: use password or token")
        scope = body.get("auth", {}).get("scope")
        scoped = False
        if isinstance(scope, dict) and "project" in scope:
            project = scope["project"]
            if project.get("name", self.config.project_name) != self.config.project_name and \
                    project.get("id") != self.state.project_id:
                raise ApiError(401, "Unauthorized", "The request you have made requires authentication.")
            scoped = True
        token_id = "gAAAAA" + uuid.uuid4().hex + uuid.uuid4().hex
        with self.state.lock:
            self.state.tokens.add(token_id)
            self.state.token_users[token_id] = user_name
        return Response(201, {"token": self._token_body(req.base_url, methods, scoped)},
                        {"X-Subject-Token": token_id})

    def validate_token(self, req: Request) -> Response:
        subject = req.header("X-Subject-Token")
        if subject not in self.state.tokens:
            raise ApiError(404, "Not Found", f"Could not find token: {subject}.")
        return Response(200, {"token": self._token_body(req.base_url, ["password"], True)},
                        {"X-Subject-Token": subject or ""})

    def revoke_token(self, req: Request) -> Response:
        with self.state.lock:
            self.state.tokens.discard(req.header("X-Subject-Token") or "")
        return Response(204)

    def _token_body(self, base: str, methods: list[str], scoped: bool) -> JSON:
        now = time.time()
        domain = {"id": "default", "name": self.config.domain_name}
        token: JSON = {
            "methods": methods,
            "user": {"domain": domain, "id": self.state.user_id, "name": self.config.username,
                     "password_expires_at": None},
            "audit_ids": [uuid.uuid4().hex[:22]],
            "expires_at": iso(now + TOKEN_LIFETIME).replace("Z", ".000000Z"),
            "issued_at": iso(now).replace("Z", ".000000Z"),
        }
        if scoped:
            token["project"] = {"domain": domain, "id": self.state.project_id, "name": self.config.project_name}
            token["is_domain"] = False
            token["roles"] = [{"id": "9fe2ff9ee4384b1894a90878d3e92bab", "name": "member"},
                              {"id": "0b8b4e3b0b8a4c1e9a8f0d7e6c5b4a39", "name": "reader"}]
            token["catalog"] = self._catalog(base)
        return token

    def _catalog(self, base: str) -> list[dict[str, Any]]:
        services = [("identity", "keystone", "/identity"), ("compute", "nova", "/compute/v2.1"),
                    ("image", "glance", "/image"), ("network", "neutron", "/network")]
        if self.config.block_storage:
            # Registered under both types, as devstack and most clouds do.
            volume = f"/volume/v3/{self.state.project_id}"
            services += [("block-storage", "cinder", volume), ("volumev3", "cinderv3", volume)]
        catalog = []
        for service_type, name, path in services:
            endpoints = [{"id": uuid.uuid5(uuid.NAMESPACE_URL, f"{service_type}-{iface}").hex,
                          "interface": iface, "region_id": self.config.region, "region": self.config.region,
                          "url": base + path}
                         for iface in ("public", "internal", "admin")]
            catalog.append({"endpoints": endpoints, "id": uuid.uuid5(uuid.NAMESPACE_URL, service_type).hex,
                            "type": service_type, "name": name})
        return catalog
