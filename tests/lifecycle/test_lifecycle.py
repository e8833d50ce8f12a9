"""One spawn lifecycle, the same tests on both backends (see conftest.py: the local engine, and
DSWKubeSpawner on the kmock emulator standing in for a Kubernetes API server), each behind a
real JupyterHub and proxy: refusals leave nothing, and every end of an instance releases its
quota reservation and its container or pod."""

from __future__ import annotations

import json

import pytest
import requests

from spawner_ext import quota
from spawner_ext.catalog import load_catalog
from spawner_ext.catalog.db import sessions
from spawner_ext.options import resolve

from .conftest import POLL_INTERVAL, SERVER_LIMIT, wait_for

pytestmark = pytest.mark.integration
USER = "lc-bob"
BAD_KIND = {"kind": "emacs"}
GOOD = {"kind": "notebook", "instance_type": "half"}


def servers(hub, user=USER) -> dict:
    """Every server record the hub has for the user, stopped ones included."""
    r = hub.api("GET", f"/users/{user}", params={"include_stopped_servers": "1"})
    assert r.status_code == 200, r.text
    return r.json().get("servers", {})


def fill_group(backend, count: int) -> None:
    """Reserve ``count`` CPUs of resource group cpu (capacity 8) as other instances would."""
    catalog = load_catalog(backend.hub.catalog)
    for i in range(count):
        quota.admit(sessions(f"sqlite:///{backend.hub.state}/dsw.sqlite"), catalog,
                    resolve(catalog, "lc-ann", f"lc-busy{i}", {"instance_type": "small"}))


def empty_group(backend) -> None:
    for i in range(8):
        quota.release(sessions(f"sqlite:///{backend.hub.state}/dsw.sqlite"), "lc-ann", f"lc-busy{i}")


def test_refused_spawns_leave_no_record_and_no_reservation(backend):
    hub = backend.hub
    r = hub.api("POST", f"/users/{USER}/servers/lc-bad", json=BAD_KIND)
    assert r.status_code == 400 and "kind: unknown kind 'emacs'" in r.json()["message"], r.text
    fill_group(backend, 8)
    try:
        r = hub.api("POST", f"/users/{USER}/servers/lc-full", json=GOOD)
        assert r.status_code == 403, r.text
        assert "resource group cpu: 8 of 8 CPUs in use; this instance asks for 0.5" in r.json()["message"]
    finally:
        empty_group(backend)
    assert "lc-bad" not in servers(hub) and "lc-full" not in servers(hub)
    assert {s for u, s in backend.reservations() if u == USER} == set()
    assert not backend.instance_exists(USER, "lc-bad") and not backend.instance_exists(USER, "lc-full")
    # the name is free again: it can be spawned for real
    r = hub.spawn(USER, "lc-bad", GOOD)
    assert r.status_code in (201, 202), r.text
    hub.api("DELETE", f"/users/{USER}/servers/lc-bad", json={"remove": True})
    wait_for(lambda: "lc-bad" not in servers(hub), 60, "lc-bad removed")


def member_session(hub, user: str) -> tuple[requests.Session, str]:
    """Signed in as a member through the login form, as a browser is."""
    s = hub.login_session(user)  # their own password (per-user sign-in)
    return s, s.cookies.get("_xsrf", path="/hub/")


def test_refused_spawn_form_shows_the_message_and_leaves_no_record(backend):
    hub = backend.hub
    s, xsrf = member_session(hub, USER)
    # (the spawn page posts its form with _xsrf in the query, as here)
    r = s.post(f"{hub.url}/hub/spawn/{USER}/lc-form", params={"_xsrf": xsrf}, data={"kind": "emacs"}, timeout=30,
               allow_redirects=False)
    if r.status_code == 302:
        # JupyterHub waits 1 s for a spawn before it redirects to the spawn-pending page, which
        # then shows the failure (a busy machine can take that long): follow it as a browser does
        pending = f"{hub.url}{r.headers['Location']}"
        wait_for(lambda: s.get(pending, timeout=30).status_code != 200, 60, "the spawn-pending page settles")
        r = s.get(pending, timeout=30)
    assert r.status_code == 400, r.text[-2000:]
    assert "kind: unknown kind &#39;emacs&#39;" in r.text, r.text[-3000:]
    assert "lc-form" not in servers(hub)


def test_a_late_refusal_reaches_the_spawn_pending_page(backend):
    """A refusal that comes after the form has redirected (the OSS check times out) is shown by
    the spawn-pending page's progress stream; then the record and the failed spawner are gone."""
    hub = backend.hub
    s, xsrf = member_session(hub, USER)
    r = s.post(f"{hub.url}/hub/spawn/{USER}/lc-slow", params={"_xsrf": xsrf}, allow_redirects=False, timeout=30,
               data={"kind": "notebook", "instance_type": "half", "mounts": json.dumps([{"storage": "lc-slow"}])})
    assert r.status_code == 302 and f"/hub/spawn-pending/{USER}/lc-slow" in r.headers["Location"], r.text
    events = []
    with s.get(f"{hub.url}/hub/api/users/{USER}/servers/lc-slow/progress", params={"_xsrf": xsrf},
               stream=True, timeout=120) as stream:
        assert stream.status_code == 200, stream.text
        for line in stream.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if events[-1].get("failed") and events[-1]["message"].startswith("Spawn failed"):
                    break
    messages = [e["message"] for e in events]
    assert "Checking access to oss://lc-bucket for /mnt/slow" in messages, messages
    assert events[-1]["failed"], messages
    assert "storage 'lc-slow' (oss://lc-bucket at http://127.0.0.1:" in events[-1]["message"], messages
    assert "cannot reach the storage" in events[-1]["message"], messages
    assert "lc-slow" not in servers(hub)
    assert (USER, "lc-slow") not in backend.reservations()
    # delivered: nothing is kept for it any more
    assert s.get(f"{hub.url}/hub/spawn-pending/{USER}/lc-slow", timeout=30).status_code == 404


