"""End to end on one machine: real hub, real proxy, real containers from the managed image.

Each instance kind is spawned through the REST API and reached through the proxy.
"""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import urlparse

import pytest
import requests
import websocket

from spawner_ext.local.container import container_name

pytestmark = pytest.mark.integration


def via_proxy(hub, token, path, **kw):
    return requests.get(f"{hub.url}{path}", headers={"Authorization": f"token {token}"}, timeout=30, **kw)


def landing_path(response) -> str:
    return urlparse(response.headers["Location"]).path


@pytest.fixture(scope="module")
def alice(hub):
    return hub.user_token("t-alice")


def test_notebook_instance(hub, engine, alice):
    r = hub.spawn("t-alice", "nb", {"kind": "notebook", "instance_type": "half"})
    assert r.status_code in (201, 202), r.text
    status = via_proxy(hub, alice, "/user/t-alice/nb/api/status")
    assert status.status_code == 200 and "started" in status.json()
    # lands in JupyterLab
    landing = via_proxy(hub, alice, "/user/t-alice/nb/", allow_redirects=False)
    assert landing.status_code == 302 and landing_path(landing).endswith("/user/t-alice/nb/lab")
    # the container carries labels, limits and the home volume
    c = engine.containers.get(container_name("t-alice", "nb"))
    assert c.labels["dsw/user"] == "t-alice" and c.labels["dsw/server"] == "nb"
    assert c.labels["dsw/workspace"] == "tvision" and c.labels["dsw/kind"] == "notebook"
    assert c.attrs["HostConfig"]["NanoCpus"] == 500_000_000
    assert c.attrs["HostConfig"]["Memory"] == 768 * 2**20
    assert any(m["Name"] == "dsw-home-tvision.t-alice" and m["Destination"] == "/home/jovyan" for m in c.attrs["Mounts"])
    # the single-user server reports the limits JupyterHub's way
    env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
    assert env["CPU_LIMIT"] == "0.5" and env["DSW_INSTANCE_KIND"] == "notebook"


def test_vscode_instance(hub, alice):
    r = hub.spawn("t-alice", "code", {"kind": "vscode"})
    assert r.status_code in (201, 202), r.text
    landing = via_proxy(hub, alice, "/user/t-alice/code/", allow_redirects=False)
    assert landing_path(landing).endswith("/user/t-alice/code/vscode/")
    page = via_proxy(hub, alice, "/user/t-alice/code/vscode/")
    assert page.status_code == 200, page.text[:500]
    assert "folder=" in page.url and "/home/jovyan" in page.url
    assert "vs/workbench" in page.text or "workbench" in page.text
    # no second login: without hub credentials the request goes to the hub's login
    anon = requests.get(f"{hub.url}/user/t-alice/code/vscode/", timeout=30, allow_redirects=False)
    assert anon.status_code == 302 and "/hub/" in anon.headers["Location"]


def test_terminal_instance_runs_commands(hub, alice):
    r = hub.spawn("t-alice", "term", {"kind": "terminal"})
    assert r.status_code in (201, 202), r.text
    landing = via_proxy(hub, alice, "/user/t-alice/term/", allow_redirects=False)
    assert landing_path(landing).endswith("/user/t-alice/term/lab/workspaces/dsw-terminal")
    created = requests.post(f"{hub.url}/user/t-alice/term/api/terminals",
                            headers={"Authorization": f"token {alice}"}, timeout=30)
    assert created.status_code == 200, created.text
    name = created.json()["name"]
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{hub.port}/user/t-alice/term/terminals/websocket/{name}",
        header=[f"Authorization: token {alice}"], timeout=20)
    try:
        ws.send(json.dumps(["stdin", "echo dsw-$((6*7)) $(whoami)\r"]))
        seen, deadline = "", time.monotonic() + 20
        while "dsw-42 jovyan" not in seen and time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg[0] == "stdout":
                seen += msg[1]
        assert "dsw-42 jovyan" in seen, seen
    finally:
        ws.close()


def test_several_instances_run_at_once(hub):
    servers = hub.api("GET", "/users/t-alice").json()["servers"]
    assert {"nb", "code", "term"} <= {n for n, s in servers.items() if s["ready"]}


