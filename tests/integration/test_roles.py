"""The roles table, row by row, through the hub's REST API, the DSW service's API and
pages, and direct proxy URLs. Every "no" is refused (403/404) and changes nothing."""

from __future__ import annotations

import pytest
import requests

from .conftest import cleanup_engine, make_catalog
from .hubproc import Hub, free_port

pytestmark = pytest.mark.integration

WS = "tvision"
MEMBERS = {"t-alice": "owner", "t-adam": "admin", "t-bob": "developer", "t-olga": "ops",
           "t-lara": "labeler", "t-vic": "visitor"}
USERS_ROLE = {role: user for user, role in MEMBERS.items()}
ROLES = list(USERS_ROLE)
BUILDERS = {"owner", "admin", "developer", "ops"}


@pytest.fixture(scope="module")
def rhub(tmp_path_factory, engine, engine_url):
    tmp = tmp_path_factory.mktemp("roles")
    cleanup_engine(engine)
    catalog = make_catalog(tmp, platform_admins=["t-root"], workspaces=[
        {"id": WS, "members": dict(MEMBERS), "resource_groups": ["cpu"], "registry_allowlist": ["localhost/dsw"]},
        {"id": "tnlp", "members": {"t-nina": "owner"}, "resource_groups": ["cpu"]},
    ])
    h = Hub(tmp / "state", catalog, engine_url, extra_env={"DSW_SERVER_LIMIT": "0", "DSW_RECONCILE_SECONDS": "1"})
    h.start()
    h.tokens = {u: h.user_token(u) for u in [*MEMBERS, "t-nina", "t-root"]}
    h.wait_service()
    yield h
    h.stop()
    cleanup_engine(engine)


def svc(h, user, method, path, **kw):
    return requests.request(method, f"{h.url}/services/dsw/api/v1{path}",
                            headers={"Authorization": f"token {h.tokens[user]}", **kw.pop("headers", {})},
                            timeout=60, **kw)


def as_user(h, user, method, path, **kw):
    headers = {"Authorization": f"token {h.tokens[user]}", **kw.pop("headers", {})}
    return requests.request(method, f"{h.url}{path}", headers=headers, timeout=120, allow_redirects=False, **kw)


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
    assert svc(rhub, "t-nina", "GET", f"/workspaces/{WS}").status_code == 403
    assert svc(rhub, "t-nina", "GET", f"/workspaces/{WS}/instances").status_code == 403
    assert svc(rhub, "t-bob", "GET", "/workspaces/ghost").status_code == 404
    assert [w["id"] for w in svc(rhub, "t-nina", "GET", "/workspaces").json()] == ["tnlp"]


@pytest.mark.parametrize("role", ROLES)
def test_create_open_stop_own_instances(rhub, engine, role):
    user = USERS_ROLE[role]
    r = as_user(rhub, user, "POST", f"/hub/api/users/{user}/servers/own", json={"workspace": WS, "kind": "terminal"})
    if role not in BUILDERS:
        assert r.status_code == 403, r.text
        assert not engine.containers.list(all=True, filters={"label": f"dsw/user={user}"})
        return
    assert r.status_code in (201, 202), r.text
    rhub.wait_ready(user, "own")
    assert as_user(rhub, user, "GET", f"/user/{user}/own/api/status").status_code == 200
    assert as_user(rhub, user, "DELETE", f"/hub/api/users/{user}/servers/own").status_code in (202, 204)
    assert not engine.containers.list(all=True, filters={"label": f"dsw/user={user}"})


@pytest.fixture(scope="module")
def alice_servers(rhub):
    """t-alice runs 'shared' (shared with the workspace's builders) and 'private'."""
    for name in ("shared", "private"):
        r = rhub.spawn("t-alice", name, {"workspace": WS, "kind": "terminal"})
        assert r.status_code in (201, 202), r.text
    share = svc(rhub, "t-alice", "POST", f"/workspaces/{WS}/instances/t-alice/share", params={"server": "shared"})
    assert share.status_code == 200, share.text
    # only the creator shares
    assert svc(rhub, "t-adam", "POST", f"/workspaces/{WS}/instances/t-alice/share",
               params={"server": "private"}).status_code == 403
    return "shared", "private"


