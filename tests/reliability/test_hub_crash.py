"""The hub process dies (SIGKILL: no clean-up of its own) while two instances run and a third
is half-started, and is started again on the same state (issue 12, part 1).

What must hold afterwards, as members and admins see it: the running instances answer their
owners through the proxy again (routes re-added from the hub database), the half-started one
either finished or was cleaned away (never a container running outside the hub's view), and
the quota reservations are exactly those of the instances that run -- not one more (quota
held by an instance nobody can use) and not one less (an instance running on no quota).
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from spawner_ext.local.container import container_name

from .conftest import (SMALL, alive, children, engine_any, engine_running, hub_active, reachable, reservations, wait_for,
                       workspace_usage)

pytestmark = pytest.mark.integration
HALF = 768 * 2**20  # the "half" type: 500m CPU, 768Mi


def test_hub_killed_mid_spawn_comes_back_consistent(rhub, instances, engine):
    # the third instance is held between "container created" and "server ready" by its
    # start-up script, so the kill lands in the middle of the spawn every time
    posted: dict = {}
    spawn = threading.Thread(target=lambda: posted.update(r=_post(rhub, "rl-ann", "a2", {
        **SMALL, "startup_script": "echo held-before-the-server\nsleep 25\n"})))
    spawn.start()
    wait_for(lambda: engine_any(engine, "rl-ann", "a2"), "the third instance's container is created")
    model = rhub.server_model("rl-ann", "a2")
    assert model and model["pending"] == "spawn" and not model["ready"], model
    assert ("rl-ann", "a2") in reservations(rhub)  # admitted: it holds quota while it starts

    old_proxy = int((rhub.state / "proxy.pid").read_text())
    services = {pid: cmd for pid, cmd in children(rhub.proc.pid).items() if pid != old_proxy}
    assert any("spawner_ext.service" in cmd for cmd in services.values()), services  # the DSW service
    os.kill(rhub.proc.pid, signal.SIGKILL)  # the hub alone; the proxy, services and s3fs are not signalled
    rhub.proc.wait()
    spawn.join(30)
    assert alive(old_proxy)  # configurable-http-proxy runs on as an orphan (its own session)
    rhub.start()
    rhub.wait_service()
    # the new hub found the orphan through its pid file and replaced it
    new_proxy = int((rhub.state / "proxy.pid").read_text())
    assert new_proxy != old_proxy and alive(new_proxy) and not alive(old_proxy)

    # the running instances answer their owners through the proxy again
    for user, server in instances:
        assert rhub.server_model(user, server)["ready"]
        wait_for(lambda: reachable(rhub, user, server), f"{user}/{server} answers through the proxy")

    # the half-started one: finished, or cleaned (no container, not listed as running)
    wait_for(lambda: not (rhub.server_model("rl-ann", "a2") or {}).get("pending"), "a2 is no longer pending")
    model = rhub.server_model("rl-ann", "a2") or {}
    if model.get("ready"):
        assert reachable(rhub, "rl-ann", "a2")
    else:
        wait_for(lambda: not engine_any(engine, "rl-ann", "a2"),
                 f"the half-started container {container_name('rl-ann', 'a2')} is removed")

    # reservations == instances the hub lists == containers that run on the engine
    def consistent():
        active = set(hub_active(rhub))
        return active == engine_running(engine) == reservations(rhub) and active
    running = wait_for(consistent, "reservations, hub and engine agree")
    assert set(instances) <= running
    used = workspace_usage(rhub)
    assert used["memory"] == HALF * len(running) and used["cpu"] == pytest.approx(0.5 * len(running)), used

    if ("rl-ann", "a2") in running:  # leave the next tests two instances, as the fixture promised
        rhub.stop_server("rl-ann", "a2")
        assert ("rl-ann", "a2") not in reservations(rhub)

    # last (the checks above are the members' view): no service of the killed hub lives on beside
    # the new hub's (a second idle culler, a stale DSW service or relay); each must die with the
    # hub that started it
    try:
        wait_for(lambda: not [pid for pid in services if alive(pid)],
                 f"the killed hub's services exit: {services}", timeout=15)
    finally:
        for pid in services:  # this test's own processes: none is left behind either way
            if alive(pid):
                os.kill(pid, signal.SIGTERM)


def _post(hub, user, server, options):
    try:
        return hub.api("POST", f"/users/{user}/servers/{server}", json=options, timeout=60)
    except Exception as exc:  # the hub died under the request
        return exc
