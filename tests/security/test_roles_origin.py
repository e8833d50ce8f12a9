"""Issue 9, finding 3 (service side), on the hub as the one-machine configuration starts it
without subdomains: every user server shares the hub's origin, so sharing an instance is
refused with the reason, and changes sent from another origin are refused. No container is
needed: the refusals come before any instance is looked at."""

from __future__ import annotations

import pytest
import requests

from tests.integration.conftest import engine, engine_url, make_catalog  # noqa: F401 (fixtures)
from tests.integration.hubproc import Hub

pytestmark = pytest.mark.integration
WS = "ovision"


@pytest.fixture(scope="module")
def ohub(tmp_path_factory, engine_url):  # noqa: F811
    tmp = tmp_path_factory.mktemp("origin")
    catalog = make_catalog(tmp, platform_admins=["o-root"], workspaces=[
        {"id": WS, "members": {"o-alice": "owner", "o-bob": "developer", "o-vic": "visitor"},
         "resource_groups": ["cpu"]}])
    h = Hub(tmp / "state", catalog, engine_url, extra_env={"DSW_SERVER_LIMIT": "0"})
    h.start()
    h.tokens = {u: h.user_token(u) for u in ("o-alice", "o-bob", "o-vic", "o-root")}
    h.wait_service()
    yield h
    h.stop()


def svc(h, user, method, path, **kw):
    return requests.request(method, f"{h.url}/services/dsw/api/v1{path}", timeout=60,
                            headers={"Authorization": f"token {h.tokens[user]}", **kw.pop("headers", {})}, **kw)


def test_without_subdomains_sharing_is_refused_and_says_why(ohub):
    r = svc(ohub, "o-bob", "POST", f"/workspaces/{WS}/instances/o-bob/share", params={"server": "x"})
    assert r.status_code == 403, r.text
    assert "subdomain" in r.json()["detail"] and "origin" in r.json()["detail"]
    audit = svc(ohub, "o-root", "GET", "/audit").json()
    assert any(e["action"] == "share-instance" and e["actor"] == "o-bob" and e["outcome"] == "refused" for e in audit)
    # nor through the hub (no shares scope), with a visitor or by a share code
    hub = {"Authorization": f"token {ohub.tokens['o-bob']}"}
    assert requests.post(f"{ohub.url}/hub/api/shares/o-bob/x", json={"user": "o-vic"}, headers=hub,
                         timeout=30).status_code in (403, 404)
    assert requests.post(f"{ohub.url}/hub/api/share-codes/o-bob/x", json={}, headers=hub,
                         timeout=30).status_code in (403, 404)


def members(h):
    return {m["user"]: m["role"] for m in svc(h, "o-root", "GET", f"/workspaces/{WS}").json()["members"]}


@pytest.mark.parametrize("origin", ["http://o-bob.localhost:8000", "http://evil.example", "null"])
def test_changes_from_another_origin_are_refused(ohub, origin):
    """The exact change of the finding (member=bob&role=admin, as the owner, with the page's
    CSRF pair), and the same through the API with the owner's token."""
    before = members(ohub)
    form = requests.post(f"{ohub.url}/services/dsw/workspaces/{WS}/members", timeout=60, allow_redirects=False,
                         data={"member": "o-bob", "role": "admin", "csrf": "read-from-the-page"},
                         headers={"Origin": origin, "Cookie": f"dsw-service-token={ohub.tokens['o-alice']}; "
                                                              "dsw-csrf=read-from-the-page"})
    assert form.status_code == 403 and "cross-origin" in form.json()["detail"], form.text
    api = svc(ohub, "o-alice", "PUT", f"/workspaces/{WS}/members/o-bob", json={"role": "admin"},
              headers={"Origin": origin})
    assert api.status_code == 403
    assert members(ohub) == before == {"o-alice": "owner", "o-bob": "developer", "o-vic": "visitor"}
    # the hub's own origin is served
    ok = svc(ohub, "o-alice", "PUT", f"/workspaces/{WS}/members/o-vic", json={"role": "visitor"},
             headers={"Origin": ohub.url})
    assert ok.status_code == 200, ok.text