@pytest.mark.parametrize("role", [r for r in ROLES if r != "owner"])
def test_open_shared_and_private_instances(rhub, alice_servers, role):
    user = USERS_ROLE[role]
    shared = as_user(rhub, user, "GET", "/user/t-alice/shared/api/status")
    assert shared.status_code == (200 if role in BUILDERS else 403), shared.text[:200]
    private = as_user(rhub, user, "GET", "/user/t-alice/private/api/status")
    assert private.status_code == 403


def test_membership_changed_outside_the_service_reaches_groups_and_shares(rhub, alice_servers):
    """An SSO login or a catalogue edit changes membership without the service: its
    reconcile loop brings the hub's groups and the workspace's shares along."""
    import time

    from spawner_ext.catalog.db import MemberChange, sessions
    with sessions(f"sqlite:///{rhub.state}/dsw.sqlite")() as s, s.begin():
        s.merge(MemberChange(workspace=WS, user="t-zoe", role="developer", source="sso"))
    deadline, shared_with = time.monotonic() + 30, set()
    while time.monotonic() < deadline and "t-zoe" not in shared_with:
        items = rhub.api("GET", "/shares/t-alice/shared").json().get("items", [])
        shared_with = {i["user"]["name"] for i in items if i.get("user")}
        time.sleep(0.5)
    assert "t-zoe" in shared_with
    # a fresh token (as a login makes): single-user servers cache a token's scopes for minutes
    rhub.tokens["t-zoe"] = rhub.user_token("t-zoe")
    assert as_user(rhub, "t-zoe", "GET", "/user/t-alice/shared/api/status").status_code == 200
    assert f"ws-{WS}-developer" in rhub.api("GET", "/users/t-zoe").json()["groups"]
    assert as_user(rhub, "t-zoe", "GET", "/user/t-alice/private/api/status").status_code == 403


def test_outsider_cannot_open_shared(rhub, alice_servers):
    assert as_user(rhub, "t-nina", "GET", "/user/t-alice/shared/api/status").status_code == 403


@pytest.mark.parametrize("role", ["admin", "ops", "developer", "labeler", "visitor"])
def test_stop_any_instance(rhub, role):
    """admin/ops may stop another member's instance (REST and service); the rest are refused."""
    user = USERS_ROLE[role]
    r = rhub.spawn("t-alice", "victim", {"workspace": WS, "kind": "terminal"})
    assert r.status_code in (201, 202) or rhub.server_model("t-alice", "victim")["ready"]
    via_rest = as_user(rhub, user, "DELETE", "/hub/api/users/t-alice/servers/victim")
    if role in ("admin", "ops"):
        assert via_rest.status_code in (202, 204)
        rhub.wait_stopped("t-alice", "victim")
        assert rhub.spawn("t-alice", "victim", {"workspace": WS, "kind": "terminal"}).status_code in (201, 202)
        via_service = svc(rhub, user, "POST", f"/workspaces/{WS}/instances/t-alice/stop", params={"server": "victim"})
        assert via_service.status_code == 200, via_service.text
        rhub.wait_stopped("t-alice", "victim")
    else:
        assert via_rest.status_code in (403, 404)
        via_service = svc(rhub, user, "POST", f"/workspaces/{WS}/instances/t-alice/stop", params={"server": "victim"})
        assert via_service.status_code == 403
        assert rhub.server_model("t-alice", "victim")["ready"]  # nothing changed
        rhub.stop_server("t-alice", "victim")


@pytest.mark.parametrize("role", ROLES)
def test_free_form_images(rhub, role):
    user = USERS_ROLE[role]
    from .conftest import managed_image
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


def members(h):
    return {m["user"]: m["role"] for m in svc(h, "t-root", "GET", f"/workspaces/{WS}").json()["members"]}


