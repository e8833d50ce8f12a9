"""The container engine's API service dies and comes back while the hub runs (issue 12,
part 2). Instances are run by the engine's own monitors (conmon), not by the API service, so
they must keep running; the hub must ride out the outage (its poll cannot tell, so it must not
declare the instance dead), refuse a spawn made during it with an error that says what is wrong
and leave nothing of it, and drive the engine again once the service is back: new spawns,
stops, and noticing an instance that died.

The test runs its own ``podman system service`` (the flags of scripts/engine.sh) on a private
socket over the same podman storage, so the shared engine other tests use is never restarted;
the ``engine`` fixture (the shared socket) sees the same containers and is the test's witness.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from spawner_ext.local.container import container_name
from tests.integration.hubproc import Hub

from tests.integration.conftest import make_catalog

from .conftest import engine_any, reachable, reservations, wait_for

pytestmark = pytest.mark.integration
USER, WS = "rl-eng", "rlengine"
OPTIONS = {"workspace": WS, "kind": "terminal", "instance_type": "half"}


class EngineService:
    """``podman system service --time=0 unix://<sock>``: started, SIGKILLed, started again."""

    def __init__(self, folder: Path):
        self.sock = folder / "podman.sock"
        self.log = folder / "podman-service.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def ping(self) -> bool:
        r = subprocess.run(["curl", "-sf", "--max-time", "3", "--unix-socket", str(self.sock), "http://d/_ping"],
                           capture_output=True)
        return r.returncode == 0

    def start(self) -> None:
        self.sock.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["podman", "system", "service", "--time=0", self.url],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.ping, f"podman service at {self.sock} answers", timeout=30)

    def ensure_up(self) -> None:
        if not self.ping():
            self.start()

    def kill(self) -> None:
        """The service process alone (its containers' conmon processes are not its to take)."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def private_engine(tmp_path_factory):
    service = EngineService(tmp_path_factory.mktemp("rl-engine"))
    service.start()
    yield service
    service.kill()


@pytest.fixture(scope="module")
def ehub(tmp_path_factory, private_engine, engine):
    tmp = tmp_path_factory.mktemp("rl-ehub")
    catalog = make_catalog(tmp, platform_admins=["rl-eroot"],
                           workspaces=[{"id": WS, "members": {USER: "owner"}, "resource_groups": ["cpu"]}])
    hub = Hub(tmp / "state", catalog, private_engine.url, extra_env={"DSW_POLL_INTERVAL": "1"})
    hub.start()
    hub.tokens = {USER: hub.user_token(USER)}
    yield hub
    private_engine.ensure_up()
    hub.stop()
    for c in engine.containers.list(all=True, filters={"label": "dsw/managed=true"}):
        if c.labels.get("dsw/user") == USER:
            c.remove(force=True)


@pytest.fixture
def outage(private_engine):
    """The engine's API service is SIGKILLed for the test's first part; ``outage.ensure_up()`` (or
    the end of the test) starts it again on the same socket."""
    private_engine.kill()
    assert not private_engine.ping()
    yield private_engine
    private_engine.ensure_up()


def test_a_running_instance_survives_an_engine_api_restart_and_the_hub_drives_it_after(
        ehub, private_engine, engine):
    assert ehub.spawn(USER, "e1", OPTIONS).status_code in (201, 202)
    e1 = engine.containers.get(container_name(USER, "e1"))
    assert reachable(ehub, USER, "e1")

    private_engine.kill()
    assert not private_engine.ping()
    # the hub polls e1 during the outage and cannot tell: it must keep it, not declare it dead
    log_before = len(ehub.log.read_text())
    wait_for(lambda: f"cannot reach the engine to poll {USER}:e1" in ehub.log.read_text()[log_before:],
             "the hub polls e1 during the outage")
    assert ehub.server_model(USER, "e1")["ready"] and reachable(ehub, USER, "e1")
    private_engine.start()

    # e1 kept running through it: same container, still answering its owner
    e1.reload()
    assert e1.status == "running" and e1.id == engine.containers.get(container_name(USER, "e1")).id
    assert ehub.server_model(USER, "e1")["ready"] and reachable(ehub, USER, "e1")
    assert reservations(ehub) == {(USER, "e1")}

    # the hub drives the engine again: a new instance starts and stops cleanly ...
    assert ehub.spawn(USER, "e3", OPTIONS).status_code in (201, 202)
    assert reachable(ehub, USER, "e3")
    ehub.stop_server(USER, "e3")
    assert not engine_any(engine, USER, "e3") and (USER, "e3") not in reservations(ehub)

    # ... and its poll notices e1 dying (its container killed behind the hub's back)
    e1.kill()
    wait_for(lambda: not (ehub.server_model(USER, "e1") or {}).get("ready"), "the hub notices e1 died")
    wait_for(lambda: not engine_any(engine, USER, "e1"), "e1's container is removed")
    wait_for(lambda: reservations(ehub) == set(), "e1's reservation is released")
    assert not reachable(ehub, USER, "e1")


def test_a_spawn_while_the_engine_api_is_down_fails_clearly_and_leaves_nothing(ehub, outage, engine):
    r = ehub.api("POST", f"/users/{USER}/servers/e2", token=ehub.tokens[USER], json=OPTIONS, timeout=120)
    assert r.status_code not in (201, 202), r.text  # the engine refuses connections: it fails at once
    message = r.json()["message"]
    model = ehub.server_model(USER, "e2") or {}
    assert not model.get("ready") and not model.get("pending"), model
    assert (USER, "e2") not in reservations(ehub)

    outage.ensure_up()
    assert not engine_any(engine, USER, "e2")
    assert reservations(ehub) == set()
    # nothing of it is in the way: the same spawn works now, and stops cleanly
    assert ehub.spawn(USER, "e2", OPTIONS).status_code in (201, 202)
    assert reachable(ehub, USER, "e2")
    ehub.stop_server(USER, "e2")
    assert not engine_any(engine, USER, "e2") and (USER, "e2") not in reservations(ehub)

    # what the member was told: that the container engine is unreachable, not a bare "error"
    assert r.status_code in (500, 503), r.text
    assert "container engine" in message.lower(), message
