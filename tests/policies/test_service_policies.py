"""Lifecycle policy through the DSW service against a real hub, real instances: the
workspace's idle bound (owners/admins only, within the platform's bound), scheduled stops
(own instance; ops of its own workspace on any; nobody else), and why each instance stopped
as the workspace's instance list shows it. Users start with ``sp-``."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import requests

from tests.integration.conftest import cleanup_engine, engine, engine_url, make_catalog  # noqa: F401
from tests.integration.hubproc import Hub

pytestmark = pytest.mark.integration
WS, OTHER = "spws", "spother"


@pytest.fixture(scope="module")
def hub(tmp_path_factory, engine, engine_url):  # noqa: F811
    tmp = tmp_path_factory.mktemp("policies")
    cleanup_engine(engine, "sp-")
    catalog = make_catalog(tmp, platform_admins=["sp-root"], workspaces=[
        {"id": WS, "members": {"sp-own": "owner", "sp-dev": "developer", "sp-ops": "ops", "sp-vis": "visitor",
                                       "sp-q": "developer"},
         "resource_groups": ["cpu"]},
        {"id": OTHER, "members": {"sp-x": "owner"}, "resource_groups": ["cpu"]}])
    h = Hub(tmp / "state", catalog, engine_url, extra_env={"DSW_SCHEDULE_SECONDS": "1", "DSW_RECONCILE_SECONDS": "2"})
    h.start()
    h.tokens = {u: h.user_token(u) for u in ("sp-own", "sp-dev", "sp-ops", "sp-vis", "sp-x", "sp-root")}
    h.wait_service()
    yield h
    h.stop()
    cleanup_engine(engine, "sp-")


def svc(h, user, method, path, **kw):
    return requests.request(method, f"{h.url}/services/dsw/api/v1{path}",
                            headers={"Authorization": f"token {h.tokens[user]}"}, timeout=60, **kw)


def listed(h, user, owner, server):
    r = svc(h, user, "GET", f"/workspaces/{WS}/instances")
    assert r.status_code == 200, r.text
    return next((i for i in r.json() if i["user"] == owner and i["server"] == server), None)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_workspace_idle_bound_is_set_by_owners_within_the_platforms(hub):
    for who in ("sp-dev", "sp-ops", "sp-vis", "sp-x"):  # not owners/admins of spws
        r = svc(hub, who, "PUT", f"/workspaces/{WS}/policy", json={"idle_max_minutes": 1})
        assert r.status_code in (403, 404), (who, r.status_code, r.text)
    assert svc(hub, "sp-own", "GET", f"/workspaces/{WS}/policy").json()["idle_max_minutes"] is None
    r = svc(hub, "sp-own", "PUT", f"/workspaces/{WS}/policy", json={"idle_max_minutes": 100000})
    assert r.status_code == 400 and "idle_max_minutes" in r.text, r.text
    assert svc(hub, "sp-own", "GET", f"/workspaces/{WS}/policy").json()["idle_max_minutes"] is None  # unchanged
    r = svc(hub, "sp-own", "PUT", f"/workspaces/{WS}/policy", json={"idle_max_minutes": 30})
    assert r.status_code == 200 and r.json()["idle_max_minutes"] == 30, r.text
    # a member's spawn above the new bound: 400 naming the field, nothing left behind
    r = hub.api("POST", "/users/sp-dev/servers/toolong", json={"workspace": WS, "kind": "terminal", "idle_minutes": 45})
    assert r.status_code == 400 and "idle_minutes" in r.json()["message"], r.text
    assert "toolong" not in (hub.api("GET", "/users/sp-dev").json().get("servers") or {})
    r = hub.spawn("sp-dev", "bounded", {"workspace": WS, "kind": "terminal", "idle_minutes": 20})
    assert r.status_code in (201, 202), r.text
    assert listed(hub, "sp-vis", "sp-dev", "bounded")["idle_minutes"] == 20  # a visitor sees the policy
    svc(hub, "sp-own", "PUT", f"/workspaces/{WS}/policy", json={"idle_max_minutes": None})
    hub.stop_server("sp-dev", "bounded")
    last = listed(hub, "sp-own", "sp-dev", "bounded")["last_stop"]
    assert last["reason"] == "user" and last["by"] == "sp-dev", last


def test_scheduled_stops_obey_roles_and_fire(hub):
    assert hub.spawn("sp-dev", "sched", {"workspace": WS, "kind": "terminal"}).status_code in (201, 202)
    path = f"/workspaces/{WS}/instances/sp-dev/schedule?server=sched"
    for who in ("sp-vis", "sp-x"):  # a visitor of the workspace; the owner of another workspace
        r = svc(hub, who, "PUT", path, json={"stop_in_hours": 1})
        assert r.status_code in (403, 404), (who, r.text)
    r = svc(hub, "sp-x", "PUT", f"/workspaces/{OTHER}/instances/sp-dev/schedule?server=sched", json={"stop_in_hours": 1})
    assert r.status_code in (403, 404), r.text  # its own workspace in the URL does not reach spws
    assert listed(hub, "sp-own", "sp-dev", "sched")["scheduled_stop"] is None  # nothing changed
    r = svc(hub, "sp-dev", "PUT", path, json={"stop_in_hours": 0})
    assert r.status_code == 400 and "stop_in_hours" in r.text, r.text
    r = svc(hub, "sp-dev", "PUT", path, json={"stop_in_hours": 5})
    assert r.status_code == 200 and r.json()["scheduled_stop"]["by"] == "sp-dev", r.text
    assert svc(hub, "sp-dev", "DELETE", path).status_code == 200
    assert listed(hub, "sp-own", "sp-dev", "sched")["scheduled_stop"] is None
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=4)).isoformat()
    r = svc(hub, "sp-ops", "PUT", path, json={"stop_at": soon})  # ops of the instance's workspace
    assert r.status_code == 200 and r.json()["scheduled_stop"]["by"] == "sp-ops", r.text
    wait_for(lambda: not (hub.server_model("sp-dev", "sched") or {}).get("ready"), 60, "the scheduled stop")
    hub.wait_stopped("sp-dev", "sched")
    last = wait_for(lambda: listed(hub, "sp-own", "sp-dev", "sched")["last_stop"], 30, "the reason recorded")
    assert last["reason"] == "schedule" and last["by"] == "sp-ops", last


def test_an_ops_stop_is_named(hub):
    assert hub.spawn("sp-dev", "opsd", {"workspace": WS, "kind": "terminal"}).status_code in (201, 202)
    r = svc(hub, "sp-ops", "POST", f"/workspaces/{WS}/instances/sp-dev/stop?server=opsd")
    assert r.status_code in (200, 202), r.text
    hub.wait_stopped("sp-dev", "opsd")
    last = wait_for(lambda: listed(hub, "sp-own", "sp-dev", "opsd")["last_stop"], 30, "the reason recorded")
    assert last["reason"] == "ops" and last["by"] == "sp-ops", last


def test_a_scheduled_stop_fires_after_a_hub_restart(hub):
    """The time is in the state database, not in a process: the hub (and the DSW service it
    runs) is stopped before the time comes and started again after it; the instance, still
    running meanwhile, is stopped by the schedule and says so."""
    assert hub.spawn("sp-dev", "later", {"workspace": WS, "kind": "terminal"}).status_code in (201, 202)
    when = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=6)).isoformat()
    r = svc(hub, "sp-dev", "PUT", f"/workspaces/{WS}/instances/sp-dev/schedule?server=later", json={"stop_at": when})
    assert r.status_code == 200, r.text
    hub.stop()
    time.sleep(7)  # the time passes while nothing runs but the instance
    hub.start()
    hub.wait_service()
    wait_for(lambda: not (hub.server_model("sp-dev", "later") or {}).get("ready"), 60, "the scheduled stop")
    hub.wait_stopped("sp-dev", "later")
    last = wait_for(lambda: listed(hub, "sp-own", "sp-dev", "later")["last_stop"], 30, "the reason recorded")
    assert last["reason"] == "schedule" and last["by"] == "sp-dev", last


def test_an_instance_found_running_over_quota_is_stopped_with_reason_quota(hub):
    """The reconcile finds two instances running without their reservations (lost, as after a
    state database restore) while the workspace's allocation now holds only one: the first it
    meets is admitted again, the other is stopped, named 'quota' by 'reconcile', and audited."""
    from sqlalchemy import delete, select

    from spawner_ext.catalog.db import Reservation, sessions

    db = sessions(f"sqlite:///{hub.state}/dsw.sqlite")
    for name in ("q1", "q2"):
        assert hub.spawn("sp-q", name, {"workspace": WS, "kind": "terminal", "instance_type": "half"}
                         ).status_code in (201, 202)
    with db() as s, s.begin():
        s.execute(delete(Reservation).where(Reservation.user == "sp-q"))
    r = svc(hub, "sp-root", "PUT", f"/allocations/cpu/{WS}", json={"cpu": 0.5, "memory": "1Gi", "gpu": 0})
    assert r.status_code == 200, r.text
    try:
        stopped = wait_for(lambda: [n for n in ("q1", "q2") if not (hub.server_model("sp-q", n) or {}).get("ready")],
                           60, "one of the two stopped by the reconcile")
        assert len(stopped) == 1, stopped
        kept = "q2" if stopped == ["q1"] else "q1"
        last = wait_for(lambda: (listed(hub, "sp-own", "sp-q", stopped[0]) or {}).get("last_stop"), 30,
                        "the stop recorded")
        assert last["reason"] == "quota" and last["by"] == "reconcile", last
        with db() as s:  # the other one runs with a reservation again
            held = {(r.user, r.server) for r in s.scalars(select(Reservation))}
        assert ("sp-q", kept) in held and ("sp-q", stopped[0]) not in held, held
        assert (hub.server_model("sp-q", kept) or {}).get("ready")
        audit = svc(hub, "sp-root", "GET", "/audit", params={"limit": 50}).json()
        assert any(e["action"] == "stop-quota" and e["target"] == f"sp-q/{stopped[0]}" for e in audit), audit[:5]
    finally:
        svc(hub, "sp-root", "DELETE", f"/allocations/cpu/{WS}")
        for name in ("q1", "q2"):
            hub.api("DELETE", f"/users/sp-q/servers/{name}", json={"remove": True})