@pytest.mark.parametrize("role", ROLES)
def test_manage_members(rhub, role):
    user = USERS_ROLE[role]
    before = members(rhub)
    add = svc(rhub, user, "PUT", f"/workspaces/{WS}/members/t-newbie", json={"role": "developer"})
    if role not in ("owner", "admin"):
        assert add.status_code == 403 and members(rhub) == before
        assert svc(rhub, user, "DELETE", f"/workspaces/{WS}/members/t-bob").status_code == 403
        assert members(rhub) == before
        return
    assert add.status_code == 200, add.text
    assert members(rhub)["t-newbie"] == "developer"
    assert f"ws-{WS}-developer" in rhub.api("GET", "/users/t-newbie").json()["groups"]
    assert svc(rhub, user, "PUT", f"/workspaces/{WS}/members/t-newbie", json={"role": "ops"}).status_code == 200
    assert members(rhub)["t-newbie"] == "ops"
    assert svc(rhub, user, "DELETE", f"/workspaces/{WS}/members/t-newbie").status_code == 200
    assert "t-newbie" not in members(rhub)
    assert not [g for g in rhub.api("GET", "/users/t-newbie").json()["groups"] if g.startswith(f"ws-{WS}")]


def test_admin_cannot_remove_or_demote_the_owner(rhub):
    before = members(rhub)
    demote = svc(rhub, "t-adam", "PUT", f"/workspaces/{WS}/members/t-alice", json={"role": "developer"})
    assert demote.status_code == 403 and "owner" in demote.json()["detail"]
    remove = svc(rhub, "t-adam", "DELETE", f"/workspaces/{WS}/members/t-alice")
    assert remove.status_code == 403
    assert members(rhub) == before


@pytest.mark.parametrize("role", ROLES)
def test_set_member_quota(rhub, role):
    user = USERS_ROLE[role]
    r = svc(rhub, user, "PUT", f"/workspaces/{WS}/members/t-bob/quotas/cpu", json={"cpu": 2, "memory": "2Gi", "gpu": 0})
    assert r.status_code == (200 if role in ("owner", "admin") else 403), r.text
    caps = svc(rhub, "t-root", "GET", f"/workspaces/{WS}").json()["resource_groups"][0]["member_quotas"]
    if role not in ("owner", "admin"):
        assert all(q["cpu"] == 2 for q in caps)  # unchanged (or set earlier by an owner/admin to the same)


