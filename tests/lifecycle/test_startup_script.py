"""The member's start-up script on both backends (see conftest.py: the local engine, and
DSWKubeSpawner on the kmock emulator, whose stand-in kubelet runs each pod as a podman
container and serves its log), behind a real JupyterHub and proxy: the script runs inside the
instance before the server, its lines reach the spawn progress and ``~/.dsw/startup.log``; a
failing script fails the start with its last lines and leaves nothing; an oversized one is
refused before anything is made."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from .conftest import wait_for

pytestmark = pytest.mark.integration
USER = "lc-ann"
GOOD = {"kind": "notebook", "instance_type": "half"}


def spawn_and_follow(hub, token: str, server: str, options: dict) -> tuple[requests.Response, list[dict]]:
    """Spawn as the member and read the spawn's progress stream (as the spawn-pending page does)
    from its first event to the end."""
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(r=hub.api("POST", f"/users/{USER}/servers/{server}",
                                                                token=token, json=options, timeout=120)))
    t.start()
    events: list[dict] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not events:
        resp = requests.get(f"{hub.url}/hub/api/users/{USER}/servers/{server}/progress",
                            headers={"Authorization": f"token {token}"}, stream=True, timeout=120)
        if resp.status_code != 200:
            time.sleep(0.05)
            continue
        for line in resp.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if events[-1].get("ready") or events[-1].get("failed"):
                    break
    t.join(120)
    return result["r"], events


@pytest.fixture(scope="module")
def token(backend):
    return backend.hub.user_token(USER)


def test_the_script_runs_before_the_server_and_its_output_is_shown(backend, token):
    hub = backend.hub
    script = ("sleep 1\necho \"preparing workspace $DSW_WORKSPACE\"\necho 'a warning' >&2\n"
              "python3 -c 'print(6 * 7)'\ntouch ~/.dsw/ran-before-server\n")
    r, events = spawn_and_follow(hub, token, "lc-boot", {**GOOD, "startup_script": script})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready(USER, "lc-boot")
    messages = [e.get("message", "") for e in events]
    lines = [m.removeprefix("start-up script: ") for m in messages if m.startswith("start-up script: ")]
    assert lines == ["preparing workspace lcws", "a warning", "42"], messages
    assert "The start-up script finished" in messages, messages
    assert messages.index("The start-up script finished") < messages.index(
        next(m for m in messages if m.startswith("Server ready"))), messages
    # the member finds the same lines in their home folder (read as the instance user, as a
    # terminal in the instance would)
    assert backend.run(USER, "lc-boot", ["cat", "/home/jovyan/.dsw/startup.log"]) == \
        "preparing workspace lcws\na warning\n42\n"
    # the server process (the wrapper execs it: tini's only child) does not carry the script in
    # its environment, although the instance was given it there
    server_env = backend.run(USER, "lc-boot", ["sh", "-c", "tr '\\0' '\\n' < /proc/$(pgrep -P 1)/environ"])
    assert "jupyterhub-singleuser" in backend.run(USER, "lc-boot", ["sh", "-c", "cat /proc/$(pgrep -P 1)/cmdline"])
    assert "DSW_WORKSPACE=lcws" in server_env.splitlines(), server_env
    assert "DSW_STARTUP_SCRIPT" not in server_env
    hub.api("DELETE", f"/users/{USER}/servers/lc-boot", json={"remove": True})
    wait_for(lambda: not backend.instance_exists(USER, "lc-boot"), 60, "lc-boot removed")


def test_a_failing_script_fails_the_start_with_its_last_lines_and_leaves_nothing(backend, token):
    hub = backend.hub
    script = "echo 'installing packages'\necho 'ERROR: no such package: torchh' >&2\nexit 3\n"
    r, events = spawn_and_follow(hub, token, "lc-badboot", {**GOOD, "startup_script": script})
    last = events[-1] if events else {}
    assert last.get("failed"), events
    assert "The start-up script failed with exit status 3" in last["message"], last
    assert "installing packages | ERROR: no such package: torchh" in last["message"], last
    assert "~/.dsw/startup.log" in last["message"], last
    if r.status_code >= 400:  # the start failed before the hub's own wait ended
        assert "exit status 3" in r.json()["message"], r.text
    wait_for(lambda: not (hub.api("GET", f"/users/{USER}").json().get("servers", {}).get("lc-badboot") or {})
             .get("pending"), 60, "the failed spawn ended")
    model = hub.api("GET", f"/users/{USER}").json().get("servers", {}).get("lc-badboot")
    assert not model or not model.get("ready"), model
    wait_for(lambda: not backend.instance_exists(USER, "lc-badboot"), 60, "the failed instance removed")
    assert (USER, "lc-badboot") not in backend.reservations()


def test_an_oversized_script_is_refused_and_nothing_is_made(backend, token):
    hub = backend.hub
    r = hub.api("POST", f"/users/{USER}/servers/lc-bigboot", token=token,
                json={**GOOD, "startup_script": "#" * (16 * 1024 + 1)})
    assert r.status_code == 400, r.text
    assert "startup_script: is 16385 bytes; at most 16384 (16 KiB)" in r.json()["message"], r.text
    assert "lc-bigboot" not in hub.api("GET", f"/users/{USER}").json().get("servers", {})
    assert not backend.instance_exists(USER, "lc-bigboot")
    assert (USER, "lc-bigboot") not in backend.reservations()

