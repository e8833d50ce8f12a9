"""The service takes its login cookie only where a forged cross-site request changes nothing."""

from starlette.requests import Request

from spawner_ext.service.auth import COOKIE, _token


def request(method: str, path: str, headers: dict | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    raw.append((b"cookie", f"{COOKIE}=from-cookie".encode()))
    return Request({"type": "http", "method": method, "path": path, "headers": raw, "query_string": b""})


def test_cookie_is_not_enough_to_change_things_through_the_api():
    assert _token(request("PUT", "/services/dsw/api/v1/allocations/g/ws")) is None
    assert _token(request("POST", "/services/dsw/api/v1/workspaces/ws/instances/a/stop")) is None


def test_cookie_serves_reads_and_pages_header_serves_everything():
    assert _token(request("GET", "/services/dsw/api/v1/workspaces")) == "from-cookie"
    assert _token(request("POST", "/services/dsw/workspaces/ws/members")) == "from-cookie"  # form, CSRF-checked
    assert _token(request("PUT", "/services/dsw/api/v1/allocations/g/ws",
                          {"Authorization": "token abc"})) == "abc"


# --- hub scopes of workspace roles (issue 9, findings 2 and 11) ---------------------------
def test_no_workspace_role_holds_a_server_or_share_scope_on_anyone_else():
    """Server scopes only on the member's own servers (``!user``), shares on nobody's:
    stopping/restarting others and sharing go through the DSW service."""
    from spawner_ext.rbac import role_scopes
    from spawner_ext.roles import Role

    for role in Role:
        for s in role_scopes("vision", role):
            base, _, filt = s.partition("!")
            if base in ("servers", "admin:servers", "delete:servers", "access:servers", "admin:server_state"):
                assert filt == "user", (role, s)
            assert not base.startswith(("shares", "users:shares", "groups:shares")), (role, s)


# --- cross-origin state changes (issue 9, finding 3, service side) -------------------------
def call(middleware, method: str, path: str, headers: dict) -> int:
    import asyncio

    sent = []

    async def inner(scope, receive, send):
        sent.append(200)

    async def send(message):
        if message["type"] == "http.response.start":
            sent.append(message["status"])

    async def receive():
        return {"type": "http.request", "body": b""}

    mw = middleware(inner, "/services/dsw/")
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    asyncio.run(mw({"type": "http", "method": method, "path": path, "headers": raw, "scheme": "http"}, receive, send))
    return sent[0]


def test_state_changes_from_another_origin_are_refused(monkeypatch):
    from spawner_ext.service.app import SameOrigin

    monkeypatch.setenv("DSW_PUBLIC_URL", "http://localhost:8000/")
    monkeypatch.setenv("JUPYTERHUB_PUBLIC_URL", "http://dsw.services.localhost:8000/services/dsw/")
    page = "/services/dsw/workspaces/vision/members"
    api = "/services/dsw/api/v1/workspaces/vision/members/bob"
    host = {"Host": "localhost:8000"}
    # a user's server on its own host, another site, a sandboxed frame
    for bad in ("http://bob.localhost:8000", "http://evil.example", "null"):
        assert call(SameOrigin, "POST", page, {**host, "Origin": bad}) == 403
        assert call(SameOrigin, "PUT", api, {**host, "Origin": bad}) == 403
        assert call(SameOrigin, "DELETE", api, {**host, "Origin": bad}) == 403
    assert call(SameOrigin, "POST", page, {**host, "Referer": "http://bob.localhost:8000/user/bob/x/evil.html"}) == 403
    # the hub's pages and the service's own pages (its own host with subdomains); token clients
    assert call(SameOrigin, "POST", page, {**host, "Origin": "http://localhost:8000"}) == 200
    assert call(SameOrigin, "POST", page, {**host, "Origin": "http://dsw.services.localhost:8000"}) == 200
    assert call(SameOrigin, "PUT", api, {**host, "Referer": "http://localhost:8000/services/dsw/workspaces/v"}) == 200
    assert call(SameOrigin, "PUT", api, host) == 200
    assert call(SameOrigin, "GET", page, {**host, "Origin": "http://evil.example"}) == 200  # reads change nothing


def test_without_a_configured_public_url_the_request_host_is_the_origin(monkeypatch):
    from spawner_ext.service.app import SameOrigin

    for name in ("DSW_PUBLIC_URL", "JUPYTERHUB_PUBLIC_URL", "JUPYTERHUB_PUBLIC_HUB_URL"):
        monkeypatch.delenv(name, raising=False)
    page = "/services/dsw/workspaces/vision/members"
    assert call(SameOrigin, "POST", page, {"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:8000"}) == 200
    assert call(SameOrigin, "POST", page, {"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:9000"}) == 403
