"""Reliability fixtures (issue 12): real parts failing under a running DSW Hub.

* ``rhub``: one real hub + configurable-http-proxy on the shared podman engine, with an OSS
  storage entry on ``oss``, shared by the hub-crash, proxy, S3 and secrets tests (one hub start
  instead of four keeps the folder short). The secrets scan runs last (file order) and so reads
  everything the other tests made the hub log and store.
* ``oss``: a SeaweedFS S3 server of its own (the command of tests/storage/conftest.py's ``s3``
  fixture, with that module's helpers) that a test may stop and start again on the same ports
  and data: stopping the session's shared ``s3`` would break every later test using it.
* The engine-restart test runs its own ``podman system service`` (tests/reliability/
  test_engine_restart.py): the shared one at /var/lib/dsw-hub/podman.sock is never restarted.

Users start with ``rl-`` and workspaces with ``rl`` so no other suite's clean-up touches them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from spawner_ext.catalog.db import Reservation, sessions
from spawner_ext.storage import local
from tests.integration.conftest import cleanup_engine, make_catalog
from tests.integration.conftest import engine, engine_url  # noqa: F401  (fixtures)
from tests.integration.hubproc import Hub, free_port
from tests.storage.conftest import BUCKET, S3, weed_command

PREFIX = "rl-"
WS = "rlab"
USERS = {"rl-ann": "owner", "rl-bob": "developer"}
ADMIN = "rl-root"
OSS_ENV = "RL_OSS"  # the catalogue's credentials reference: RL_OSS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY
SMALL = {"workspace": WS, "kind": "terminal", "instance_type": "half"}


class Seaweed:
    """A SeaweedFS S3 server that can be stopped (SIGKILL: a crash) and started again."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.member = ("RLMEMBERKEY", "rl-oss-secret-7f3a9c2e41")
        self.admin = ("RLADMINKEY", "rl-admin-secret-b8d01c")
        (tmp / "identities.json").write_text(json.dumps({"identities": [
            {"name": "admin", "credentials": [{"accessKey": self.admin[0], "secretKey": self.admin[1]}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "member", "credentials": [{"accessKey": self.member[0], "secretKey": self.member[1]}],
             "actions": [f"Read:{BUCKET}", f"Write:{BUCKET}", f"List:{BUCKET}"]},
        ]}))
        (tmp / "data").mkdir(exist_ok=True)
        self.ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        self.grpc = {name: free_port() for name in self.ports}
        self.s3 = S3(f"http://127.0.0.1:{self.ports['s3']}", self.admin, self.member)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        tmp = self.tmp
        cmd = weed_command(tmp / "data", tmp / "identities.json", self.ports, self.grpc)
        log = open(tmp / "weed.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"weed exited: {(tmp / 'weed.log').read_text()[-2000:]}")
            try:
                client = self.s3.client()
                if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
                    client.create_bucket(Bucket=BUCKET)
                client.put_object(Bucket=BUCKET, Key="rl/ping.txt", Body=b"up\n")  # the filer answers too
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"SeaweedFS did not answer: {(tmp / 'weed.log').read_text()[-2000:]}")
                time.sleep(0.3)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: weed and nothing else
            self.proc.wait()
        self.proc = None

    def down(self) -> bool:
        try:
            requests.get(self.s3.endpoint, timeout=2)
        except requests.ConnectionError:
            return True
        return False


@pytest.fixture(scope="session")
def oss(tmp_path_factory):
    server = Seaweed(tmp_path_factory.mktemp("rl-seaweed"))
    server.start()
    yield server
    server.stop()


def reliability_catalog(tmp: Path, oss_endpoint: str) -> Path:
    return make_catalog(
        tmp, platform_admins=[ADMIN],
        workspaces=[{"id": WS, "members": dict(USERS), "resource_groups": ["cpu"]}],
        storage=[{"id": "rl-data", "workspaces": [WS], "mount_path": "/mnt/rl-data", "access": "rw",
                  "oss": {"endpoint": oss_endpoint, "bucket": BUCKET, "prefix": "rl",
                          "credentials": {"env": OSS_ENV}}}])


def cleanup(engine) -> None:  # noqa: F811
    cleanup_engine(engine, PREFIX)


@pytest.fixture(scope="session")
def rhub(tmp_path_factory, engine, engine_url, oss):  # noqa: F811
    tmp = tmp_path_factory.mktemp("rl-hub")
    cleanup(engine)
    env = {f"{OSS_ENV}_ACCESS_KEY_ID": oss.member[0], f"{OSS_ENV}_SECRET_ACCESS_KEY": oss.member[1],
           # a fixed service port, as in a deployment: a restarted hub's service takes it over
           "DSW_SERVICE_PORT": str(free_port()), "DSW_RECONCILE_SECONDS": "2", "DSW_POLL_INTERVAL": "2"}
    hub = Hub(tmp / "state", reliability_catalog(tmp, oss.s3.endpoint), engine_url, extra_env=env)
    hub.start()
    hub.tokens = {u: hub.user_token(u) for u in (*USERS, ADMIN)}
    hub.wait_service()
    yield hub
    for user in USERS:
        for name, s in (hub.api("GET", f"/users/{user}").json().get("servers") or {}).items():
            if s.get("ready") or s.get("pending"):
                try:
                    hub.stop_server(user, name)
                except Exception:
                    pass
    hub.stop()
    cleanup(engine)
    layout = local.Layout.under(hub.state)
    local.sweep(layout, running=())
    local.release_root(layout)


@pytest.fixture(scope="session")
def instances(rhub, engine):  # noqa: F811
    """Two running instances: rl-ann's mounts the OSS entry (keys in use), rl-bob's does not."""
    ensure_running(rhub, "rl-ann", "a1", {**SMALL, "mounts": [{"storage": "rl-data"}]})
    ensure_running(rhub, "rl-bob", "b1", SMALL)
    return [("rl-ann", "a1"), ("rl-bob", "b1")]


def ensure_running(hub: Hub, user: str, server: str, options: dict) -> None:
    model = hub.server_model(user, server)
    if model and model.get("ready"):
        return
    r = hub.spawn(user, server, options)
    assert r.status_code in (201, 202), r.text


# --- what a user, the engine and the state database say ----------------------------------------
def via_proxy(hub: Hub, user: str, server: str, path: str = "/api/status") -> requests.Response:
    """The member's own request to their instance through configurable-http-proxy."""
    return requests.get(f"{hub.url}/user/{user}/{server}{path}", timeout=10, allow_redirects=False,
                        headers={"Authorization": f"token {hub.tokens[user]}"})


def reachable(hub: Hub, user: str, server: str) -> bool:
    try:
        return via_proxy(hub, user, server).status_code == 200
    except requests.RequestException:
        return False


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper has exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children(pid: int) -> dict[int, str]:
    """Live child processes of ``pid``: their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def wait_for(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what} (last: {result!r})")
        time.sleep(0.25)


def engine_running(engine) -> set[tuple[str, str]]:  # noqa: F811
    """(user, server) of the test users' containers that run on the engine."""
    return {(c.labels["dsw/user"], c.labels.get("dsw/server", ""))
            for c in engine.containers.list(filters={"label": "dsw/managed=true"})
            if c.labels.get("dsw/user", "").startswith(PREFIX)}


def engine_any(engine, user: str, server: str) -> list:  # noqa: F811
    """Every container (running or not) of one instance."""
    return [c for c in engine.containers.list(all=True, filters={"label": "dsw/managed=true"})
            if c.labels.get("dsw/user") == user and c.labels.get("dsw/server", "") == server]


def hub_active(hub: Hub) -> dict[tuple[str, str], dict]:
    """(user, server) the hub lists as ready or pending, with their models."""
    out = {}
    for user in USERS:
        for name, s in (hub.api("GET", f"/users/{user}").json().get("servers") or {}).items():
            if s.get("ready") or s.get("pending"):
                out[(user, name)] = s
    return out


def reservations(hub: Hub) -> set[tuple[str, str]]:
    """The quota reservations held in the DSW state database."""
    with sessions(f"sqlite:///{hub.state}/dsw.sqlite")() as s:
        return {(r.user, r.server) for r in s.scalars(select(Reservation))}


def svc(hub: Hub, user: str, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, f"{hub.url}/services/dsw/api/v1{path}", timeout=60,
                            headers={"Authorization": f"token {hub.tokens[user]}"}, **kw)


def workspace_usage(hub: Hub) -> dict:
    """What the DSW service's allocations endpoint says the workspace uses in group cpu."""
    groups = svc(hub, ADMIN, "GET", "/allocations").json()
    group = next(g for g in groups if g["id"] == "cpu")
    return next(w["used"] for w in group["workspaces"] if w["workspace"] == WS)
