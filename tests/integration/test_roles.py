"""The roles table, row by row, as a hostile member tries it: every role (and a non-member)
against every action on their own, another member's and another workspace's instances,
through the hub's REST API, the DSW service's API and pages, and the proxy URLs. Every
"no" is refused (403/404, or the refusal on the page) and changes nothing; every "yes" works.

One hub for the module; users are prefixed ``r-`` so other modules' cleanups leave them be.
"""

from __future__ import annotations

import time

import pytest
import requests
import yaml

from .conftest import cleanup_engine, make_catalog, managed_image
from .hubproc import Hub

pytestmark = pytest.mark.integration

WS, NLP = "rvision", "rnlp"
# r-bob is the victim: a developer in both workspaces who runs instances in both
MEMBERS = {"r-alice": "owner", "r-adam": "admin", "r-dev": "developer", "r-olga": "ops",
           "r-lara": "labeler", "r-vic": "visitor", "r-bob": "developer", "r-rem": "developer"}
NLP_MEMBERS = {"r-nina": "owner", "r-bob": "developer", "r-nops": "ops"}
USERS_ROLE = {"owner": "r-alice", "admin": "r-adam", "developer": "r-dev", "ops": "r-olga",
              "labeler": "r-lara", "visitor": "r-vic"}
ROLES = list(USERS_ROLE)
ACTORS = {**USERS_ROLE, "non-member": "r-out"}  # r-out: a hub user in no workspace
BUILDERS = {"owner", "admin", "developer", "ops"}
MANAGE_ANY = {"owner", "admin", "ops"}
OPTIONS = {"workspace": WS, "kind": "terminal"}


@pytest.fixture(scope="module")
def rhub(tmp_path_factory, engine, engine_url):
    tmp = tmp_path_factory.mktemp("roles")
    cleanup_engine(engine, "r-")
    catalog = make_catalog(tmp, platform_admins=["r-root"], workspaces=[
        {"id": WS, "members": dict(MEMBERS), "resource_groups": ["cpu"], "registry_allowlist": ["localhost/dsw"]},
        {"id": NLP, "members": dict(NLP_MEMBERS), "resource_groups": ["cpu"]},
    ])
    # the product's one-machine default: each user's servers on their own host
    # (<user>.localhost), so sharing is on; the DSW service and the hub on http://localhost:<port>
    h = Hub(tmp / "state", catalog, engine_url, subdomains=True,
            extra_env={"DSW_SERVER_LIMIT": "0", "DSW_RECONCILE_SECONDS": "1"})
    h.start()
    h.tokens = {u: h.user_token(u) for u in {*MEMBERS, *NLP_MEMBERS, "r-root", "r-out"}}
    h.wait_service()
    yield h
    h.stop()
    cleanup_engine(engine, "r-")


def svc(h, user, method, path, **kw):
    return requests.request(method, f"{h.url}/services/dsw/api/v1{path}",
                            headers={"Authorization": f"token {h.tokens[user]}", **kw.pop("headers", {})},
                            timeout=120, **kw)


def as_user(h, user, method, path, **kw):
    """``path`` on the hub; a server's path (/user/<owner>/...) on its owner's own host."""
    headers = {"Authorization": f"token {h.tokens[user]}", **kw.pop("headers", {})}
    base = h.url
    if path.startswith("/user/"):
        base = f"http://{path.split('/')[2]}.localhost:{h.port}"
    return requests.request(method, f"{base}{path}", headers=headers, timeout=120, allow_redirects=False, **kw)


def page_form(h, user, path, fields, headers=None):
    """A member's own browser: their login cookie and a CSRF pair they hold themselves."""
    return requests.post(f"{h.url}/services/dsw/{path}", data={**fields, "csrf": "mine"}, timeout=120,
                         allow_redirects=False,
                         headers={"Cookie": f"dsw-service-token={h.tokens[user]}; dsw-csrf=mine", **(headers or {})})


def hub_groups(h, user) -> set[str]:
    return set(h.api("GET", f"/users/{user}").json()["groups"])


def share_holders(h, owner, server) -> set[str]:
    r = h.api("GET", f"/shares/{owner}/{server}")
    return {i["user"]["name"] for i in r.json().get("items", []) if i.get("user")} if r.status_code == 200 else set()


