"""Issue 9, finding 3, in a real browser: a page served by a shared instance cannot change
anything on the DSW pages of the member who opens it.

As reproduced on the old single origin: bob (developer) shares his server, serves evil.html
from it on port 9000 (jupyter-server-proxy), alice (owner) opens it and authorises; its script
fetches the DSW workspace page, reads the CSRF token and posts member=bob&role=admin. Now bob's
server is another origin (w-bob.localhost) than the hub and its DSW pages (localhost): the
browser does not let the script read the page, and the service refuses the cross-origin post.
Headless Chromium (Debian's) through Playwright, the one-machine product with its defaults
(subdomains on), real containers. Users prefixed ``w-``."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import requests
from playwright.sync_api import sync_playwright

from tests.integration.conftest import cleanup_engine, make_catalog
from tests.integration.hubproc import Hub

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WS = "wvision"

EVIL = """<!doctype html><title>cat pictures</title><body>cats<script>
(async () => {
  const dsw = %(dsw)r;
  const out = {};
  let csrf = "";
  try {  // the finding: read alice's DSW page and its CSRF token
    const r = await fetch(dsw + "workspaces/%(ws)s", {credentials: "include"});
    const text = await r.text();
    csrf = (text.match(/name="csrf" value="([^"]+)"/) || ["", ""])[1];
    out.read = "read " + r.status;
  } catch (e) { out.read = "blocked"; }
  try {  // post the members form with her cookies (and the token, if it was read)
    const r = await fetch(dsw + "workspaces/%(ws)s/members", {method: "POST", credentials: "include",
      mode: "no-cors", headers: {"Content-Type": "application/x-www-form-urlencoded"},
      body: "member=w-bob&role=admin&csrf=" + encodeURIComponent(csrf)});
    out.form = "sent";
  } catch (e) { out.form = "blocked"; }
  try {  // the API with her login cookie
    const r = await fetch(dsw + "api/v1/workspaces/%(ws)s/members/w-bob", {method: "PUT", credentials: "include",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({role: "admin"})});
    out.api = "answered " + r.status;
  } catch (e) { out.api = "blocked"; }
  document.title = "done " + JSON.stringify(out);
})();
</script></body>"""


@pytest.fixture(scope="module")
def whub(tmp_path_factory, engine, engine_url):
    tmp = tmp_path_factory.mktemp("origins")
    cleanup_engine(engine, "w-")
    catalog = make_catalog(tmp, platform_admins=["w-root"], workspaces=[
        {"id": WS, "members": {"w-alice": "owner", "w-bob": "developer"}, "resource_groups": ["cpu"]}])
    h = Hub(tmp / "state", catalog, engine_url, subdomains=True)
    h.start()
    h.wait_service()
    yield h
    h.stop()
    cleanup_engine(engine, "w-")


def role_of(hub: Hub, user: str) -> str | None:
    r = requests.get(f"{hub.url}/services/dsw/api/v1/workspaces/{WS}", timeout=30,
                     headers={"Authorization": f"token {hub.user_token('w-root')}"})
    r.raise_for_status()
    return {m["user"]: m["role"] for m in r.json()["members"]}.get(user)


def audit(hub: Hub) -> list[dict]:
    r = requests.get(f"{hub.url}/services/dsw/api/v1/audit", timeout=30,
                     headers={"Authorization": f"token {hub.user_token('w-root')}"})
    r.raise_for_status()
    return r.json()


def test_a_shared_instances_page_cannot_change_the_dsw_pages_of_its_visitor(whub, engine):
    bob = whub.user_token("w-bob")
    # bob's server, shared with the workspace's builders (alice is one)
    r = whub.spawn("w-bob", "x", {"workspace": WS, "kind": "notebook", "instance_type": "half"})
    assert r.status_code in (201, 202), r.text
    share = requests.post(f"{whub.url}/services/dsw/api/v1/workspaces/{WS}/instances/w-bob/share",
                          params={"server": "x"}, headers={"Authorization": f"token {bob}"}, timeout=60)
    assert share.status_code in (200, 201), share.text
    # he serves a page from it on port 9000, as from his terminal
    dsw = f"{whub.url}/services/dsw/"
    put = requests.put(f"{whub.user_host('w-bob')}/user/w-bob/x/api/contents/evil.html", timeout=30,
                       headers={"Authorization": f"token {bob}"},
                       json={"type": "file", "format": "text", "content": EVIL % {"dsw": dsw, "ws": WS}})
    assert put.status_code in (200, 201), put.text
    container = next(c for c in engine.containers.list(filters={"label": "dsw/user=w-bob"}))
    container.exec_run(["python3", "-m", "http.server", "9000", "--bind", "127.0.0.1"],
                       workdir="/home/jovyan", detach=True)
    evil_url = f"{whub.user_host('w-bob')}/user/w-bob/x/proxy/9000/evil.html"
    assert evil_url.startswith("http://w-bob.localhost:")
    seen = {json.dumps(e, sort_keys=True) for e in audit(whub)}
    assert role_of(whub, "w-bob") == "developer"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(60_000)
            # alice signs in with her own password and opens her DSW workspace page (its cookie and CSRF pair)
            page.goto(f"{whub.url}/hub/login")
            page.fill("input[name=username]", "w-alice")
            page.fill("input[name=password]", whub.password("w-alice"))
            page.click("input[type=submit], button[type=submit]")
            page.wait_for_url("**/hub/**")
            page.goto(f"{dsw}workspaces/{WS}")
            assert "w-bob" in page.content()

            # she opens bob's page (authorising access to his shared server) and its script runs
            page.goto(evil_url)
            for _ in range(3):
                if page.locator("text=Authorize").count() and "cat pictures" not in page.title():
                    page.locator("input[type=submit][value*=Authorize], button:has-text('Authorize')").first.click()
                    page.wait_for_load_state()
                else:
                    break
            assert page.url.startswith(evil_url.split("?")[0]), page.url
            deadline = time.monotonic() + 60
            while not page.title().startswith("done ") and time.monotonic() < deadline:
                page.wait_for_timeout(200)
            outcome = json.loads(page.title()[len("done "):])
            # the browser kept the hub's page from the other origin: no token was read
            assert outcome["read"] == "blocked" and outcome["api"] == "blocked", outcome

            # control: the same script on the hub's origin would have done it (so the test can fail)
            same_origin = page.context.new_page()
            same_origin.goto(f"{dsw}workspaces/{WS}")
            status = same_origin.evaluate("""async (dsw) => {
                const r = await fetch(dsw + "workspaces/%s", {credentials: "include"});
                return r.status; }""" % WS, dsw)
            assert status == 200
        finally:
            browser.close()

    # nothing changed: bob is still a developer, and the audit log records no change by alice
    assert role_of(whub, "w-bob") == "developer"
    new = [e for e in audit(whub) if json.dumps(e, sort_keys=True) not in seen]
    assert not [e for e in new if e.get("target") == "w-bob" and e.get("outcome") == "ok"], new
