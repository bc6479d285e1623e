"""Glance v2: versions, images list/get/create/update/delete, upload, stage and import."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from typing import Any

from .httpkit import JSON, ApiError, Request, Response, Router, paginate, with_query
from .models import Image, iso, new_id
from .state import CloudState

IMPORT_METHODS = ("glance-direct", "web-download")
CORE = {"name", "disk_format", "container_format", "visibility", "min_disk", "min_ram", "protected", "tags"}
READ_ONLY = {"id", "status", "checksum", "os_hash_algo", "os_hash_value", "size", "virtual_size", "owner",
             "created_at", "updated_at", "self", "file", "schema", "direct_url", "locations"}


class GlanceApi:
    def __init__(self, state: CloudState) -> None:
        self.state = state

    def register(self, router: Router) -> None:
        add, base = router.add, "/image/v2/images"
        for path in ("/image", "/image/", "/image/v2"):
            add("GET", path, self.versions, "image", public=True)
        add("GET", "/image/v2/info/import", self.import_info, "image")
        add("GET", base, self.list_images, "image")
        add("POST", base, self.create_image, "image")
        add("GET", base + "/{id}", self.get_image, "image")
        add("PATCH", base + "/{id}", self.update_image, "image")
        add("DELETE", base + "/{id}", self.delete_image, "image")
        add("PUT", base + "/{id}/file", self.upload, "image")
        add("PUT", base + "/{id}/stage", self.stage, "image")
        add("POST", base + "/{id}/import", self.import_image, "image")
        add("PUT", base + "/{id}/tags/{tag}", self.add_tag, "image")
        add("DELETE", base + "/{id}/tags/{tag}", self.remove_tag, "image")

    def versions(self, req: Request) -> Response:
        # Glance answers its root with 300 and every v2.x it speaks, newest first.
        versions = [{"id": f"v2.{minor}", "status": "CURRENT" if minor == 16 else "SUPPORTED",
                     "links": [{"rel": "self", "href": f"{req.base_url}/image/v2/"}]} for minor in range(16, -1, -1)]
        return Response(300, {"versions": versions})

    def import_info(self, req: Request) -> Response:
        return Response(200, {"import-methods": {"description": "Import methods available.", "type": "array",
                                                 "value": list(IMPORT_METHODS)}})

    def view(self, image: Image) -> JSON:
        view: JSON = {
            "id": image.id, "name": image.name, "status": image.status, "visibility": image.visibility,
            "protected": image.protected, "os_hidden": False, "checksum": image.checksum,
            "os_hash_algo": "sha512" if image.os_hash_value else None, "os_hash_value": image.os_hash_value,
            "owner": self.state.project_id, "size": image.size, "min_ram": image.min_ram,
            "min_disk": image.min_disk, "disk_format": image.disk_format,
            "container_format": image.container_format, "created_at": iso(image.created),
            "updated_at": iso(image.updated), "tags": list(image.tags), "self": f"/v2/images/{image.id}",
            "file": f"/v2/images/{image.id}/file", "schema": "/v2/schemas/image", "virtual_size": None,
        }
        view.update(image.properties)
        return view

    def find(self, image_id: str) -> Image:
        image = self.state.images.get(image_id)
        if image is None:
            raise ApiError(404, "Not Found", f"No image found with ID {image_id}")
        return image

    def list_images(self, req: Request) -> Response:
        filters = {k: req.arg(k) for k in ("name", "status", "visibility", "disk_format", "container_format", "id")}
        tags = req.query.get("tag", [])
        with self.state.lock:
            images = sorted(self.state.images.values(), key=lambda i: (i.created, i.id), reverse=True)
            images = [i for i in images
                      if all(v is None or _field(i, k) in _in_values(v) for k, v in filters.items())
                      and set(tags) <= set(i.tags)]
            page, next_marker = paginate(images, req, lambda i: i.id, 25, 1000)
            body: JSON = {"images": [self.view(i) for i in page], "first": "/v2/images",
                          "schema": "/v2/schemas/images"}
        if next_marker:
            body["next"] = with_query("/v2/images", req.query, marker=next_marker)
        return Response(200, body)

    def get_image(self, req: Request) -> Response:
        with self.state.lock:
            return Response(200, self.view(self.find(req.params["id"])))

    def create_image(self, req: Request) -> Response:
        spec = req.json()
        forbidden = READ_ONLY & (set(spec) - {"id"})
        if forbidden:
            raise ApiError(403, "Forbidden", f"Attribute '{sorted(forbidden)[0]}' is read-only.")
        image = Image(id=str(spec.get("id") or new_id()), name=str(spec.get("name") or ""))
        _apply_fields(image, spec)
        with self.state.lock:
            if image.id in self.state.images:
                raise ApiError(409, "Conflict", f"Image with identifier {image.id} already exists!")
            self.state.images[image.id] = image
            view = self.view(image)
        return Response(201, view, {"Location": f"{req.base_url}/image/v2/images/{image.id}",
                                    "OpenStack-image-import-methods": ",".join(IMPORT_METHODS)})

    def update_image(self, req: Request) -> Response:
        try:
            ops = json.loads(req.body or b"[]")
        except ValueError as exc:
            raise ApiError(400, "Bad Request", f"Malformed JSON-patch body: {exc}") from exc
        if not isinstance(ops, list):
            raise ApiError(400, "Bad Request", "Expected a JSON-patch list of operations")
        with self.state.lock:
            image = self.find(req.params["id"])
            for op in ops:
                key = str(op.get("path", "")).lstrip("/")
                if key in READ_ONLY:
                    raise ApiError(403, "Forbidden", f"Attribute '{key}' is read-only.")
                if op.get("op") in ("add", "replace"):
                    _apply_fields(image, {key: op.get("value")})
                elif op.get("op") == "remove":
                    if key not in image.properties:
                        raise ApiError(409, "Conflict", f"Property {key} does not exist.")
                    del image.properties[key]
            image.updated = time.time()
            return Response(200, self.view(image))

    def delete_image(self, req: Request) -> Response:
        with self.state.lock:
            image = self.find(req.params["id"])
            if image.protected:
                raise ApiError(403, "Forbidden", f"Image {image.id} is protected and cannot be deleted.")
            del self.state.images[image.id]
        return Response(204)

    def _store(self, image: Image, data: bytes) -> None:
        image.size = len(data)
        image.checksum = hashlib.md5(data).hexdigest()
        image.os_hash_value = hashlib.sha512(data).hexdigest()
        delay = self.state.config.timings.image_delay
        image.status = "saving" if delay > 0 else "active"
        image.active_at = time.monotonic() + delay
        image.updated = time.time()

    def upload(self, req: Request) -> Response:
        with self.state.lock:
            image = self.find(req.params["id"])
            if image.status != "queued":
                raise ApiError(409, "Conflict", f"Image status transition from {image.status} to saving "
                                                "is not allowed")
            self._store(image, req.body)
        return Response(204)

    def stage(self, req: Request) -> Response:
        with self.state.lock:
            image = self.find(req.params["id"])
            if image.status != "queued":
                raise ApiError(409, "Conflict", f"Image status transition from {image.status} to uploading "
                                                "is not allowed")
            image.staged, image.status = req.body, "uploading"
        return Response(204)

    def import_image(self, req: Request) -> Response:
        method = (req.json().get("method") or {})
        name = method.get("name")
        with self.state.lock:
            image = self.find(req.params["id"])
            if name == "glance-direct":
                if image.staged is None:
                    raise ApiError(409, "Conflict", "Image needs to be staged before 'glance-direct' "
                                                    "method can be used")
                data, image.staged = image.staged, None
            elif name == "web-download":
                data = _read_local_uri(str(method.get("uri", "")))
            else:
                raise ApiError(400, "Bad Request", f"Import method {name} is not supported: use one of "
                                                   f"{', '.join(IMPORT_METHODS)}")
            self._store(image, data)
        return Response(202, b"")

    def add_tag(self, req: Request) -> Response:
        with self.state.lock:
            image = self.find(req.params["id"])
            if req.params["tag"] not in image.tags:
                image.tags.append(req.params["tag"])
        return Response(204)

    def remove_tag(self, req: Request) -> Response:
        with self.state.lock:
            image = self.find(req.params["id"])
            if req.params["tag"] not in image.tags:
                raise ApiError(404, "Not Found", f"Tag {req.params['tag']} not found")
            image.tags.remove(req.params["tag"])
        return Response(204)


def _field(image: Image, key: str) -> Any:
    return getattr(image, key)


def _in_values(value: str) -> list[str]:
    """Glance's 'in:' operator: name=in:a,b lists several accepted values."""
    if value.startswith("in:"):
        return [v.strip().strip('"') for v in value[3:].split(",")]
    return [value]


def _apply_fields(image: Image, spec: JSON) -> None:
    for key, value in spec.items():
        if key == "id":
            continue
        if key in ("min_disk", "min_ram"):
            setattr(image, key, int(value or 0))
        elif key == "protected":
            image.protected = bool(value)
        elif key == "tags":
            image.tags = [str(t) for t in value or []]
        elif key in CORE:
            setattr(image, key, value)
        else:
            image.properties[key] = value


def _read_local_uri(uri: str) -> bytes:
    # Only file:// URIs: the simulator never reaches outside this machine.
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "file":
        raise ApiError(400, "Bad Request", f"URI {uri} is not allowed here: the simulator imports only "
                                           "file:// URIs of local files")
    try:
        with open(urllib.parse.unquote(parsed.path), "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ApiError(400, "Bad Request", f"Cannot read {uri}: {exc.strerror}") from exc
