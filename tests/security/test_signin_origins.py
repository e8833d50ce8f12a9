"""Issue 9, findings 1, 3 (hub side) and 12 (hub API), tried as a hostile member would, on the
one-machine product as its defaults run it: per-user sign-in (nativeauthenticator limited to
members), user servers on their own hosts (<user>.localhost), the hub API on the container
bridge only. Real hub, proxy, DSW service and podman containers; users prefixed ``s-``."""

from __future__ import annotations

import json
import re
import socket
import stat

import pytest
import requests

from tests.integration.conftest import cleanup_engine, engine, engine_url, make_catalog  # noqa: F401
from tests.integration.hubproc import Hub

pytestmark = pytest.mark.integration

WS = "ssec"
MEMBERS = {"s-alice": "owner", "s-bob": "developer", "s-lara": "labeler", "s-olga": "ops", "s-gone": "developer",
           "s-nina": "developer"}


def catalog(tmp):
    return make_catalog(tmp, platform_admins=["s-root"], workspaces=[
        {"id": WS, "members": dict(MEMBERS), "resource_groups": ["cpu"]}])


@pytest.fixture(scope="module")
def shub(tmp_path_factory, engine, engine_url):  # noqa: F811
    tmp = tmp_path_factory.mktemp("signin")
    cleanup_engine(engine, "s-")
    h = Hub(tmp / "state", catalog(tmp), engine_url, subdomains=True)
    h.start()
    h.wait_service()
    yield h
    h.stop()
    cleanup_engine(engine, "s-")


def login_error(session: requests.Session) -> str:
    m = re.search(r'class="[^"]*alert[^"]*"[^>]*>\s*(.*?)\s*<', session.login_response.text, re.S)
    return m.group(1) if m else ""


# --- finding 1: anyone is anyone ------------------------------------------------------

def test_first_admin_password_is_printed_once_kept_0600_and_works(shub):
    password = shub.admin_password()
    log = shub.log.read_text()
    assert log.count(password) == 1 and "s-root" in log
    assert stat.S_IMODE((shub.state / "credentials.json").stat().st_mode) == 0o600
    assert set(json.loads((shub.state / "credentials.json").read_text())) == {"admin_password"}
    assert shub.login("s-root", password).logged_in
    assert not shub.login("s-root", password + "x").logged_in


def test_lara_cannot_sign_in_as_alice_with_her_own_password(shub):
    """Finding 1 as reproduced: lara (labeler) signed in as alice (owner) with the password
    every member shared. Now each has their own."""
    alice, lara = shub.password("s-alice"), shub.password("s-lara")
    assert alice != lara
    as_alice = shub.login("s-alice", lara)
    assert not as_alice.logged_in and "jupyterhub-hub-login" not in as_alice.cookies.get_dict()
    assert "Invalid username or password" in as_alice.login_response.text
    # nor by signing up again under alice's name
    again = shub.signup("s-alice", lara)
    assert "already in use" in again.text
    assert not shub.login("s-alice", lara).logged_in
    assert shub.login("s-alice", alice).logged_in and shub.login("s-lara", lara).logged_in


def test_a_signup_under_someone_elses_name_gives_nothing_until_an_admin_authorises_it(shub):
    r = shub.signup("s-olga", "laras-guess-for-olga-1")  # lara claims olga's name first
    assert "sent to the admin" in r.text
    s = shub.login("s-olga", "laras-guess-for-olga-1")
    assert not s.logged_in and "has not been authorized" in s.login_response.text
    # the first admin sees it pending and can discard it, so olga can sign up herself
    admin = shub.login_session("s-root")
    assert "s-olga" in admin.get(f"{shub.url}/hub/authorize", timeout=30).text
    assert admin.get(f"{shub.url}/hub/discard/s-olga", timeout=30).status_code == 200
    assert shub.password("s-olga") and shub.login_session("s-olga")


