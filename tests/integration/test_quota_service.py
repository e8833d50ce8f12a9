"""Allocations and quotas through the real hub: concurrent spawns never exceed a quota,
usage is released on stop and on a failed spawn, and bad input changes nothing."""

from __future__ import annotations

import concurrent.futures as cf
import time

import pytest
import requests

from spawner_ext import naming

from .conftest import cleanup_engine, make_catalog, managed_image
from .hubproc import Hub

pytestmark = pytest.mark.integration
WS = "qvision"


@pytest.fixture(scope="module")
def qhub(tmp_path_factory, engine, engine_url):
    tmp = tmp_path_factory.mktemp("quota")
    cleanup_engine(engine, "q-")
    catalog = make_catalog(
        tmp, platform_admins=["q-root"],
        workspaces=[
            {"id": WS, "members": {"q-alice": "owner", "q-bob": "developer"}, "resource_groups": ["gpu"],
             "registry_allowlist": ["localhost/dsw"], "quotas": {"gpu": {"cpu": 16, "memory": "16Gi", "gpu": 4}}},
            {"id": "qnlp", "members": {"q-nina": "owner"}, "resource_groups": ["gpu"]},
        ],
        instance_types=[{"id": "gpu-1", "cpu": "250m", "memory": "512Mi", "gpu": 1, "gpu_type": "test-gpu"}],
        resource_groups=[{"id": "gpu", "kind": "dedicated", "capacity": {"cpu": 32, "memory": "32Gi", "gpu": 8}}],
    )
    # No GPU on these machines: GPUs are counted by the quota but not requested from the engine.
    h = Hub(tmp / "state", catalog, engine_url, extra_env={"DSW_ATTACH_GPUS": "0", "DSW_SERVER_LIMIT": "0",
                                                         "DSW_RECONCILE_SECONDS": "1"})
    h.start()
    h.tokens = {u: h.user_token(u) for u in ("q-alice", "q-bob", "q-root", "q-nina")}
    h.wait_service()
    yield h
    h.stop()
    cleanup_engine(engine, "q-")


def svc(h, user, method, path, **kw):
    return requests.request(method, f"{h.url}/services/dsw/api/v1{path}",
                            headers={"Authorization": f"token {h.tokens[user]}"}, timeout=60, **kw)


def gpu_used(h) -> int:
    groups = svc(h, "q-root", "GET", f"/workspaces/{WS}").json()["resource_groups"]
    return next(g for g in groups if g["id"] == "gpu")["used"]["gpu"]


def test_twenty_concurrent_spawns_against_four_gpus(qhub, engine):
    def spawn(i):
        return qhub.api("POST", f"/users/q-alice/servers/g{i}", json={"workspace": WS, "kind": "terminal"},
                        timeout=180)

    with cf.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(spawn, range(20)))
    ok = [i for i, r in enumerate(results) if r.status_code in (201, 202)]
    refused = [r for r in results if r.status_code == 403]
    assert len(ok) == 4 and len(refused) == 16, [(r.status_code, r.text[:120]) for r in results]
    assert any("workspace qvision: 4 of 4 GPUs in use in group gpu; this instance asks for 1" in r.json()["message"]
               for r in refused)
    for i in ok:
        qhub.wait_ready("q-alice", f"g{i}")
    running = engine.containers.list(filters={"label": ["dsw/user=q-alice"]})
    assert len(running) == 4
    assert gpu_used(qhub) == 4
    # release on stop: one stops, one more fits
    qhub.stop_server("q-alice", f"g{ok[0]}")
    assert gpu_used(qhub) == 3
    r = qhub.spawn("q-alice", "after-stop", {"workspace": WS, "kind": "terminal"})
    assert r.status_code in (201, 202), r.text
    assert gpu_used(qhub) == 4
    for name in [f"g{i}" for i in ok[1:]] + ["after-stop"]:
        qhub.stop_server("q-alice", name)
    assert gpu_used(qhub) == 0


def test_failed_spawn_releases_its_reservation(qhub, engine):
    before = gpu_used(qhub)
    r = qhub.api("POST", "/users/q-alice/servers/broken", timeout=120,
                 json={"workspace": WS, "image_ref": "localhost/dsw/does-not-exist:1"})
    assert r.status_code >= 400 and "could not be pulled" in r.text
    assert gpu_used(qhub) == before
    assert not engine.containers.list(all=True, filters={"name": naming.container_name("q-alice", "broken")})