def test_platform_admin_only_allocations_and_audit(rhub):
    ok = svc(rhub, "t-root", "PUT", f"/allocations/cpu/{WS}", json={"cpu": 6, "memory": "12Gi", "gpu": 0})
    assert ok.status_code == 200, ok.text
    for user in ("t-alice", "t-adam", "t-bob"):
        assert svc(rhub, user, "PUT", f"/allocations/cpu/{WS}", json={"cpu": 8, "memory": "16Gi", "gpu": 0}).status_code == 403
        assert svc(rhub, user, "GET", "/audit").status_code == 403
    audit = svc(rhub, "t-root", "GET", "/audit").json()
    assert any(e["action"] == "allocate" and e["outcome"] == "ok" and e["actor"] == "t-root" for e in audit)
    assert any(e["action"] == "allocate" and e["outcome"] == "refused" and e["actor"] == "t-alice" for e in audit)
    assert any(e["action"] == "manage-members" and e["outcome"] == "refused" for e in audit)
    assert any(e["action"] == "set-member" and e["outcome"] == "ok" for e in audit)
    page = as_user(rhub, "t-root", "GET", "/services/dsw/admin/allocations", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "Resource-group allocations" in page.text
    assert as_user(rhub, "t-alice", "GET", "/services/dsw/admin/allocations").status_code == 403


# --- forged cross-site requests (CSRF) riding on a logged-in owner's cookie ----------------
# The attacker's page posts to the service from the owner's browser: the browser sends the
# service's login cookie (here: the owner's own token, the strongest cookie there is) but no
# Authorization header, and an HTML form can only send form-urlencoded, multipart or
# text/plain bodies. Since the API reads JSON whatever Content-Type says (issue 13), the
# payload below IS valid JSON: only the refusal to take the cookie for changes protects it.
FORGED = [
    ("PUT", f"/services/dsw/api/v1/workspaces/{WS}/members/t-vic", "application/x-www-form-urlencoded",
     '{"role": "admin"}'),
    ("PUT", f"/services/dsw/api/v1/workspaces/{WS}/members/t-vic", "text/plain", '{"role": "admin"}'),
    ("DELETE", f"/services/dsw/api/v1/workspaces/{WS}/members/t-bob", "application/x-www-form-urlencoded", ""),
    ("PUT", f"/services/dsw/api/v1/workspaces/{WS}/members/t-vic/quotas/cpu", "application/x-www-form-urlencoded",
     '{"cpu": 8, "memory": "16Gi", "gpu": 0}'),
    ("PUT", f"/services/dsw/api/v1/allocations/cpu/{WS}", "text/plain", '{"cpu": 8, "memory": "16Gi", "gpu": 0}'),
]


@pytest.mark.parametrize("method,path,content_type,body", FORGED, ids=[f"{f[0]} {f[2]} {i}" for i, f in enumerate(FORGED)])
def test_forged_api_change_with_only_the_login_cookie_is_refused(rhub, method, path, content_type, body):
    before = (members(rhub), svc(rhub, "t-root", "GET", f"/workspaces/{WS}").json(),
              svc(rhub, "t-root", "GET", "/allocations").json())
    victim = "t-root" if "/allocations/" in path else "t-alice"
    r = requests.request(method, f"{rhub.url}{path}", data=body, timeout=60, allow_redirects=False,
                         headers={"Content-Type": content_type, "Origin": "http://evil.example",
                                  "Cookie": f"dsw-service-token={rhub.tokens[victim]}"})
    assert r.status_code == 401, r.text
    after = (members(rhub), svc(rhub, "t-root", "GET", f"/workspaces/{WS}").json(),
             svc(rhub, "t-root", "GET", "/allocations").json())
    assert after == before


def test_forged_page_form_without_the_csrf_token_is_refused(rhub):
    """The pages take the cookie, so their forms need the CSRF token of a page the service
    rendered (double-submit cookie, SameSite=strict): a forged form has neither."""
    before = members(rhub)
    cookie = f"dsw-service-token={rhub.tokens['t-alice']}"
    for csrf_cookie, csrf_field in (("", ""), ("", "guessed"), ("guessed", "other")):
        r = requests.post(f"{rhub.url}/services/dsw/workspaces/{WS}/members", timeout=60, allow_redirects=False,
                          data={"member": "t-vic", "role": "admin", "csrf": csrf_field},
                          headers={"Cookie": cookie + (f"; dsw-csrf={csrf_cookie}" if csrf_cookie else "")})
        assert r.status_code == 403 and "form expired" in r.json()["detail"], r.text
    assert members(rhub) == before


def page_form(h, user, path, fields):
    """A member's own browser: their login cookie and a CSRF pair they hold themselves."""
    return requests.post(f"{h.url}/services/dsw/{path}", data={**fields, "csrf": "mine"}, timeout=60,
                         allow_redirects=False,
                         headers={"Cookie": f"dsw-service-token={h.tokens[user]}; dsw-csrf=mine"})


@pytest.mark.parametrize("role", ROLES)
def test_page_forms_obey_the_same_roles_as_the_api(rhub, role):
    """The pages run the API's operations: a member who may not manage members or caps gets the
    refusal on the page and changes nothing, whatever form they post."""
    user = USERS_ROLE[role]
    before = (members(rhub), svc(rhub, "t-root", "GET", f"/workspaces/{WS}").json())
    add = page_form(rhub, user, f"workspaces/{WS}/members", {"member": "t-formie", "role": "admin"})
    cap = page_form(rhub, user, f"workspaces/{WS}/quotas",
                    {"member": "t-bob", "group": "cpu", "cpu": "1", "memory": "1Gi", "gpu": "0"})
    alloc = page_form(rhub, user, "admin/allocations", {"ws": WS, "group": "cpu", "cpu": "8", "memory": "16Gi"})
    assert alloc.status_code == 303 and "error=only+platform+admins" in alloc.headers["location"], alloc.text
    if role in ("owner", "admin"):
        assert add.status_code == 303 and "message=" in add.headers["location"], add.headers
        assert members(rhub)["t-formie"] == "admin"
        assert cap.status_code == 303 and "message=" in cap.headers["location"]
        rm = page_form(rhub, user, f"workspaces/{WS}/members", {"member": "t-formie", "remove": "1"})
        assert rm.status_code == 303 and "t-formie" not in members(rhub)
        return
    assert add.status_code == 303 and "error=" in add.headers["location"] and "may+not" in add.headers["location"]
    assert cap.status_code == 303 and "error=" in cap.headers["location"]
    assert (members(rhub), svc(rhub, "t-root", "GET", f"/workspaces/{WS}").json()) == before
