"""Cinder v3, the part the driver reads: version documents and the project's absolute limits.

The used figures are the volumes of servers booted from volume (Nova creates
them; there is no volume API here beyond the limits). With
`SimConfig.block_storage` off the catalog has no block-storage service and
these routes are not served, as on a cloud without Cinder.
"""

from __future__ import annotations

from .httpkit import JSON, ApiError, Request, Response, Router
from .state import CloudState

MAX_MICROVERSION = "3.70"
MIN_MICROVERSION = "3.0"
PATH = "/volume/v3"


class CinderApi:
    def __init__(self, state: CloudState) -> None:
        self.state = state
        self.config = state.config

    def register(self, router: Router) -> None:
        if not self.config.block_storage:
            return
        for path in ("/volume", "/volume/"):
            router.add("GET", path, self.versions, "volume", public=True)
        router.add("GET", PATH, self.version, "volume", public=True)
        # The catalog's URL holds the project id, as most clouds register it; from 3.67
        # on Cinder also serves the same paths without it.
        router.add("GET", f"{PATH}/{{project}}", self.version, "volume", public=True)
        router.add("GET", f"{PATH}/{{project}}/limits", self.limits, "volume")
        router.add("GET", f"{PATH}/limits", self.limits, "volume")

    def _v3(self, base: str) -> JSON:
        return {"id": "v3.0", "status": "CURRENT", "version": MAX_MICROVERSION,
                "min_version": MIN_MICROVERSION, "updated": "2023-07-17T00:00:00Z",
                "links": [{"rel": "self", "href": f"{base}{PATH}/"}],
                "media-types": [{"base": "application/json",
                                 "type": "application/vnd.openstack.volume+json;version=3"}]}

    def versions(self, req: Request) -> Response:
        return Response(300, {"versions": [self._v3(req.base_url)]})

    def version(self, req: Request) -> Response:
        return Response(200, {"versions": [self._v3(req.base_url)]})

    def limits(self, req: Request) -> Response:
        project = req.params.get("project")
        if project is not None and project != self.state.project_id:
            raise ApiError(403, "forbidden", "Policy doesn't allow limits_extension:used_limits "
                                             "to be performed.")
        quotas = self.config.quotas
        with self.state.lock:
            used = self.state.volume_usage()
        absolute = {
            "maxTotalVolumes": quotas.volumes, "maxTotalVolumeGigabytes": quotas.gigabytes,
            "maxTotalSnapshots": 10, "maxTotalBackups": 10, "maxTotalBackupGigabytes": 1000,
            "totalVolumesUsed": used["volumes"], "totalGigabytesUsed": used["gigabytes"],
            "totalSnapshotsUsed": 0, "totalBackupsUsed": 0, "totalBackupGigabytesUsed": 0,
        }
        return Response(200, {"limits": {"rate": [], "absolute": absolute}})