def test_allocation_over_capacity_and_member_caps(qhub):
    # qnlp asks for 5 of the 8 GPUs while qvision holds 4: refused, nothing changes
    r = svc(qhub, "q-root", "PUT", "/allocations/gpu/qnlp", json={"cpu": 1, "memory": "1Gi", "gpu": 5})
    assert r.status_code == 409 and "exceed its capacity" in r.json()["detail"]
    listing = svc(qhub, "q-root", "GET", "/allocations").json()
    assert not [w for w in listing[0]["workspaces"] if w["workspace"] == "qnlp" and w["quota"]]
    assert svc(qhub, "q-root", "PUT", "/allocations/gpu/qnlp", json={"cpu": 1, "memory": "1Gi", "gpu": 4}).status_code == 200
    # a member cap of 1 GPU for q-bob: the second instance is refused with the member's numbers
    assert svc(qhub, "q-alice", "PUT", f"/workspaces/{WS}/members/q-bob/quotas/gpu",
               json={"cpu": 4, "memory": "4Gi", "gpu": 1}).status_code == 200
    assert qhub.spawn("q-bob", "one", {"workspace": WS, "kind": "terminal"}).status_code in (201, 202)
    two = qhub.api("POST", "/users/q-bob/servers/two", json={"workspace": WS, "kind": "terminal"})
    assert two.status_code == 403 and "member q-bob in workspace qvision: 1 of 1 GPUs in use" in two.json()["message"]
    qhub.stop_server("q-bob", "one")


BAD = [
    ("PUT", "/allocations/gpu/ghost", {"cpu": 1, "memory": "1Gi", "gpu": 1}, 404, "unknown workspace 'ghost'"),
    ("PUT", "/allocations/nogroup/qvision", {"cpu": 1, "memory": "1Gi", "gpu": 1}, 404, "unknown resource group"),
    ("PUT", "/allocations/gpu/qvision", {"cpu": -1, "memory": "1Gi", "gpu": 1}, 400, "cpu"),
    ("PUT", "/allocations/gpu/qvision", {"cpu": 1, "memory": "1Gi", "gpu": -2}, 400, "gpu"),
    ("PUT", "/allocations/gpu/qvision", {"cpu": "4 cores", "memory": "1Gi", "gpu": 1}, 400, "not a quantity"),
    ("PUT", "/allocations/gpu/qvision", {"cpu": 10**9, "memory": "1Gi", "gpu": 1}, 400, "larger than any machine"),
    ("PUT", "/allocations/gpu/qvision", {"cpu": 1, "memory": "1Gi", "gpu": 1000}, 409, "capacity"),
    ("PUT", "/allocations/gpu/qvision", {"cpu": 1, "memory": "1Gi", "gpu": 1, "tpu": 3}, 400, "tpu"),
    ("PUT", "/allocations/gpu/qvision", [1, 2], 400, "valid dictionary"),
    ("PUT", "/workspaces/qvision/members/q-bob", {"role": "king"}, 400, "role"),
    ("PUT", "/workspaces/qvision/members/Bad%20Name", {"role": "developer"}, 400, "member name"),
    ("PUT", "/workspaces/ghost/members/q-bob", {"role": "developer"}, 404, "unknown workspace"),
    ("DELETE", "/workspaces/qvision/members/nobody", None, 404, "not a member"),
    ("PUT", "/workspaces/qvision/members/q-bob/quotas/gpu", {"cpu": 1, "memory": "1Gi", "gpu": 99}, 409, "exceeds"),
    ("PUT", "/workspaces/qvision/members/q-zed/quotas/gpu", {"cpu": 1, "memory": "1Gi", "gpu": 1}, 404, "not a member"),
    ("PUT", "/workspaces/qvision/members/q-bob/quotas/cpu", {"cpu": 1, "memory": "1Gi", "gpu": 0}, 404, "no resource group"),
    ("GET", "/audit?limit=-5", None, 400, "limit"),
]


