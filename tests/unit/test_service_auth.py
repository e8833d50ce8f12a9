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
