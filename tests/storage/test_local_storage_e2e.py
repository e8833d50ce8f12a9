"""NAS and OSS mounts end to end on one machine: the real hub and proxy, podman, the managed
image, SeaweedFS as the OSS and s3fs on the host. Commands run inside the instance through
the Jupyter server's terminal websocket, as the member would."""

from __future__ import annotations

import json
import stat
import time
import uuid

import pytest
import requests
import websocket

from spawner_ext.local.container import container_name
from spawner_ext.naming import slug
from spawner_ext.storage import local
from spawner_ext.storage.credentials import Keys
from tests.integration.conftest import make_catalog
from tests.integration.conftest import engine, engine_url  # noqa: F401  (fixtures)
from tests.integration.hubproc import Hub

from .conftest import BUCKET, READONLY_BUCKET

pytestmark = pytest.mark.integration
PREFIX = f"e2e-{uuid.uuid4().hex[:6]}"
# Own users and workspace: other suites clean up the t-* users' containers on the shared engine.
USERS = {"st-alice": "owner", "st-bob": "developer"}


def cleanup_engine(client) -> None:
    for c in client.containers.list(all=True, filters={"label": "dsw/managed=true"}):
        if c.labels.get("dsw/user", "") in USERS:
            c.remove(force=True)
    for v in client.volumes.list(filters={"label": "dsw/managed=true"}):
        if v.attrs.get("Labels", {}).get("dsw/user", "") in USERS:
            v.remove(force=True)


@pytest.fixture(scope="module")
def env(tmp_path_factory, engine, engine_url, s3):  # noqa: F811
    tmp = tmp_path_factory.mktemp("storage-hub")
    nas, nas_ro = tmp / "nas", tmp / "nas-ro"
    (nas / "tstore").mkdir(parents=True)
    (nas / "tstore" / "seen.txt").write_text("nas data\n")
    nas_ro.mkdir()
    (nas_ro / "fixed.txt").write_text("fixed\n")
    for d in (nas / "tstore", nas_ro):
        d.chmod(0o777)
    creds = tmp / "shared.creds"
    creds.write_text(f"{s3.member[0]}:{s3.member[1]}\n")
    creds.chmod(0o600)
    oss = lambda bucket, prefix, cred: {"endpoint": s3.endpoint, "bucket": bucket, "prefix": prefix,
                                        "credentials": cred}
    storage = [
        {"id": "data", "workspaces": ["tstore"], "mount_path": "/mnt/data", "access": "rw",
         "oss": oss(BUCKET, PREFIX, {"env": "DSW_TEST_OSS"})},
        {"id": "shared", "workspaces": ["tstore"], "mount_path": "/mnt/shared", "access": "ro",
         "oss": oss(READONLY_BUCKET, "shared", {"file": str(creds)})},
        {"id": "broken", "workspaces": ["tstore"], "mount_path": "/mnt/broken", "access": "rw",
         "oss": oss(BUCKET, "", {"env": "DSW_TEST_BAD"})},
        {"id": "nas", "workspaces": ["tstore"], "mount_path": "/mnt/nas", "access": "rw",
         "nas": {"host_path": str(nas), "sub_path_template": "{workspace}"}},
        {"id": "nas-ro", "workspaces": ["tstore"], "mount_path": "/mnt/nas-ro",
         "nas": {"host_path": str(nas_ro)}},
        {"id": "nfs-only", "workspaces": ["tstore"], "mount_path": "/mnt/nfs",
         "nas": {"nfs": {"server": "nas.example.com", "path": "/exports/x"}}},
    ]
    secrets = {"DSW_TEST_OSS_ACCESS_KEY_ID": s3.member[0], "DSW_TEST_OSS_SECRET_ACCESS_KEY": s3.member[1],
               "DSW_TEST_BAD_ACCESS_KEY_ID": s3.member[0], "DSW_TEST_BAD_SECRET_ACCESS_KEY": "wrong-secret-123"}
    cleanup_engine(engine)
    catalog = make_catalog(tmp, storage=storage, platform_admins=["st-root"], workspaces=[
        {"id": "tstore", "members": dict(USERS), "resource_groups": ["cpu"]}])
    hub = Hub(tmp / "state", catalog, engine_url, extra_env=secrets)
    hub.start()
    yield {"hub": hub, "nas": nas, "nas_ro": nas_ro, "layout": local.Layout.under(tmp / "state"),
           "token": hub.user_token("st-alice")}
    hub.stop()
    cleanup_engine(engine)
    local.sweep(local.Layout.under(tmp / "state"), running=())
    assert local.release_root(local.Layout.under(tmp / "state"))