def test_ten_refusals_then_a_valid_spawn(backend):
    hub = backend.hub
    for i in range(10):  # more than the named-server limit
        r = hub.api("POST", f"/users/{USER}/servers/lc-try{i}", json=BAD_KIND)
        assert r.status_code == 400, r.text
        assert "unknown kind" in r.json()["message"], r.text  # never "already has the maximum of ..."
    assert not any(name.startswith("lc-try") for name in servers(hub))
    assert SERVER_LIMIT < 10
    r = hub.spawn(USER, "lc-ok", GOOD)
    assert r.status_code in (201, 202), r.text
    assert servers(hub)["lc-ok"]["ready"]
    assert (USER, "lc-ok") in backend.reservations()
    hub.api("DELETE", f"/users/{USER}/servers/lc-ok", json={"remove": True})
    wait_for(lambda: "lc-ok" not in servers(hub), 60, "lc-ok removed")


def test_death_on_its_own_releases_quota_and_instance(backend):
    hub = backend.hub
    r = hub.spawn(USER, "lc-dies", GOOD)
    assert r.status_code in (201, 202), r.text
    assert (USER, "lc-dies") in backend.reservations()
    backend.kill(USER, "lc-dies")
    # Nothing touches the server now: only the hub's poll timer (DSW_POLL_INTERVAL) can notice.
    wait_for(lambda: (USER, "lc-dies") not in backend.reservations(), 5 * POLL_INTERVAL + 10,
             "the reservation of the dead instance released")
    wait_for(lambda: not backend.instance_exists(USER, "lc-dies"), 30, "the dead instance removed")
    model = servers(hub)["lc-dies"]  # the record stays (it ran), stopped
    assert not model["ready"] and not model["pending"]
    assert "lc-dies: server ended: released" in hub.log.read_text()
    reason, by, detail = backend.last_stop(USER, "lc-dies")  # nobody asked: it died, with its exit status
    assert reason == "died" and by == "" and detail.startswith("exit status "), (reason, by, detail)
    # and it starts again
    r = hub.spawn(USER, "lc-dies", GOOD)
    assert r.status_code in (201, 202), r.text
    hub.api("DELETE", f"/users/{USER}/servers/lc-dies", json={"remove": True})
    wait_for(lambda: "lc-dies" not in servers(hub), 60, "lc-dies removed")


def test_removal_releases_everything(backend):
    hub = backend.hub
    r = hub.spawn(USER, "lc-rm", GOOD)
    assert r.status_code in (201, 202), r.text
    assert backend.instance_exists(USER, "lc-rm") and (USER, "lc-rm") in backend.reservations()
    r = hub.api("DELETE", f"/users/{USER}/servers/lc-rm", json={"remove": True})
    assert r.status_code in (202, 204), r.text
    wait_for(lambda: "lc-rm" not in servers(hub), 60, "the record removed")
    assert (USER, "lc-rm") not in backend.reservations()
    assert not backend.instance_exists(USER, "lc-rm")
    log = hub.log.read_text()
    assert "lc-rm: stopped: released" in log and "not fully released" not in log
    assert backend.last_stop(USER, "lc-rm")[:2] == ("user", USER)  # its owner asked


def test_hub_restart_after_death_leaves_no_reservation(backend):
    hub = backend.hub
    r = hub.spawn(USER, "lc-gone", GOOD)
    assert r.status_code in (201, 202), r.text
    hub.stop()  # instances outlive the hub (cleanup_servers = False)
    try:
        assert backend.instance_exists(USER, "lc-gone")
        backend.kill(USER, "lc-gone")  # dies while the hub is down
    finally:
        hub.start()
    # the hub's check at start finds it dead and ends it: everything is released
    wait_for(lambda: (USER, "lc-gone") not in backend.reservations(), 30, "reservation released at hub start")
    wait_for(lambda: not backend.instance_exists(USER, "lc-gone"), 30, "dead instance removed at hub start")
    model = servers(hub)["lc-gone"]
    assert not model["ready"] and not model["pending"]
    hub.api("DELETE", f"/users/{USER}/servers/lc-gone", json={"remove": True})


def test_a_refusal_never_removes_a_record_that_ran_or_another_members(backend):
    hub = backend.hub
    r = hub.spawn(USER, "lc-ran", GOOD)
    assert r.status_code in (201, 202), r.text
    hub.stop_server(USER, "lc-ran")
    r = hub.api("POST", f"/users/{USER}/servers/lc-ran", json=BAD_KIND)
    assert r.status_code == 400, r.text
    assert "lc-ran" in servers(hub)  # it ran before: the record (and its history) stays
    # a member who tries to refuse-spawn someone else's server is stopped by the hub's scopes
    # before any record is touched
    bob = hub.user_token(USER)
    hub.api("POST", "/users/lc-ann")  # the other member exists (409 if already)
    r = hub.api("POST", "/users/lc-ann/servers/lc-theirs", token=bob, json=BAD_KIND)
    assert r.status_code in (403, 404), r.text
    assert "lc-theirs" not in servers(hub, "lc-ann")
    hub.api("DELETE", f"/users/{USER}/servers/lc-ran", json={"remove": True})
    wait_for(lambda: "lc-ran" not in servers(hub), 60, "lc-ran removed")