def test_a_page_on_a_members_host_cannot_make_an_admin_authorise_a_squatted_signup(shub):
    """nativeauthenticator authorises on GET. bob signs up under nina's name (she has not signed
    up yet), then a page on his own host navigates a signed-in admin to /hub/authorize/s-nina:
    refused, as is a discard; the hub's own Authorize page still works."""
    assert "sent to the admin" in shub.signup("s-nina", "bobs-guess-for-nina-1").text
    admin = shub.login_session("s-root")
    bob_page = shub.url.replace("://localhost", "://s-bob.localhost") + "/user/s-bob/proxy/9000/evil.html"
    for headers in ({"Sec-Fetch-Site": "same-site", "Referer": bob_page},  # a current browser
                    {"Sec-Fetch-Site": "cross-site"},
                    {"Referer": bob_page}):  # a browser without fetch metadata
        for action in ("authorize", "discard"):
            r = admin.get(f"{shub.url}/hub/{action}/s-nina", headers=headers, allow_redirects=False, timeout=30)
            assert r.status_code == 403, (action, headers, r.status_code)
    assert not shub.login("s-nina", "bobs-guess-for-nina-1").logged_in
    assert "s-nina" in admin.get(f"{shub.url}/hub/authorize", timeout=30).text  # still pending
    r = admin.get(f"{shub.url}/hub/discard/s-nina", allow_redirects=False, timeout=30,
                  headers={"Sec-Fetch-Site": "same-origin", "Referer": f"{shub.url}/hub/authorize"})
    assert r.status_code in (200, 302)
    assert shub.password("s-nina") != "bobs-guess-for-nina-1" and shub.login_session("s-nina")


def test_a_non_member_can_neither_sign_up_nor_sign_in(shub):
    r = shub.signup("s-mallory", "mallorys-own-password-1")
    assert "Something went wrong" in r.text
    assert not shub.login("s-mallory", "mallorys-own-password-1").logged_in
    assert shub.api("GET", "/users/s-mallory").status_code == 404
    # an admin authorising the name changes nothing: no account exists to authorise
    admin = shub.login_session("s-root")
    admin.get(f"{shub.url}/hub/authorize/s-mallory", timeout=30)
    assert not shub.login("s-mallory", "mallorys-own-password-1").logged_in


def test_a_removed_member_cannot_sign_in_any_more(shub):
    password = shub.password("s-gone")
    assert shub.login("s-gone", password).logged_in
    r = requests.delete(f"{shub.url}/services/dsw/api/v1/workspaces/{WS}/members/s-gone", timeout=60,
                        headers={"Authorization": f"token {shub.user_token('s-alice')}"})
    assert r.status_code in (200, 204), r.text
    assert not shub.login("s-gone", password).logged_in


def test_a_platform_admin_resets_a_password_and_a_member_cannot(shub):
    old = shub.password("s-lara")
    lara = shub.login_session("s-lara")
    # lara tries the admin reset page for alice: refused, alice's password unchanged
    own_page = lara.get(f"{shub.url}/hub/change-password", timeout=30).text  # her valid _xsrf
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', own_page).group(1)
    r = lara.post(f"{shub.url}/hub/change-password/s-alice", timeout=30, data={
        "new_password": "lara-sets-alice-1", "new_password_confirmation": "lara-sets-alice-1", "_xsrf": xsrf})
    assert r.status_code == 403 and "admin:users" in r.text
    assert not shub.login("s-alice", "lara-sets-alice-1").logged_in
    admin = shub.login_session("s-root")
    r = shub.form_post(admin, "/hub/change-password/s-lara",
                       {"new_password": "one-time-for-lara-7", "new_password_confirmation": "one-time-for-lara-7"})
    assert r.status_code == 200 and "successfully" in r.text.lower(), r.text[-1500:]
    assert not shub.login("s-lara", old).logged_in
    assert shub.login("s-lara", "one-time-for-lara-7").logged_in
    shub.passwords["s-lara"] = "one-time-for-lara-7"


def test_an_old_shared_member_password_opens_nothing(tmp_path, engine_url):  # noqa: F811
    """A state folder from before per-user sign-in: its shared member password no longer
    signs anyone in and is removed from the file; the admin's kept password still works."""
    state = tmp_path / "state"
    state.mkdir()
    old = {"admin_password": "kept-admin-password-0123456789abcdef", "user_password": "old-shared-pw"}
    (state / "credentials.json").write_text(json.dumps(old))
    h = Hub(state, catalog(tmp_path), engine_url)
    h.start()
    try:
        for user in ("s-alice", "s-bob", "s-root"):
            assert not h.login(user, "old-shared-pw").logged_in
        assert json.loads((state / "credentials.json").read_text()) == {"admin_password": old["admin_password"]}
        assert "old-shared-pw" not in h.log.read_text()
        assert h.login("s-root", old["admin_password"]).logged_in
    finally:
        h.stop()


