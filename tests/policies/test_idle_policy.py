"""Per-instance idle limits through the real jupyterhub-idle-culler (its cull_arbiter_hook is
spawner_ext/idle.py), real hub and real instances: an instance past its own limit is stopped
and says so; one whose limit is "never" (no platform default, no workspace bound, no choice)
is left running by the same culler. Users start with ``ip-``."""

from __future__ import annotations

import time

import pytest
import requests

from tests.integration.conftest import cleanup_engine, engine, engine_url, make_catalog  # noqa: F401
from tests.integration.hubproc import Hub

pytestmark = pytest.mark.integration
WS = "ipws"


@pytest.fixture(scope="module")
def hub(tmp_path_factory, engine, engine_url):  # noqa: F811
    tmp = tmp_path_factory.mktemp("idlepolicy")
    cleanup_engine(engine, "ip-")
    catalog = make_catalog(tmp, platform_admins=["ip-root"], workspaces=[
        {"id": WS, "members": {"ip-ann": "developer", "ip-own": "owner"}, "resource_groups": ["cpu"]}])
    h = Hub(tmp / "state", catalog, engine_url, extra_env={"DSW_IDLE_CHECK_SECONDS": "2"})
    h.start()
    h.token_own = h.user_token("ip-own")
    h.wait_service()
    yield h
    h.stop()
    cleanup_engine(engine, "ip-")


def test_each_instance_is_culled_after_its_own_limit(hub, engine):
    assert hub.spawn("ip-ann", "short", {"workspace": WS, "kind": "terminal", "idle_minutes": 0.1}).status_code in (201, 202)
    assert hub.spawn("ip-ann", "never", {"workspace": WS, "kind": "terminal"}).status_code in (201, 202)
    # work saved in the home folder, as from the instance's terminal (the culler must not lose it)
    (short,) = engine.containers.list(filters={"label": ["dsw/user=ip-ann", "dsw/server=short"]})
    code, _ = short.exec_run(["sh", "-c", "echo results-of-the-day > ~/notes.txt"], user="1000:100")
    assert code == 0
    deadline = time.monotonic() + 90
    while (hub.server_model("ip-ann", "short") or {}).get("ready"):
        assert time.monotonic() < deadline, "the idle instance was not stopped within 90 s"
        time.sleep(1)
    hub.wait_stopped("ip-ann", "short")
    listing = requests.get(f"{hub.url}/services/dsw/api/v1/workspaces/{WS}/instances",
                           headers={"Authorization": f"token {hub.token_own}"}, timeout=30).json()
    by_name = {i["server"]: i for i in listing if i["user"] == "ip-ann"}
    last = by_name["short"]["last_stop"]
    assert last["reason"] == "idle" and last["by"] == "idle-culler", by_name["short"]
    # the same culler passed over the other one on every round since: its limit is never
    assert hub.server_model("ip-ann", "never")["ready"] and by_name["never"]["idle_minutes"] == 0
    assert engine.containers.list(filters={"label": ["dsw/user=ip-ann", "dsw/server=never"]})
    # the culled instance's container is gone, its home is not: started again, the file is there
    assert not engine.containers.list(all=True, filters={"label": ["dsw/user=ip-ann", "dsw/server=short"]})
    assert hub.spawn("ip-ann", "short", {"workspace": WS, "kind": "terminal", "idle_minutes": 60}).status_code in (201, 202)
    (short,) = engine.containers.list(filters={"label": ["dsw/user=ip-ann", "dsw/server=short"]})
    code, out = short.exec_run(["cat", "/home/jovyan/notes.txt"], user="1000:100")
    assert (code, out.decode()) == (0, "results-of-the-day\n")
