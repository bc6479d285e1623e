"""Regenerate records.json from Nodepool's own record classes (not run by the tests).

    .venv/bin/python tests/data/nodepool-images/generate.py /path/to/nodepool-checkout

It imports Nodepool's `nodepool/zk/zookeeper.py` (ImageBuild, ImageUpload and
the ZooKeeper class's path methods) and replays, step by step, what Nodepool's
builder (`nodepool/builder.py`) and command (`nodepool/cmd/nodepoolcmd.py`)
set on those objects before they store them; each record's bytes are
Nodepool's `serialize()` of it, exactly what `storeBuild`/`storeImageUpload`
write to ZooKeeper. See README.md beside this file.
"""

import json
import sys
import types
from pathlib import Path


def nodepool_zk(checkout: str):
    sys.modules["paramiko"] = types.ModuleType("paramiko")   # imported, unused here
    sys.path.insert(0, checkout)
    from nodepool.zk import zookeeper
    return zookeeper


def main(checkout: str) -> None:
    z = nodepool_zk(checkout)
    zk = object.__new__(z.ZooKeeper)    # only its path methods are used
    image, build_id, provider, upload_id = "ubuntu-noble", "8c5a0f1e2d3b4c5d9e8f7a6b5c4d3e2f", \
        "rax-dfw", "0000000001"
    records = []

    def add(path: str, obj, how: str) -> None:
        records.append({"path": path, "data": obj.serialize().decode("utf8"), "how": how})

    build_path = zk._imageBuildsPath(image) + "/" + build_id
    # builder.py BuildWorker._buildWrapper: the first write of a build.
    b = z.ImageBuild(image)
    b.state = z.BUILDING
    b.builder_id = "3f2a1c9e-7b6d-4e5f-8a9b-0c1d2e3f4a5b"
    b.builder = "nb01.opendev.org"
    b.formats = ["raw", "qcow2", "vhd"]
    add(build_path, b, "builder.py _buildWrapper: state building, storeBuild (new id)")
    # builder.py BuildWorker._buildImage: the record of a build that succeeded.
    b = z.ImageBuild(image)
    b.builder_id = "3f2a1c9e-7b6d-4e5f-8a9b-0c1d2e3f4a5b"
    b.builder = "nb01.opendev.org"
    b.username = "zuul"
    b.python_path = "auto"
    b.shell_type = None
    b.state = z.READY
    b.formats = ["raw", "qcow2", "vhd"]
    add(build_path, b, "builder.py _buildImage: DIB succeeded, state ready")
    ready_build = b
    # builder.py _buildImage: a build that failed (no formats recorded).
    f = z.ImageBuild(image)
    f.builder_id = "3f2a1c9e-7b6d-4e5f-8a9b-0c1d2e3f4a5b"
    f.builder = "nb01.opendev.org"
    f.username = "ubuntu"
    f.python_path = "/usr/bin/python3"
    f.shell_type = "bash"
    f.state = z.FAILED
    add(zk._imageBuildsPath(image) + "/0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e", f,
        "builder.py _buildImage: DIB failed, state failed")
    # nodepoolcmd.py dib_image_delete: getBuild (fromDict), state deleting, storeBuild.
    d = z.ImageBuild.fromDict(json.loads(ready_build.serialize()), image, build_id)
    d.state = z.DELETING
    add(build_path, d, "nodepoolcmd.py dib_image_delete: ready build set deleting")

    upload_path = zk._imageUploadPath(image, build_id, provider) + "/" + upload_id
    # builder.py UploadWorker._checkProviderImageUpload: the first write of an upload.
    u = z.ImageUpload()
    u.state = z.UPLOADING
    u.username = ready_build.username
    u.python_path = ready_build.python_path
    u.shell_type = ready_build.shell_type
    add(upload_path, u, "builder.py _checkProviderImageUpload: state uploading (new sequence id)")
    # builder.py UploadWorker._uploadImage: the upload succeeded.
    u = z.ImageUpload()
    u.state = z.READY
    u.external_id = "9d2e4c1a-5b7f-4e3d-8c6a-1f0e9d8c7b6a"
    u.external_name = "ubuntu-noble-1733140000"
    u.format = "vhd"
    u.username = "zuul"
    u.python_path = "auto"
    u.shell_type = None
    add(upload_path, u, "builder.py _uploadImage: state ready")
    ready_upload = u
    # builder.py _uploadImage: an upload that failed.
    u = z.ImageUpload()
    u.state = z.FAILED
    add(zk._imageUploadPath(image, build_id, "ovh-bhs1") + "/0000000003", u,
        "builder.py _uploadImage: upload failed, state failed")
    # nodepoolcmd.py image_delete: getImageUpload (fromDict), state deleting, storeImageUpload.
    d = z.ImageUpload.fromDict(json.loads(ready_upload.serialize()), build_id, provider,
                               image, upload_id)
    d.state = z.DELETING
    add(upload_path, d, "nodepoolcmd.py image_delete: ready upload set deleting")

    out = Path(__file__).with_name("records.json")
    out.write_text(json.dumps({
        "source": "nodepool/zk/zookeeper.py ImageBuild/ImageUpload serialize(), replaying "
                  "nodepool/builder.py and nodepool/cmd/nodepoolcmd.py; gndrmnn/nodepool "
                  "mirror, commit a0d1eb50",
        "paths": {"build_lock": zk._imageBuildLockPath(image),
                  "build_id_lock": zk._imageBuildIdLockPath(image, build_id),
                  "upload_lock": zk._imageUploadLockPath(image, build_id, provider),
                  "upload_number_lock": zk._imageUploadNumberLockPath(
                      image, build_id, provider, upload_id),
                  "pause": zk._imagePausePath(image),
                  "request_build": zk._imageBuildRequestPath(image)},
        "records": records}, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