@pytest.mark.parametrize("method,path,body,status,text", BAD, ids=[f"{b[0]} {b[1]} {i}" for i, b in enumerate(BAD)])
def test_bad_input_is_refused_and_changes_nothing(qhub, method, path, body, status, text):
    before = (svc(qhub, "q-root", "GET", "/allocations").json(), svc(qhub, "q-root", "GET", f"/workspaces/{WS}").json())
    r = svc(qhub, "q-root", method, path, json=body) if body is not None else svc(qhub, "q-root", method, path)
    assert r.status_code == status, r.text
    assert text in r.json()["detail"]
    after = (svc(qhub, "q-root", "GET", "/allocations").json(), svc(qhub, "q-root", "GET", f"/workspaces/{WS}").json())
    assert after == before


def test_malformed_json(qhub):
    r = requests.put(f"{qhub.url}/services/dsw/api/v1/allocations/gpu/qvision", data="{not json",
                     headers={"Authorization": f"token {qhub.tokens['q-root']}", "Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["detail"]


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_json_body_whatever_the_content_type_says(qhub, content_type):
    """Issue 13: `curl -d '{...}'` sends application/x-www-form-urlencoded; the API reads JSON
    anyway, as JupyterHub's REST API does."""
    headers = {"Authorization": f"token {qhub.tokens['q-root']}"}
    if content_type:
        headers["Content-Type"] = content_type
    r = requests.put(f"{qhub.url}/services/dsw/api/v1/allocations/gpu/qnlp", headers=headers, timeout=60,
                     data='{"cpu": 2, "memory": "2Gi", "gpu": 1}')
    assert r.status_code == 200, r.text
    listing = svc(qhub, "q-root", "GET", "/allocations").json()
    [row] = [w for w in listing[0]["workspaces"] if w["workspace"] == "qnlp"]
    assert row["quota"] == {"cpu": 2.0, "memory": 2 * 2**30, "gpu": 1}


@pytest.mark.parametrize("body", ["cpu=2&memory=2Gi&gpu=1", "role=owner", ""])
def test_a_body_that_is_not_json_is_refused_saying_what_was_expected(qhub, body):
    before = svc(qhub, "q-root", "GET", "/allocations").json()
    r = requests.put(f"{qhub.url}/services/dsw/api/v1/allocations/gpu/qnlp", data=body, timeout=60,
                     headers={"Authorization": f"token {qhub.tokens['q-root']}",
                              "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert ("must be JSON" in detail) if body else ("body: Field required" in detail), detail
    assert svc(qhub, "q-root", "GET", "/allocations").json() == before


def test_reconcile_releases_reservations_of_servers_that_do_not_run(qhub):
    """Issue 8 part 4: a reservation whose server the hub reports neither ready nor pending
    (here one left behind by a lost release) is deleted within one reconcile interval (1 s
    here), logged and audited; a running instance keeps its reservation."""
    from spawner_ext.catalog.db import Reservation, sessions

    assert qhub.spawn("q-bob", "kept", {"workspace": WS, "kind": "terminal"}).status_code in (201, 202)
    before = gpu_used(qhub)
    db = sessions(f"sqlite:///{qhub.state}/dsw.sqlite")
    with db() as s, s.begin():
        s.add(Reservation(workspace=WS, user="q-alice", server="ghost", resource_group="gpu", kind="terminal",
                          instance_type="gpu-1", cpu=0.25, memory=512 * 2**20, gpu=1))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = {(r["user"], r["server"]) for r in svc(qhub, "q-root", "GET", f"/workspaces/{WS}/instances").json()}
        if ("q-alice", "ghost") not in rows:
            break
        time.sleep(0.2)
    assert ("q-alice", "ghost") not in rows and ("q-bob", "kept") in rows, rows
    assert gpu_used(qhub) == before
    audit = svc(qhub, "q-root", "GET", "/audit").json()
    assert [a for a in audit if a["actor"] == "reconcile" and a["action"] == "release-reservation"
            and a["target"] == "q-alice/ghost" and "neither running nor starting" in a["detail"]]
    assert "released the quota reservation of q-alice/ghost in qvision" in qhub.log.read_text()
    qhub.stop_server("q-bob", "kept")
    assert gpu_used(qhub) == before - 1


def test_openapi_document_lists_the_api(qhub):
    doc = requests.get(f"{qhub.url}/services/dsw/api/v1/openapi.json", timeout=30).json()
    paths = doc["paths"]
    assert "/services/dsw/api/v1/allocations/{group}/{ws}" in paths
    assert "/services/dsw/api/v1/workspaces/{ws}/members/{member}" in paths
