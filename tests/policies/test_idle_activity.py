"""What the idle culler counts as activity, with the real jupyterhub-idle-culler, hub, proxy and
instances, all with the same 6 s limit (``idle_minutes: 0.1``; the culler looks every 2 s, and
the hub has each instance report its activity as often):

* a kernel running a cell that prints nothing (``time.sleep(600)``), started through the
  server's kernel websocket as the member, whose websocket is then closed as a browser tab is;
* a terminal, opened through the server's terminals API, running a loop that prints;
* VSCode (code-server behind jupyter-server-proxy) being typed in, in headless Chromium;

are left running, while an untouched instance in the same run is culled, twice (so the test
can fail: were any of these not counted, the same rounds that culled the control would cull
it). And the culler's own token can list users and servers but do nothing else.

Users start with ``ia-``."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import docker
import pytest
import requests
import websocket
from playwright.sync_api import expect

from tests.integration.conftest import cleanup_engine, engine, engine_url, make_catalog  # noqa: F401
from tests.browser.conftest import chromium_page
from tests.integration.hubproc import Hub

pytestmark = [pytest.mark.integration, pytest.mark.browser]
WS = "iaws"
USER = "ia-ann"
LIMIT = {"workspace": WS, "idle_minutes": 0.1}


def cleanup(engine) -> None:  # noqa: F811
    """cleanup_engine, again when another test removed one of its containers while it listed them."""
    for attempt in range(5):
        try:
            return cleanup_engine(engine, "ia-")
        except docker.errors.APIError:
            if attempt == 4:
                raise
            time.sleep(1)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, engine, engine_url):  # noqa: F811
    tmp = tmp_path_factory.mktemp("idleactivity")
    cleanup(engine)
    catalog = make_catalog(tmp, platform_admins=["ia-root"], workspaces=[
        {"id": WS, "members": {USER: "developer", "ia-own": "owner", "ia-bob": "developer"},
         "resource_groups": ["cpu"]}])
    h = Hub(tmp / "state", catalog, engine_url, extra_env={"DSW_IDLE_CHECK_SECONDS": "2"})
    h.start()
    h.wait_service()
    yield h
    h.stop()
    cleanup(engine)


@pytest.fixture(scope="module")
def browser_page():
    with chromium_page() as page:
        yield page


def ws_url(hub: Hub, path: str) -> str:
    return hub.url.replace("http://", "ws://", 1) + path


def last_activity(hub: Hub, server: str) -> datetime:
    return datetime.fromisoformat(hub.server_model(USER, server)["last_activity"].replace("Z", "+00:00"))


def run_silent_cell(hub: Hub, token: str, server: str) -> str:
    """Start ``time.sleep(600)`` in a new kernel through the kernel websocket, as the member;
    return the kernel id once the kernel says it is busy. The websocket is closed then: the
    cell runs on with no client, as after the member closed the tab."""
    base = f"/user/{USER}/{server}/api/kernels"
    r = requests.post(f"{hub.url}{base}", json={"name": "python3"}, headers={"Authorization": f"token {token}"}, timeout=60)
    assert r.status_code == 201, r.text
    kernel = r.json()["id"]
    sock = websocket.create_connection(ws_url(hub, f"{base}/{kernel}/channels"),
                                       header=[f"Authorization: token {token}"], timeout=60)
    msg_id = uuid.uuid4().hex
    sock.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": USER,
                   "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": "import time; time.sleep(600)", "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
    while True:
        m = json.loads(sock.recv())
        if (m["msg_type"] == "status" and m["parent_header"].get("msg_id") == msg_id
                and m["content"]["execution_state"] == "busy"):
            break
    sock.close()
    return kernel


class PrintingTerminal:
    """A terminal opened through the terminals API, its websocket kept open and read (as
    JupyterLab's terminal does), running a loop that prints a line a second."""

    def __init__(self, hub: Hub, token: str, server: str):
        r = requests.post(f"{hub.url}/user/{USER}/{server}/api/terminals", headers={"Authorization": f"token {token}"}, timeout=60)
        assert r.status_code == 200, r.text
        self.sock = websocket.create_connection(
            ws_url(hub, f"/user/{USER}/{server}/terminals/websocket/{r.json()['name']}"),
            header=[f"Authorization: token {token}"], timeout=60)
        self.ticks = 0
        self.sock.send(json.dumps(["stdin", "while true; do echo tick-$((6*7)); sleep 1; done\r"]))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        try:
            while True:
                kind, *rest = json.loads(self.sock.recv())
                if kind == "stdout" and "tick-42" in rest[0]:
                    self.ticks += 1
        except Exception:
            pass

    def close(self):
        self.sock.close()


class Touching:
    """While the instances start and their work is set up (longer than their 6 s limit), an
    API request to each ready one every second keeps it from being culled meanwhile."""

    def __init__(self, hub: Hub, token: str, servers: list[str]):
        self.hub, self.token, self.servers = hub, token, servers
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def touch(self, server: str) -> int:
        return requests.get(f"{self.hub.url}/user/{USER}/{server}/api/contents",
                            headers={"Authorization": f"token {self.token}"}, timeout=30).status_code

    def _run(self):
        while not self.done.wait(1):
            for server in self.servers:
                try:
                    self.touch(server)
                except requests.RequestException:
                    pass

    def stop(self):
        self.done.set()
        self.thread.join()


def sign_in(page, hub: Hub) -> None:
    password = hub.password(USER)
    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", password)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url("**/hub/**")


def open_vscode(page, hub: Hub, server: str) -> None:
    """Open the instance's VSCode in Chromium (signed in as the member) and a new text editor."""
    page.goto(f"{hub.url}/user/{USER}/{server}/vscode/")
    expect(page.locator(".monaco-workbench")).to_be_visible(timeout=120_000)
    trust = page.get_by_role("button", name="Yes, I trust the authors")
    try:
        trust.click(timeout=5_000)
    except Exception:
        pass  # no workspace-trust prompt
    page.keyboard.press("F1")
    page.keyboard.type("New Untitled Text File")
    page.get_by_role("option", name="File: New Untitled Text File").click()
    expect(page.locator(".monaco-editor .view-lines").first).to_be_visible()
    page.locator(".monaco-editor .view-lines").first.click()


def wait_culled(hub: Hub, server: str, page, deadline_s: float = 120) -> None:
    """Wait until the culler has stopped ``server``, typing in VSCode all along."""
    deadline = time.monotonic() + deadline_s
    while (hub.server_model(USER, server) or {}).get("ready"):
        assert time.monotonic() < deadline, f"the idle control {server} was not stopped within {deadline_s} s"
        page.keyboard.type("typing ")
        time.sleep(0.3)
    hub.wait_stopped(USER, server)


def test_kernel_terminal_and_vscode_keep_an_instance_alive_an_idle_one_is_culled(hub, browser_page, engine):  # noqa: F811
    """Each of the three would be culled like the control if its work did not reach the hub as
    activity: the silent cell needs the image's busy-kernel rule, all three the instances'
    short activity interval (checked: against the image without the rule the kernel's instance
    was culled with the control; without the interval an instance was culled while it was
    being set up, though touched every second). An open VSCode tab alone
    also counts (its connection keeps talking): this shows VSCode in use is seen, not that
    typing in particular is."""
    token = hub.user_token(USER)
    sign_in(browser_page, hub)
    started: list[str] = []
    setup = Touching(hub, token, started)
    for server, kind in (("kern", "notebook"), ("term", "terminal"), ("code", "vscode"), ("idle", "notebook")):
        r = hub.spawn(USER, server, {**LIMIT, "kind": kind})
        assert r.status_code in (201, 202), r.text
        started.append(server)

    kernel = run_silent_cell(hub, token, "kern")
    terminal = PrintingTerminal(hub, token, "term")
    open_vscode(browser_page, hub, "code")

    # the control's last activity comes after everything the others did to get started:
    # from here on only what each of them keeps doing can keep it from the control's fate
    setup.stop()
    assert setup.touch("idle") == 200
    wait_culled(hub, "idle", browser_page)
    control_stop = datetime.now().astimezone()
    ticks = terminal.ticks
    # the culler's next rounds would stop any of them that it saw as idle: start the control
    # again and let the culler stop it once more, with the three still at work
    assert hub.spawn(USER, "idle", {**LIMIT, "kind": "notebook"}).status_code in (201, 202)
    wait_culled(hub, "idle", browser_page)

    for server in ("kern", "term", "code"):
        model = hub.server_model(USER, server)
        assert model and model["ready"], f"{server} was stopped: {model}"
        # the hub heard of its activity after the control was first culled
        assert last_activity(hub, server) > control_stop, (server, model["last_activity"], control_stop)
        assert engine.containers.list(filters={"label": [f"dsw/user={USER}", f"dsw/server={server}"]})

    listing = requests.get(f"{hub.url}/services/dsw/api/v1/workspaces/{WS}/instances",
                           headers={"Authorization": f"token {hub.user_token('ia-own')}"}, timeout=30).json()
    by_name = {i["server"]: i for i in listing if i["user"] == USER}
    assert by_name["idle"]["last_stop"]["reason"] == "idle", by_name["idle"]
    assert all(by_name[s]["idle_minutes"] == 0.1 for s in ("kern", "term", "code", "idle"))
    # what the three were doing all along is still going on
    k = requests.get(f"{hub.url}/user/{USER}/kern/api/kernels/{kernel}", headers={"Authorization": f"token {token}"}, timeout=30)
    assert k.json()["execution_state"] == "busy", k.text
    assert terminal.ticks > ticks > 0
    assert "typing typing" in browser_page.locator(".monaco-editor .view-lines").first.inner_text().replace("\xa0", " ")
    terminal.close()


def culler_token(hub: Hub) -> str:
    """The token the hub gave the idle-culler service (a managed service: generated at start,
    handed to the culler's process in JUPYTERHUB_API_TOKEN), read from that process."""
    config = f"--config={hub.state}/idle_culler_config.py"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"jupyterhub_idle_culler" in argv and config.encode() in argv:
                env = dict(v.split(b"=", 1) for v in (proc / "environ").read_bytes().split(b"\0") if b"=" in v)
                return env[b"JUPYTERHUB_API_TOKEN"].decode()
        except OSError:
            continue
    raise AssertionError("no idle-culler process of this hub")


def test_the_cullers_token_does_only_what_culling_needs(hub):
    """The culler's token lists users with their servers and activity (what it culls on) and
    nothing more: it cannot create or change users, make tokens, start servers, reach a
    member's server or the DSW service's data."""
    token = culler_token(hub)
    assert hub.spawn("ia-bob", "", {"workspace": WS, "kind": "terminal"}).status_code in (201, 202)
    me = hub.api("GET", "/user", token)
    assert me.status_code == 200 and me.json()["kind"] == "service" and me.json()["name"] == "idle-culler"
    users = hub.api("GET", "/users", token)
    assert users.status_code == 200, users.text
    bob = {u["name"]: u for u in users.json()}["ia-bob"]
    assert bob["servers"][""]["ready"] and bob["servers"][""]["last_activity"]

    refused = {
        "create a user": hub.api("POST", "/users/ia-new", token),
        "make a user admin": hub.api("PATCH", "/users/ia-bob", token, json={"admin": True}),
        "delete a user": hub.api("DELETE", "/users/ia-bob", token),
        "make a token for a user": hub.api("POST", "/users/ia-bob/tokens", token, json={"note": "x"}),
        "read a user's tokens": hub.api("GET", "/users/ia-bob/tokens", token),
        "start a server": hub.api("POST", f"/users/{USER}/servers/other", token, json={"workspace": WS, "kind": "terminal"}),
        "read a service": hub.api("GET", "/services/dsw", token),
        "read groups": hub.api("GET", "/groups", token),
        "shut the hub down": hub.api("POST", "/shutdown", token),
    }
    for what, r in refused.items():
        assert r.status_code == 403, (what, r.status_code, r.text[:300])
    # a member's server and the DSW service's data are not its to reach
    files = requests.get(f"{hub.url}/user/ia-bob/api/contents", headers={"Authorization": f"token {token}"},
                         timeout=30, allow_redirects=False)
    assert files.status_code == 403, (files.status_code, files.text[:300])
    dsw = requests.get(f"{hub.url}/services/dsw/api/v1/workspaces/{WS}/instances",
                       headers={"Authorization": f"token {token}"}, timeout=30, allow_redirects=False)
    assert dsw.status_code == 403, (dsw.status_code, dsw.text[:300])
    assert hub.server_model(USER, "other") is None
    assert "ia-new" not in {u["name"] for u in hub.api("GET", "/users").json()}