def sh(env, server: str, command: str, timeout: float = 30) -> tuple[int, str]:
    """Run ``command`` in a terminal of the instance; (exit status, output)."""
    hub, token = env["hub"], env["token"]
    base = f"{hub.url}/user/st-alice/{server}"
    created = requests.post(f"{base}/api/terminals", headers={"Authorization": f"token {token}"}, timeout=30)
    assert created.status_code == 200, created.text
    name = created.json()["name"]
    ws = websocket.create_connection(f"ws://127.0.0.1:{hub.port}/user/st-alice/{server}/terminals/websocket/{name}",
                                     header=[f"Authorization: token {token}"], timeout=timeout)
    try:
        ws.send(json.dumps(["stdin", f"{command}; echo \"__rc=$?=$((40+2))__\"\r"]))
        seen, deadline = "", time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg[0] == "stdout":
                seen += msg[1]
                if "=42__" in seen:
                    rc = int(seen.rsplit("__rc=", 1)[1].split("=", 1)[0])
                    return rc, seen
        raise TimeoutError(seen)
    finally:
        ws.close()
        requests.delete(f"{base}/api/terminals/{name}", headers={"Authorization": f"token {token}"}, timeout=10)


MOUNTS = [{"storage": "data"}, {"storage": "shared"}, {"storage": "nas"},
          {"storage": "nas-ro", "mount_path": "/data/nas-ro"}]


@pytest.fixture(scope="module")
def running(env, engine):  # noqa: F811
    r = env["hub"].spawn("st-alice", "st", {"kind": "terminal", "mounts": MOUNTS})
    assert r.status_code in (201, 202), r.text
    return engine.containers.get(container_name("st-alice", "st"))


def test_oss_write_inside_read_with_boto3_and_back(env, running, s3):
    rc, out = sh(env, "st", "echo written-in-instance > /mnt/data/inside.txt && ls -ln /mnt/data")
    assert rc == 0, out
    got = s3.client().get_object(Bucket=BUCKET, Key=f"{PREFIX}/inside.txt")["Body"].read()
    assert got == b"written-in-instance\n"
    s3.client().put_object(Bucket=BUCKET, Key=f"{PREFIX}/outside.txt", Body=b"from-boto3-42\n")
    rc, out = sh(env, "st", "cat /mnt/data/outside.txt")
    assert rc == 0 and "from-boto3-42" in out, out


def test_read_only_oss_refuses_writes(env, running):
    rc, out = sh(env, "st", "cat /mnt/shared/readme.txt")
    assert rc == 0 and "read only data" in out
    rc, out = sh(env, "st", "touch /mnt/shared/new.txt")
    assert rc != 0 and "Read-only file system" in out, out


def test_nas_host_folder_visible_and_read_only_enforced(env, running):
    rc, out = sh(env, "st", "cat /mnt/nas/seen.txt && echo from-instance > /mnt/nas/made.txt")
    assert rc == 0 and "nas data" in out, out
    assert (env["nas"] / "tstore" / "made.txt").read_text() == "from-instance\n"
    rc, out = sh(env, "st", "cat /data/nas-ro/fixed.txt")
    assert rc == 0 and "fixed" in out
    rc, out = sh(env, "st", "touch /data/nas-ro/x")
    assert rc != 0 and "Read-only file system" in out, out