# --- finding 3 (hub side): one origin for everything -------------------------------------

def test_user_servers_have_their_own_origin_and_never_get_the_hub_login(shub, engine):  # noqa: F811
    r = shub.spawn("s-bob", "x", {"workspace": WS, "kind": "terminal", "instance_type": "half"})
    assert r.status_code in (201, 202), r.text
    model = shub.server_model("s-bob", "x")
    assert model["url"].startswith("http://s-bob.localhost:")
    token = shub.user_token("s-bob")
    on_host = requests.get(f"{shub.user_host('s-bob')}/user/s-bob/x/api/status", timeout=30,
                           headers={"Authorization": f"token {token}"})
    assert on_host.status_code == 200, on_host.text
    # the hub's origin no longer serves it: it sends the browser to the server's own host
    on_hub = requests.get(f"{shub.url}/user/s-bob/x/api/status", allow_redirects=False, timeout=30)
    assert on_hub.status_code == 302 and on_hub.headers["location"].startswith(f"{shub.url}/hub/user/s-bob/x/")
    sent_on = requests.get(on_hub.headers["location"], allow_redirects=False, timeout=30,
                           headers={"Authorization": f"token {token}"})
    assert sent_on.status_code == 302 and sent_on.headers["location"].startswith(shub.user_host("s-bob")), \
        sent_on.headers
    # alice's hub login is a host-only cookie of localhost: a request to bob's host never carries it
    alice = shub.login_session("s-alice")
    login_cookie = next(c for c in alice.cookies if c.name == "jupyterhub-hub-login")
    assert login_cookie.domain == "localhost.local" and not login_cookie.domain_specified  # cookiejar's "localhost"
    sent = requests.Request("GET", f"{shub.user_host('s-bob')}/user/s-bob/x/proxy/9000/evil.html",
                            cookies=alice.cookies)
    assert "jupyterhub-hub-login" not in (alice.prepare_request(sent).headers.get("Cookie") or "")
    # the DSW service knows the hub's origin and that servers have their own hosts: sharing works
    share = requests.post(f"{shub.url}/services/dsw/api/v1/workspaces/{WS}/instances/s-bob/share",
                          params={"server": "x"}, headers={"Authorization": f"token {token}"}, timeout=60)
    assert share.status_code in (200, 201), share.text


# --- finding 12: the hub API listened on 0.0.0.0 ----------------------------------------------

def outside_addresses() -> list[str]:
    """This machine's addresses that are neither loopback nor a container bridge."""
    import subprocess

    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        dev, addr = line.split()[1], line.split()[3].split("/")[0]
        if dev != "lo" and not dev.startswith(("podman", "cni", "docker", "veth")):
            found.append(addr)
    return found


def test_the_hub_api_answers_instances_and_nobody_outside(shub, engine):  # noqa: F811
    if shub.server_model("s-bob", "x") is None or not shub.server_model("s-bob", "x").get("ready"):
        shub.spawn("s-bob", "x", {"workspace": WS, "kind": "terminal", "instance_type": "half"})
    assert outside_addresses(), "this test needs an address other than loopback"
    for addr in outside_addresses():
        with socket.socket() as s, pytest.raises(OSError):  # before: 0.0.0.0, answered 200 here
            s.settimeout(5)
            s.connect((addr, shub.hub_port))
    # an instance reaches it, as its own server does at start
    container = next(c for c in engine.containers.list(filters={"label": "dsw/user=s-bob"}))
    code, out = container.exec_run(["python3", "-c", (
        "import urllib.request;print(urllib.request.urlopen("
        f"'http://host.containers.internal:{shub.hub_port}/hub/api/',timeout=10).status)")])
    assert code == 0 and out.decode().strip() == "200", out
