"""Storage on Kubernetes, against the emulator and a real S3 server (SeaweedFS, the storage
tests' session fixture): NAS as nfs volumes, OSS as CSI volumes whose keys stay in the entry's
Secret; the hub reads that Secret through the API and checks access before creating anything."""

from __future__ import annotations

import base64
import copy
import json

import pytest
import yaml
from tornado import web

from tests.storage.conftest import BUCKET, READONLY_BUCKET, s3  # noqa: F401 - the SeaweedFS fixture

from .conftest import KUBE_CATALOG, live_objects
from .test_lifecycle import start_with_progress
from .test_quota import reservations
from .validation import assert_valid

NS = "dsw-vision"


@pytest.fixture
def storage_catalog(s3, tmp_path):  # noqa: F811
    data = copy.deepcopy(KUBE_CATALOG)
    data["storage"] = [
        {"id": "vision-nas", "workspaces": ["vision"], "mount_path": "/mnt/nas", "access": "rw",
         "nas": {"nfs": {"server": "nas.example.com", "path": "/exports/teams"}, "sub_path_template": "{workspace}"}},
        {"id": "local-nas", "workspaces": ["vision"], "mount_path": "/mnt/local", "access": "ro",
         "nas": {"host_path": "/srv/nas/teams"}},
        {"id": "data", "workspaces": ["vision"], "mount_path": "/mnt/data", "access": "rw",
         "oss": {"endpoint": s3.endpoint, "bucket": BUCKET, "region": "eu-central-1",
                 "credentials": {"secret": "dsw-oss-data"}}},
        {"id": "shared", "workspaces": ["*"], "mount_path": "/mnt/shared", "access": "ro",
         "oss": {"endpoint": s3.endpoint, "bucket": READONLY_BUCKET, "prefix": "shared",
                 "credentials": {"secret": "dsw-oss-shared", "env": "DSW_OSS_SHARED"}}},
    ]
    path = tmp_path / "storage-catalog.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


async def put_secret(emulator, name: str, keys: tuple[str, str], namespace: str = NS) -> None:
    """What the platform team does: the entry's Secret in the workspace namespace."""
    enc = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": name, "namespace": namespace},
            "data": {"accessKeyID": enc(keys[0]), "secretAccessKey": enc(keys[1])}}
    async with emulator.post(f"/api/v1/namespaces/{namespace}/secrets", json=body) as resp:
        assert resp.status < 300, await resp.text()


def nothing_created(emulator) -> bool:
    """No namespace, pod, PVC, nor any Secret beyond those the platform made."""
    return (emulator.namespaces == {} and live_objects(emulator, "pods") == []
            and live_objects(emulator, "persistentvolumeclaims") == []
            and {s["metadata"]["name"] for s in live_objects(emulator, "secrets")} <= {"dsw-oss-data",
                                                                                      "dsw-oss-shared"})


MOUNTS = [{"storage": "vision-nas"}, {"storage": "data"}, {"storage": "shared"}]


async def test_nas_and_oss_mounts_with_the_entry_secrets(make_spawner, kubelet, emulator, storage_catalog, s3,  # noqa: F811
                                                         state_db_url):
    await put_secret(emulator, "dsw-oss-data", s3.member)
    await put_secret(emulator, "dsw-oss-shared", s3.member)
    spawner = make_spawner(user="bob", catalog_path=storage_catalog,
                           options={"workspace": "vision", "mounts": MOUNTS, "kind": "notebook"})
    _, events = await start_with_progress(spawner)
    messages = [e["message"] for e in events]
    for expected in (
        "Checking access to oss://dsw-data for /mnt/data",
        "Checking access to oss://dsw-ro/shared for /mnt/shared",
        "Mounting nfs://nas.example.com:/exports/teams/vision at /mnt/nas (read-write; NFS volume)",
        "Mounting oss://dsw-data at /mnt/data (read-write; CSI driver ru.yandex.s3.csi, Secret dsw-oss-data)",
        "Mounting oss://dsw-ro/shared at /mnt/shared (read-only; CSI driver ru.yandex.s3.csi, Secret dsw-oss-shared)",
    ):
        assert expected in messages, (expected, messages)

    (pod,) = live_objects(emulator, "pods")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["storage-vision-nas"]["nfs"] == {"server": "nas.example.com", "path": "/exports/teams/vision",
                                                    "readOnly": False}
    data = volumes["storage-data"]["csi"]
    assert data["nodePublishSecretRef"] == {"name": "dsw-oss-data"}
    assert data["volumeAttributes"] == {"mounter": "geesefs", "bucket": BUCKET, "endpoint": s3.endpoint,
                                        "region": "eu-central-1"}
    shared = volumes["storage-shared"]["csi"]
    assert shared["readOnly"] is True and shared["volumeAttributes"]["prefix"] == "shared"
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/mnt/shared"]["readOnly"] and not mounts["/mnt/data"]["readOnly"]
    # the pod as the API stores it validates, volumes included
    assert_valid({k: v for k, v in pod.items() if k != "status"})

    # keys reach neither the pod (env, labels, annotations, anything) nor the spawner state
    text = json.dumps(pod) + json.dumps(spawner.get_state()) + json.dumps(events)
    for secret in (*s3.member, *s3.admin):
        assert secret not in text
    assert "secretAccessKey" not in text and "accessKeyID" not in text
    await spawner.stop()


async def test_wrong_keys_refuse_the_spawn_and_create_nothing(make_spawner, kubelet, emulator, storage_catalog,
                                                              s3, state_db_url):  # noqa: F811
    await put_secret(emulator, "dsw-oss-data", (s3.member[0], "wrong-secret-key"))
    spawner = make_spawner(user="bob", catalog_path=storage_catalog,
                           options={"workspace": "vision", "mounts": [{"storage": "data"}]})
    with pytest.raises(web.HTTPError) as caught:
        await spawner.start()
    assert caught.value.status_code == 400
    message = caught.value.log_message
    assert f"storage 'data' (oss://{BUCKET} at {s3.endpoint})" in message
    assert "secret key does not match" in message or "access denied" in message, message
    assert "wrong-secret-key" not in message
    assert nothing_created(emulator)
    assert reservations(state_db_url) == set()  # the reservation was released


async def test_missing_secret_refuses_the_spawn(make_spawner, kubelet, emulator, storage_catalog):
    spawner = make_spawner(user="bob", catalog_path=storage_catalog,
                           options={"workspace": "vision", "mounts": [{"storage": "shared"}]})
    with pytest.raises(web.HTTPError) as caught:
        await spawner.start()
    assert caught.value.status_code == 400
    assert caught.value.log_message == (
        "storage 'shared': Secret dsw-oss-shared in namespace dsw-vision does not exist (the platform team "
        "creates it with the keys accessKeyID and secretAccessKey)")
    assert nothing_created(emulator)


async def test_host_folder_storage_is_refused_on_kubernetes(make_spawner, kubelet, emulator, storage_catalog):
    spawner = make_spawner(user="bob", catalog_path=storage_catalog,
                           options={"workspace": "vision", "mounts": [{"storage": "local-nas"}]})
    with pytest.raises(web.HTTPError) as caught:
        await spawner.start()
    assert caught.value.status_code == 400
    assert "storage 'local-nas' is a folder on one machine" in caught.value.log_message
    assert "nas.nfs" in caught.value.log_message
    assert nothing_created(emulator)