def test_stop_and_start_keep_files(hub, engine, alice):
    put = requests.put(f"{hub.url}/user/t-alice/nb/api/contents/keep.txt",
                       headers={"Authorization": f"token {alice}"},
                       json={"type": "file", "format": "text", "content": "still here"}, timeout=30)
    assert put.status_code in (200, 201), put.text
    hub.stop_server("t-alice", "nb")
    assert not engine.containers.list(all=True, filters={"name": container_name("t-alice", "nb")})
    assert via_proxy(hub, alice, "/user/t-alice/nb/api/status", allow_redirects=False).status_code != 200
    r = hub.spawn("t-alice", "nb", {"kind": "notebook"})
    assert r.status_code in (201, 202), r.text
    got = via_proxy(hub, alice, "/user/t-alice/nb/api/contents/keep.txt")
    assert got.status_code == 200 and got.json()["content"] == "still here"
    # the home is shared by the member's instances in the workspace
    other = via_proxy(hub, alice, "/user/t-alice/code/vscode/../api/contents/keep.txt")
    assert other.status_code == 200


def test_progress_events_reach_the_pending_page(hub, alice):
    result = {}
    t = threading.Thread(target=lambda: result.update(r=hub.spawn("t-alice", "prog", {"kind": "terminal"})))
    t.start()
    messages, deadline = [], time.monotonic() + 60
    while time.monotonic() < deadline and not messages:
        resp = requests.get(f"{hub.url}/hub/api/users/t-alice/servers/prog/progress",
                            headers={"Authorization": f"token {alice}"}, stream=True, timeout=60)
        if resp.status_code == 200:
            for line in resp.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    event = json.loads(line[5:])
                    messages.append(event.get("message", ""))
                    if event.get("ready") or event.get("failed"):
                        break
        else:
            time.sleep(0.05)
    t.join(120)
    assert result["r"].status_code in (201, 202)
    text = "\n".join(messages)
    if "Server ready" in text and len(messages) <= 2:
        pytest.fail(f"spawn finished before any progress could be read: {messages}")
    assert "Starting container" in text, messages
    hub.stop_server("t-alice", "prog")
    hub.api("DELETE", "/users/t-alice/servers/prog", json={"remove": True})


REFUSALS = [
    ("t-vic", {}, 403, "role visitor"),
    ("t-lara", {}, 403, "role labeler"),
    ("t-alice", {"image": "no-such-image"}, 400, "image: workspace 'tvision' has no image 'no-such-image'"),
    ("t-alice", {"image": "notebook-gpu"}, 400, "needs a GPU"),
    ("t-alice", {"workspace": "tnlp"}, 403, "not a member of workspace 'tnlp'"),
    ("t-alice", {"kind": "emacs"}, 400, "unknown kind"),
    ("t-alice", {"cpu": 64}, 400, "cpu: unknown option"),
]


@pytest.mark.parametrize("user,options,status,text", REFUSALS)
def test_refused_spawns_create_nothing(hub, engine, user, options, status, text):
    before = {c.name for c in engine.containers.list(all=True)}
    vols_before = {v.name for v in engine.volumes.list()}
    r = hub.api("POST", f"/users/{user}/server", json=options)
    assert r.status_code == status, r.text
    assert text in r.json()["message"]
    assert {c.name for c in engine.containers.list(all=True)} == before
    assert {v.name for v in engine.volumes.list()} == vols_before
    model = hub.server_model(user, "")
    assert not model or not (model.get("ready") or model.get("pending"))


def test_hub_restart_keeps_running_instances(hub, engine, alice):
    c_before = engine.containers.get(container_name("t-alice", "code")).id
    hub.restart()
    assert hub.server_model("t-alice", "code")["ready"]
    assert engine.containers.get(container_name("t-alice", "code")).id == c_before
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the proxy is re-populated from the database
        r = via_proxy(hub, alice, "/user/t-alice/code/api/status", allow_redirects=False)
        if r.status_code == 200:
            break
        time.sleep(0.2)
    assert r.status_code == 200


def test_instance_that_dies_is_noticed(hub, engine):
    r = hub.spawn("t-alice", "dies", {"kind": "notebook"})
    assert r.status_code in (201, 202)
    engine.containers.get(container_name("t-alice", "dies")).kill()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        # JupyterHub polls on access; asking for the user model triggers nothing, so hit the server URL
        requests.get(f"{hub.url}/user/t-alice/dies/api/status", timeout=10, allow_redirects=False)
        model = hub.server_model("t-alice", "dies")
        if not model or not model.get("ready"):
            break
        time.sleep(1)
    assert not model or not model.get("ready")
    # and its exited container does not stay behind (JupyterHub calls no stop() for it)
    deadline = time.monotonic() + 30
    while engine.containers.list(all=True, filters={"name": container_name("t-alice", "dies")}):
        assert time.monotonic() < deadline, "the dead instance's container was not removed"
        time.sleep(0.5)