def test_container_binds_and_no_secret_leaks(env, running, s3):
    mounts = {m["Destination"]: m for m in running.attrs["Mounts"]}
    point = env["layout"].mount_point("st-alice", "st", "data")
    assert mounts["/mnt/data"]["Source"] == str(point) and mounts["/mnt/data"]["RW"]
    assert "rslave" in str(mounts["/mnt/data"].get("Propagation", "")) or "rslave" in str(running.attrs["HostConfig"])
    assert not mounts["/mnt/shared"]["RW"] and not mounts["/data/nas-ro"]["RW"] and mounts["/mnt/nas"]["RW"]
    assert local.mount_points()[str(point)] == "fuse.s3fs"
    creds = env["layout"].creds_file("st-alice", "st", "data")
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    secret = s3.member[1]
    inspected = json.dumps(running.attrs)
    assert secret not in inspected and "wrong-secret-123" not in inspected
    log = env["hub"].log.read_text()
    assert secret not in log and "wrong-secret-123" not in log
    assert f"Mounting oss://{BUCKET}/{PREFIX} at /mnt/data (read-write; s3fs on the host)" in log
    assert "Mounting oss://dsw-ro/shared at /mnt/shared (read-only; s3fs on the host)" in log
    rc, out = sh(env, "st", f"env; cat /proc/mounts; grep -rs {secret[:10]} /mnt/data /home/jovyan | head -1")
    assert secret not in out


def test_stopping_unmounts_and_removes_credentials(env, running, engine):  # noqa: F811
    layout = env["layout"]
    points = [layout.mount_point("st-alice", "st", s) for s in ("data", "shared")]
    creds = [layout.creds_file("st-alice", "st", s) for s in ("data", "shared")]
    env["hub"].stop_server("st-alice", "st")
    assert not any(local.is_mounted(p) or p.exists() for p in points)
    assert not any(c.exists() for c in creds)
    assert not engine.containers.list(all=True, filters={"name": container_name("st-alice", "st")})
    # released once, and the log names what (files by name, never a key)
    log = env["hub"].log.read_text()
    (line,) = [x for x in log.splitlines() if "st-alice:st: stopped: released" in x]
    assert f"container {container_name('st-alice', 'st')} (running)" in line
    assert f"mount {points[0]}" in line and f"credential file {creds[0]}" in line
    assert "not fully released" not in log


@pytest.mark.parametrize("mounts,text", [
    ([{"storage": "data"}, {"storage": "broken"}], "storage 'broken' (oss://dsw-data at http"),
    ([{"storage": "nfs-only"}], "NFS only"),
])
def test_refused_spawn_leaves_nothing(env, engine, mounts, text):  # noqa: F811
    hub, layout = env["hub"], env["layout"]
    # other suites share the engine: compare only what belongs to st-bob
    made = lambda: ({c.name for c in engine.containers.list(all=True, filters={"name": "dsw-st-bob"})},
                    {v.name for v in engine.volumes.list() if "st-bob" in v.name})
    before = made()
    r = hub.api("POST", "/users/st-bob/servers/bad", json={"kind": "notebook", "mounts": mounts})
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert text in message, message
    assert "wrong-secret-123" not in message
    assert made() == before == (set(), set())
    assert not layout.instance_dir("st-bob", "bad").exists()
    assert not (layout.creds / slug("st-bob")).exists()
    assert not [p for p in local.mount_points() if p.startswith(str(layout.root) + "/")]
    # no server record either: refusals never count toward the named-server limit
    servers = hub.api("GET", "/users/st-bob", params={"include_stopped_servers": "1"}).json().get("servers", {})
    assert "bad" not in servers


def test_hub_start_sweeps_what_a_crash_left(env, s3):
    layout, hub = env["layout"], env["hub"]
    from spawner_ext.spec import Mount
    m = Mount(type="oss", source=BUCKET, mount_path="/mnt/x", storage="data", endpoint=s3.endpoint)
    point = local.mount_oss(layout, "st-alice", "crashed", m, Keys(*s3.member))  # as if the hub died mid-start
    assert local.is_mounted(point)
    hub.restart()
    assert not local.is_mounted(point) and not point.exists()
    assert not layout.creds_file("st-alice", "crashed", "data").exists()
    assert "released stale storage" in hub.log.read_text()
