"""The builder's OpenStack calls: the image format a cloud takes, upload, delete, list ours.

Each provider gets its own openstacksdk connection. Its request timeout is the
provider's `image-upload-timeout`: an upload is one PUT of the whole file, so a
cloud that stops answering fails the upload after that long instead of holding
the uploader for ever.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import openstack.config
import openstack.connection

from nodepool.config import OpenStackProvider

log = logging.getLogger("nodepool.builder.cloud")

# The metadata every upload carries (Nodepool's keys): leak cleanup matches on them.
TAG_PROVIDER = "nodepool_provider_name"
TAG_BUILD = "nodepool_build_id"
TAG_UPLOAD = "nodepool_upload_id"


def cloud_region(provider: OpenStackProvider) -> Any:
    kwargs = {"region_name": provider.region_name} if provider.region_name else {}
    return openstack.config.OpenStackConfig(app_name="nodepool-builder").get_one(
        cloud=provider.cloud, **kwargs)


def image_format(provider: OpenStackProvider) -> str:
    """What the cloud takes, as Nodepool reads it: clouds.yaml's `image_format` (qcow2 default)."""
    return str(cloud_region(provider).config.get("image_format") or "qcow2")


class ImageCloud:
    """One provider's image service."""

    def __init__(self, provider: OpenStackProvider):
        self.provider = provider
        self._lock = threading.Lock()
        self._conn: openstack.connection.Connection | None = None

    def connection(self) -> openstack.connection.Connection:
        with self._lock:
            if self._conn is None:
                region = cloud_region(self.provider)
                region.config["api_timeout"] = self.provider.image_upload_timeout
                self._conn = openstack.connection.Connection(config=region)
            return self._conn

    def upload(self, name: str, filename: str, disk_format: str, meta: dict[str, str],
               md5: str | None, sha256: str | None, diskimage: str | None = None) -> str:
        """Create the image and PUT the file (openstacksdk's image upload); its id.

        Waits until Glance has it `active` (a `saving` image cannot boot yet), within
        the provider's image-upload-timeout.
        """
        conn = self.connection()
        image = conn.create_image(
            name, filename=filename, disk_format=disk_format, container_format="bare",
            md5=md5, sha256=sha256, wait=True, timeout=self.provider.image_upload_timeout,
            allow_duplicates=True, visibility="private", meta=meta)
        if image is None or image.status != "active":
            status = None if image is None else image.status
            raise RuntimeError(f"image {name} ended {status!r}, not active")
        return image.id

    def delete(self, external_id: str) -> None:
        """Delete an image; one already gone is success."""
        self.connection().image.delete_image(external_id, ignore_missing=True)

    def our_images(self) -> list[tuple[str, str, str, str]]:
        """(image id, name, build id, upload id) of every image tagged with this provider."""
        found = []
        for image in self.connection().image.images():
            props = dict(image.properties or {})
            if props.get(TAG_PROVIDER) != self.provider.name:
                continue
            build_id, upload_id = props.get(TAG_BUILD), props.get(TAG_UPLOAD)
            if build_id and upload_id:
                found.append((image.id, image.name, str(build_id), str(upload_id)))
        return found

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.debug("provider=%s closing the connection failed", self.provider.name,
                          exc_info=True)