def audit(h) -> list[dict]:
    return svc(h, "r-root", "GET", "/audit", params={"limit": 500}).json()


def eventually(check, timeout=30.0):
    """Poll a condition the reconcile loop (every 1 s here) makes true; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


# --- reads ---------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_every_member_sees_workspace_and_instances(rhub, role):
    user = USERS_ROLE[role]
    r = svc(rhub, user, "GET", f"/workspaces/{WS}")
    assert r.status_code == 200 and {"user": user, "role": role} in r.json()["members"]
    assert svc(rhub, user, "GET", f"/workspaces/{WS}/instances").status_code == 200
    page = as_user(rhub, user, "GET", f"/services/dsw/workspaces/{WS}", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "Resource groups, quotas and usage" in page.text
    assert ("Add member" in page.text) == (role in ("owner", "admin"))


def test_outsiders_see_nothing(rhub):
    assert svc(rhub, "r-nina", "GET", f"/workspaces/{WS}").status_code == 403
    assert svc(rhub, "r-nina", "GET", f"/workspaces/{WS}/instances").status_code == 403
    assert svc(rhub, "r-dev", "GET", "/workspaces/ghost").status_code == 404
    assert [w["id"] for w in svc(rhub, "r-nina", "GET", "/workspaces").json()] == [NLP]


# --- own instances -------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_create_open_share_stop_own_instances(rhub, engine, role):
    """Builders run, open and share (through the service, with builders only) their own
    instances; nobody shares through the hub (no shares scope: no share with a visitor, no
    share codes). The others cannot start one."""
    user = USERS_ROLE[role]
    r = as_user(rhub, user, "POST", f"/hub/api/users/{user}/servers/own", json=OPTIONS)
    if role not in BUILDERS:
        assert r.status_code == 403, r.text
        assert not engine.containers.list(all=True, filters={"label": f"dsw/user={user}"})
        return
    assert r.status_code in (201, 202), r.text
    rhub.wait_ready(user, "own")
    assert as_user(rhub, user, "GET", f"/user/{user}/own/api/status").status_code == 200
    # finding 11: sharing through the hub, with a visitor or by share code, is refused
    assert as_user(rhub, user, "POST", f"/hub/api/shares/{user}/own", json={"user": "r-vic"}).status_code == 403
    assert as_user(rhub, user, "POST", f"/hub/api/shares/{user}/own",
                   json={"group": f"ws:{WS}"}).status_code == 403
    assert as_user(rhub, user, "POST", f"/hub/api/share-codes/{user}/own", json={}).status_code == 403
    assert as_user(rhub, user, "GET", f"/hub/api/share-codes/{user}/own").status_code == 403
    # through the service: the workspace's builders, nobody else
    shared = svc(rhub, user, "POST", f"/workspaces/{WS}/instances/{user}/share", params={"server": "own"})
    assert shared.status_code == 200, shared.text
    holders = share_holders(rhub, user, "own")
    assert holders == {u for u, r in MEMBERS.items() if r in BUILDERS} - {user}
    assert as_user(rhub, user, "DELETE", f"/hub/api/users/{user}/servers/own",
                   json={"remove": True}).status_code in (202, 204)
    rhub.wait_stopped(user, "own")
    assert not engine.containers.list(all=True, filters={"label": f"dsw/user={user}"})


# --- other members' and other workspaces' instances ---------------------------------------
@pytest.fixture(scope="module")
def victims(rhub):
    """r-bob runs 'bv' (shared with rvision's builders) and 'bp' (private) in rvision, and
    'n1' in rnlp."""
    for name, ws in (("bv", WS), ("bp", WS), ("n1", NLP)):
        r = rhub.spawn("r-bob", name, {"workspace": ws, "kind": "terminal"})
        assert r.status_code in (201, 202), r.text
    share = svc(rhub, "r-bob", "POST", f"/workspaces/{WS}/instances/r-bob/share", params={"server": "bv"})
    assert share.status_code == 200, share.text
    # only the creator shares
    assert svc(rhub, "r-adam", "POST", f"/workspaces/{WS}/instances/r-bob/share",
               params={"server": "bp"}).status_code == 403
    return {"bv": WS, "bp": WS, "n1": NLP}


def running(h, owner, server) -> bool:
    s = h.server_model(owner, server)
    return bool(s and s.get("ready"))


def ensure_running(h, owner, server, ws):
    if not running(h, owner, server):
        h.wait_stopped(owner, server)
        r = h.spawn(owner, server, {"workspace": ws, "kind": "terminal"})
        assert r.status_code in (201, 202), r.text


# (name, request, which targets; each request is what a hostile caller sends)
def _hub_spawn_for(h, user, ws, owner, server):
    return as_user(h, user, "POST", f"/hub/api/users/{owner}/servers/pwn", json={"workspace": ws, "kind": "terminal"})


def _hub_stop(h, user, ws, owner, server):
    return as_user(h, user, "DELETE", f"/hub/api/users/{owner}/servers/{server}")


def _hub_share(h, user, ws, owner, server):
    return as_user(h, user, "POST", f"/hub/api/shares/{owner}/{server}", json={"user": user})


def _hub_share_code(h, user, ws, owner, server):
    return as_user(h, user, "POST", f"/hub/api/share-codes/{owner}/{server}", json={})


def _open(h, user, ws, owner, server):
    return as_user(h, user, "GET", f"/user/{owner}/{server}/api/status")


def _svc(op):
    def send(h, user, ws, owner, server):
        return svc(h, user, "POST", f"/workspaces/{ws}/instances/{owner}/{op}", params={"server": server})
    return send


def _page(op):
    def send(h, user, ws, owner, server):
        return page_form(h, user, f"workspaces/{ws}/instances/{op}", {"owner": owner, "server": server})
    return send


ACTIONS = {
    "hub: spawn for the owner": _hub_spawn_for, "hub: stop": _hub_stop, "hub: share": _hub_share,
    "hub: share code": _hub_share_code, "proxy: open": _open,
    "dsw: stop": _svc("stop"), "dsw: restart": _svc("restart"), "dsw: share": _svc("share"),
    "page: stop": _page("stop"), "page: restart": _page("restart"),
}
# target -> (workspace named in the URL, owner, server)
TARGETS = {
    "other member's shared": (WS, "r-bob", "bv"),
    "other member's private": (WS, "r-bob", "bp"),
    "other workspace's, named as this one": (WS, "r-bob", "n1"),
    "other workspace's": (NLP, "r-bob", "n1"),
}


def allowed(actor: str, action: str, target: str) -> bool:
    in_ws = TARGETS[target][0] == WS and not target.startswith("other workspace")
    if action == "proxy: open":
        return target == "other member's shared" and actor in BUILDERS
    if action in ("dsw: stop", "dsw: restart", "page: stop", "page: restart"):
        return in_ws and actor in MANAGE_ANY
    return False  # nobody spawns for, stops through the hub, or shares another member's instance


def distinct(action: str, target: str) -> bool:
    """Hub and proxy requests name no workspace: the two other-workspace targets are one
    request there, and a spawn for r-bob is one request per workspace in its body."""
    if action.startswith(("hub:", "proxy:")) and target == "other workspace's, named as this one":
        return False
    return action != "hub: spawn for the owner" or target in ("other member's private", "other workspace's")


REFUSED = [(a, act, t) for a in ACTORS for act in ACTIONS for t in TARGETS
           if distinct(act, t) and not allowed(a, act, t)]


def refused(r: requests.Response) -> bool:
    if r.status_code == 303:  # a page shows the refusal on the page it redirects to
        return "error=" in r.headers["location"]
    return r.status_code in (403, 404)


@pytest.mark.parametrize("actor,action,target", REFUSED, ids=[" / ".join(x) for x in REFUSED])
def test_unauthorised_actions_on_others_instances_are_refused(rhub, engine, victims, actor, action, target):
    """Zero unauthorised successes: each refused, and the instance runs on, untouched."""
    ws, owner, server = TARGETS[target]
    ensure_running(rhub, owner, server, victims[server])
    before = rhub.server_model(owner, server)["started"]
    r = ACTIONS[action](rhub, ACTORS[actor], ws, owner, server)
    assert refused(r), (r.status_code, r.text[:300], r.headers.get("location"))
    after = rhub.server_model(owner, server)
    assert after and after["ready"] and after["started"] == before
    assert not engine.containers.list(all=True, filters={"label": "dsw/server=pwn"})
    assert "pwn" not in (rhub.api("GET", f"/users/{owner}").json().get("servers") or {})
    assert ACTORS[actor] not in share_holders(rhub, owner, server) - (
        {u for u, r in MEMBERS.items() if r in BUILDERS} if server == "bv" else set())
    if action == "hub: share code":
        assert rhub.api("GET", f"/share-codes/{owner}/{server}").json().get("items", []) == []


@pytest.mark.parametrize("role", ["owner", "developer", "labeler", "visitor", "non-member"])
def test_open_shared_and_private_instances(rhub, victims, role):
    user = ACTORS[role]
    shared = as_user(rhub, user, "GET", "/user/r-bob/bv/api/status")
    assert shared.status_code == (200 if role in BUILDERS else 403), shared.text[:200]
    assert as_user(rhub, user, "GET", "/user/r-bob/bp/api/status").status_code == 403


@pytest.mark.parametrize("role", sorted(MANAGE_ANY))
def test_stop_and_restart_another_members_instance_through_the_service(rhub, victims, role):
    """owner/admin/ops stop and restart a member's instance of their workspace through the
    service (API and page), audited; the restart keeps the owner's options."""
    user = USERS_ROLE[role]
    ensure_running(rhub, "r-bob", "bp", WS)
    before = rhub.server_model("r-bob", "bp")
    r = svc(rhub, user, "POST", f"/workspaces/{WS}/instances/r-bob/restart", params={"server": "bp"})
    assert r.status_code == 200, r.text
    after = rhub.wait_ready("r-bob", "bp")
    assert after["user_options"] == before["user_options"] and after["started"] != before["started"]
    stop = page_form(rhub, user, f"workspaces/{WS}/instances/stop", {"owner": "r-bob", "server": "bp"})
    assert stop.status_code == 303 and "message=stopping" in stop.headers["location"], stop.headers
    rhub.wait_stopped("r-bob", "bp")
    log = audit(rhub)
    for action in ("restart-instance", "stop-instance"):
        assert any(e["actor"] == user and e["action"] == action and e["target"] == "r-bob/bp" and e["outcome"] == "ok"
                   and e["workspace"] == WS for e in log), action
    ensure_running(rhub, "r-bob", "bp", WS)


# --- the findings of issue 9, as reported ---------------------------------------------------
def test_owner_cannot_spawn_for_another_member_with_her_options(rhub, engine, victims):
    """Finding 2: `alice` ran POST /hub/api/users/bob/servers/pwn with her chosen options and
    the container mounted bob's home."""
    # options bob himself may use: the refusal must be the hub's, not the spawner's
    r = as_user(rhub, "r-alice", "POST", "/hub/api/users/r-bob/servers/pwn", json={"workspace": WS, "kind": "terminal"})
    # JupyterHub answers 404 ("No access to resources or resources not found") to a caller
    # holding no server scope on that user at all; 403 where some scope exists
    assert r.status_code in (403, 404) and "pwn" not in r.text, r.text
    assert not engine.containers.list(all=True, filters={"label": "dsw/server=pwn"})
    assert "pwn" not in (rhub.api("GET", "/users/r-bob").json().get("servers") or {})


def test_ops_of_one_workspace_cannot_stop_a_server_of_another(rhub, victims):
    """Finding 2: `olga`, ops in vision and no member of nlp, stopped bob's nlp server with
    DELETE /hub/api/users/bob/servers/n1 (204). Neither the hub nor the service (naming
    vision, where she is ops) lets her now."""
    ensure_running(rhub, "r-bob", "n1", NLP)
    assert as_user(rhub, "r-olga", "DELETE", "/hub/api/users/r-bob/servers/n1").status_code in (403, 404)
    via_vision = svc(rhub, "r-olga", "POST", f"/workspaces/{WS}/instances/r-bob/stop", params={"server": "n1"})
    assert via_vision.status_code == 404, via_vision.text
    assert svc(rhub, "r-olga", "POST", f"/workspaces/{NLP}/instances/r-bob/stop",
               params={"server": "n1"}).status_code == 403
    assert running(rhub, "r-bob", "n1")


def test_ops_of_the_instances_workspace_stops_and_restarts_it_through_the_service(rhub, victims):
    ensure_running(rhub, "r-bob", "n1", NLP)
    before = rhub.server_model("r-bob", "n1")
    r = svc(rhub, "r-nops", "POST", f"/workspaces/{NLP}/instances/r-bob/restart", params={"server": "n1"})
    assert r.status_code == 200, r.text
    assert r.json()["user_options"] == before["user_options"] == {"workspace": NLP, "kind": "terminal"}
    after = rhub.wait_ready("r-bob", "n1")
    assert after["user_options"] == before["user_options"] and after["started"] != before["started"]
    stop = svc(rhub, "r-nops", "POST", f"/workspaces/{NLP}/instances/r-bob/stop", params={"server": "n1"})
    assert stop.status_code == 200, stop.text
    rhub.wait_stopped("r-bob", "n1")
    assert any(e["actor"] == "r-nops" and e["action"] == "stop-instance" and e["target"] == "r-bob/n1"
               and e["workspace"] == NLP and e["outcome"] == "ok" for e in audit(rhub))
    ensure_running(rhub, "r-bob", "n1", NLP)


def test_a_role_change_after_a_shared_server_was_deleted(rhub, victims):
    """Finding 8: after bob's shared server was deleted, alice's PUT …/members/bob
    {"role": "developer"} answered 500 and bob stayed admin."""
    r = rhub.spawn("r-bob", "gone", OPTIONS)
    assert r.status_code in (201, 202), r.text
    assert svc(rhub, "r-bob", "POST", f"/workspaces/{WS}/instances/r-bob/share",
               params={"server": "gone"}).status_code == 200
    assert svc(rhub, "r-alice", "PUT", f"/workspaces/{WS}/members/r-bob", json={"role": "admin"}).status_code == 200
    gone = as_user(rhub, "r-bob", "DELETE", "/hub/api/users/r-bob/servers/gone", json={"remove": True})
    assert gone.status_code in (202, 204)
    assert eventually(lambda: "gone" not in (rhub.api("GET", "/users/r-bob").json().get("servers") or {}))
    r = svc(rhub, "r-alice", "PUT", f"/workspaces/{WS}/members/r-bob", json={"role": "developer"})
    assert r.status_code == 200, r.text
    assert members(rhub)["r-bob"] == "developer"
    groups = hub_groups(rhub, "r-bob")
    assert f"ws:{WS}:developer" in groups and f"ws:{WS}:admin" not in groups
    assert any(e["action"] == "unshare-instance" and e["target"] == "r-bob/gone" and "deleted" in e["detail"]
               for e in audit(rhub))


def test_membership_changed_outside_the_service_reaches_groups_and_shares(rhub, victims):
    """An SSO login or a catalogue edit changes membership without the service: its
    reconcile loop brings the hub's groups and the workspace's shares along."""
    from spawner_ext.catalog.db import MemberChange, sessions
    with sessions(f"sqlite:///{rhub.state}/dsw.sqlite")() as s, s.begin():
        s.merge(MemberChange(workspace=WS, user="r-zoe", role="developer", source="sso"))
    assert eventually(lambda: "r-zoe" in share_holders(rhub, "r-bob", "bv"))
    # a fresh token (as a login makes): single-user servers cache a token's scopes for minutes
    rhub.tokens["r-zoe"] = rhub.user_token("r-zoe")
    assert as_user(rhub, "r-zoe", "GET", "/user/r-bob/bv/api/status").status_code == 200
    assert f"ws:{WS}:developer" in hub_groups(rhub, "r-zoe")
    assert as_user(rhub, "r-zoe", "GET", "/user/r-bob/bp/api/status").status_code == 403
    # removed the same way (an SSO login without the group): groups and share go
    with sessions(f"sqlite:///{rhub.state}/dsw.sqlite")() as s, s.begin():
        s.merge(MemberChange(workspace=WS, user="r-zoe", role=None, source="sso"))
    assert eventually(lambda: not [g for g in hub_groups(rhub, "r-zoe") if g.startswith(f"ws:{WS}")])
    assert eventually(lambda: "r-zoe" not in share_holders(rhub, "r-bob", "bv"))


def test_a_member_removed_from_the_catalogue_file_loses_groups_and_shares(rhub, victims):
    """Finding 8: JupyterHub's load_groups and the reconcile loop only added; a member
    removed from the catalogue kept their groups (and the shares they open)."""
    assert eventually(lambda: "r-rem" in share_holders(rhub, "r-bob", "bv"))
    assert [g for g in hub_groups(rhub, "r-rem") if WS in g]
    data = yaml.safe_load(rhub.catalog.read_text())
    del next(w for w in data["workspaces"] if w["id"] == WS)["members"]["r-rem"]
    rhub.catalog.write_text(yaml.safe_dump(data))
    assert eventually(lambda: not [g for g in hub_groups(rhub, "r-rem") if WS in g])
    assert eventually(lambda: "r-rem" not in share_holders(rhub, "r-bob", "bv"))
    rhub.tokens["r-rem"] = rhub.user_token("r-rem")
    assert as_user(rhub, "r-rem", "GET", "/user/r-bob/bv/api/status").status_code == 403
    assert svc(rhub, "r-rem", "GET", f"/workspaces/{WS}").status_code == 403


@pytest.mark.parametrize("role", ROLES)
def test_free_form_images(rhub, role):
    user = USERS_ROLE[role]
    r = as_user(rhub, user, "POST", f"/hub/api/users/{user}/servers/free",
                json={"workspace": WS, "image_ref": managed_image(), "kind": "terminal"})
    if role in ("owner", "admin"):
        assert r.status_code in (201, 202), r.text
        rhub.wait_ready(user, "free")
        rhub.stop_server(user, "free")
        off_list = as_user(rhub, user, "POST", f"/hub/api/users/{user}/servers/free2",
                           json={"workspace": WS, "image_ref": "quay.io/evil/miner:1"})
        assert off_list.status_code == 403 and "allowlist" in off_list.json()["message"]
    else:
        assert r.status_code == 403


# --- members, quotas, allocations ----------------------------------------------------------
def members(h):
    return {m["user"]: m["role"] for m in svc(h, "r-root", "GET", f"/workspaces/{WS}").json()["members"]}


@pytest.mark.parametrize("role", [*ROLES, "non-member"])
def test_manage_members(rhub, victims, role):
    user = ACTORS[role]
    before = members(rhub)
    add = svc(rhub, user, "PUT", f"/workspaces/{WS}/members/r-newbie", json={"role": "developer"})
    if role not in ("owner", "admin"):
        assert add.status_code == 403 and members(rhub) == before
        assert svc(rhub, user, "DELETE", f"/workspaces/{WS}/members/r-dev").status_code == 403
        assert members(rhub) == before
        return
    assert add.status_code == 200, add.text
    assert members(rhub)["r-newbie"] == "developer"
    assert f"ws:{WS}:developer" in hub_groups(rhub, "r-newbie")
    assert "r-newbie" in share_holders(rhub, "r-bob", "bv")  # a builder: shares come with the role
    assert svc(rhub, user, "PUT", f"/workspaces/{WS}/members/r-newbie", json={"role": "visitor"}).status_code == 200
    assert members(rhub)["r-newbie"] == "visitor"
    groups = hub_groups(rhub, "r-newbie")
    assert f"ws:{WS}:visitor" in groups and f"ws:{WS}:developer" not in groups and f"ws:{WS}:builders" not in groups
    assert "r-newbie" not in share_holders(rhub, "r-bob", "bv")  # a visitor: no share
    assert svc(rhub, user, "DELETE", f"/workspaces/{WS}/members/r-newbie").status_code == 200
    assert "r-newbie" not in members(rhub)
    assert not [g for g in hub_groups(rhub, "r-newbie") if g.startswith(f"ws:{WS}")]


def test_admin_cannot_remove_or_demote_the_owner(rhub):
    before = members(rhub)
    demote = svc(rhub, "r-adam", "PUT", f"/workspaces/{WS}/members/r-alice", json={"role": "developer"})
    assert demote.status_code == 403 and "owner" in demote.json()["detail"]
    remove = svc(rhub, "r-adam", "DELETE", f"/workspaces/{WS}/members/r-alice")
    assert remove.status_code == 403
    assert members(rhub) == before


@pytest.mark.parametrize("role", [*ROLES, "non-member"])
def test_set_member_quota(rhub, role):
    user = ACTORS[role]
    r = svc(rhub, user, "PUT", f"/workspaces/{WS}/members/r-dev/quotas/cpu", json={"cpu": 2, "memory": "2Gi", "gpu": 0})
    assert r.status_code == (200 if role in ("owner", "admin") else 403), r.text
    caps = svc(rhub, "r-root", "GET", f"/workspaces/{WS}").json()["resource_groups"][0]["member_quotas"]
    if role not in ("owner", "admin"):
        assert all(q["cpu"] == 2 for q in caps)  # unchanged (or set earlier by an owner/admin to the same)


def test_platform_admin_only_allocations_and_audit(rhub):
    ok = svc(rhub, "r-root", "PUT", f"/allocations/cpu/{WS}", json={"cpu": 6, "memory": "12Gi", "gpu": 0})
    assert ok.status_code == 200, ok.text
    for user in ("r-alice", "r-adam", "r-dev", "r-nina", "r-out"):
        assert svc(rhub, user, "PUT", f"/allocations/cpu/{WS}", json={"cpu": 8, "memory": "16Gi", "gpu": 0}).status_code == 403
        assert svc(rhub, user, "GET", "/audit").status_code == 403
    log = audit(rhub)
    assert any(e["action"] == "allocate" and e["outcome"] == "ok" and e["actor"] == "r-root" for e in log)
    assert any(e["action"] == "allocate" and e["outcome"] == "refused" and e["actor"] == "r-alice" for e in log)
    page = as_user(rhub, "r-root", "GET", "/services/dsw/admin/allocations", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "Resource-group allocations" in page.text
    assert as_user(rhub, "r-alice", "GET", "/services/dsw/admin/allocations").status_code == 403


# --- forged and cross-origin requests riding on a logged-in owner's login ------------------
# The attacker's page posts to the service from the owner's browser: the browser sends the
# service's login cookie (here: the owner's own token, the strongest cookie there is) but no
# Authorization header, and an HTML form can only send form-urlencoded, multipart or
# text/plain bodies. Since the API reads JSON whatever Content-Type says (issue 13), the
# payload below IS valid JSON: only the refusal to take the cookie for changes protects it.
FORGED = [
    ("PUT", f"/services/dsw/api/v1/workspaces/{WS}/members/r-vic", "application/x-www-form-urlencoded",
     '{"role": "admin"}'),
    ("PUT", f"/services/dsw/api/v1/workspaces/{WS}/members/r-vic", "text/plain", '{"role": "admin"}'),
    ("DELETE", f"/services/dsw/api/v1/workspaces/{WS}/members/r-dev", "application/x-www-form-urlencoded", ""),
    ("PUT", f"/services/dsw/api/v1/workspaces/{WS}/members/r-vic/quotas/cpu", "application/x-www-form-urlencoded",
     '{"cpu": 8, "memory": "16Gi", "gpu": 0}'),
    ("PUT", f"/services/dsw/api/v1/allocations/cpu/{WS}", "text/plain", '{"cpu": 8, "memory": "16Gi", "gpu": 0}'),
]


def state(h):
    return (members(h), svc(h, "r-root", "GET", f"/workspaces/{WS}").json(), svc(h, "r-root", "GET", "/allocations").json())


@pytest.mark.parametrize("method,path,content_type,body", FORGED, ids=[f"{f[0]} {f[2]} {i}" for i, f in enumerate(FORGED)])
def test_forged_api_change_with_only_the_login_cookie_is_refused(rhub, method, path, content_type, body):
    before = state(rhub)
    victim = "r-root" if "/allocations/" in path else "r-alice"
    r = requests.request(method, f"{rhub.url}{path}", data=body, timeout=60, allow_redirects=False,
                         headers={"Content-Type": content_type,
                                  "Cookie": f"dsw-service-token={rhub.tokens[victim]}"})
    assert r.status_code == 401, r.text
    assert state(rhub) == before


def test_cross_origin_changes_are_refused_whatever_they_carry(rhub):
    """Finding 3 (service side): a page in bob's server read the page's CSRF token (or a
    token) and posted member=bob&role=admin as alice. With the page's own CSRF pair and
    alice's login, or with her token, a change whose Origin/Referer is not the hub's is
    refused and changes nothing."""
    before = state(rhub)
    evil = f"http://r-bob.localhost:{rhub.port}"  # bob's server's own origin
    form = page_form(rhub, "r-alice", f"workspaces/{WS}/members", {"member": "r-bob", "role": "admin"},
                     headers={"Origin": evil})
    assert form.status_code == 403 and "cross-origin" in form.json()["detail"], form.text
    by_referer = page_form(rhub, "r-alice", f"workspaces/{WS}/members", {"member": "r-bob", "role": "admin"},
                           headers={"Referer": f"{evil}/user/r-bob/bv/proxy/9000/evil.html"})
    assert by_referer.status_code == 403
    api = svc(rhub, "r-alice", "PUT", f"/workspaces/{WS}/members/r-bob", json={"role": "admin"},
              headers={"Origin": evil})
    assert api.status_code == 403
    stop = page_form(rhub, "r-olga", f"workspaces/{WS}/instances/stop", {"owner": "r-bob", "server": "bv"},
                     headers={"Origin": "null"})
    assert stop.status_code == 403
    assert state(rhub) == before
    # the hub's own origin passes (the same form, sent from the service's page)
    ok = page_form(rhub, "r-alice", f"workspaces/{WS}/quotas",
                   {"member": "r-dev", "group": "cpu", "cpu": "2", "memory": "2Gi", "gpu": "0"},
                   headers={"Origin": rhub.url})
    assert ok.status_code == 303 and "message=" in ok.headers["location"], ok.headers


def test_forged_page_form_without_the_csrf_token_is_refused(rhub):
    """The pages take the cookie, so their forms need the CSRF token of a page the service
    rendered (double-submit cookie, SameSite=strict): a forged form has neither."""
    before = members(rhub)
    cookie = f"dsw-service-token={rhub.tokens['r-alice']}"
    for csrf_cookie, csrf_field in (("", ""), ("", "guessed"), ("guessed", "other")):
        r = requests.post(f"{rhub.url}/services/dsw/workspaces/{WS}/members", timeout=60, allow_redirects=False,
                          data={"member": "r-vic", "role": "admin", "csrf": csrf_field},
                          headers={"Cookie": cookie + (f"; dsw-csrf={csrf_cookie}" if csrf_cookie else "")})
        assert r.status_code == 403 and "form expired" in r.json()["detail"], r.text
    assert members(rhub) == before


@pytest.mark.parametrize("role", [*ROLES, "non-member"])
def test_page_forms_obey_the_same_roles_as_the_api(rhub, role):
    """The pages run the API's operations: a member who may not manage members or caps gets the
    refusal on the page and changes nothing, whatever form they post."""
    user = ACTORS[role]
    before = (members(rhub), svc(rhub, "r-root", "GET", f"/workspaces/{WS}").json())
    add = page_form(rhub, user, f"workspaces/{WS}/members", {"member": "r-formie", "role": "admin"})
    cap = page_form(rhub, user, f"workspaces/{WS}/quotas",
                    {"member": "r-dev", "group": "cpu", "cpu": "1", "memory": "1Gi", "gpu": "0"})
    alloc = page_form(rhub, user, "admin/allocations", {"ws": WS, "group": "cpu", "cpu": "8", "memory": "16Gi"})
    assert alloc.status_code == 303 and "error=only+platform+admins" in alloc.headers["location"], alloc.text
    if role in ("owner", "admin"):
        assert add.status_code == 303 and "message=" in add.headers["location"], add.headers
        assert members(rhub)["r-formie"] == "admin"
        assert cap.status_code == 303 and "message=" in cap.headers["location"]
        rm = page_form(rhub, user, f"workspaces/{WS}/members", {"member": "r-formie", "remove": "1"})
        assert rm.status_code == 303 and "r-formie" not in members(rhub)
        return
    assert add.status_code == 303 and "error=" in add.headers["location"] and "may+not" in add.headers["location"]
    assert cap.status_code == 303 and "error=" in cap.headers["location"]
    assert (members(rhub), svc(rhub, "r-root", "GET", f"/workspaces/{WS}").json()) == before
