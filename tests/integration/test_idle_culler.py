"""jupyterhub-idle-culler, run by the hub as a service, stops idle instances and the
quota they held is released."""

from __future__ import annotations

import time

import pytest
import requests

from .conftest import cleanup_engine, make_catalog
from .hubproc import Hub

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def chub(tmp_path_factory, engine, engine_url):
    tmp = tmp_path_factory.mktemp("cull")
    cleanup_engine(engine, "c-")
    catalog = make_catalog(tmp, platform_admins=["c-root"], workspaces=[
        {"id": "cws", "members": {"c-alice": "developer"}, "resource_groups": ["cpu"]}])
    h = Hub(tmp / "state", catalog, engine_url, extra_env={"DSW_IDLE_TIMEOUT": "10"})
    h.start()
    h.wait_service()
    yield h
    h.stop()
    cleanup_engine(engine, "c-")


def test_idle_instance_is_stopped_and_its_quota_released(chub, engine):
    r = chub.spawn("c-alice", "idle", {"kind": "terminal"})
    assert r.status_code in (201, 202), r.text
    assert engine.containers.list(filters={"label": "dsw/user=c-alice"})
    root = chub.user_token("c-root")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        model = chub.server_model("c-alice", "idle")
        if not model or not (model.get("ready") or model.get("pending")):
            break
        time.sleep(1)
    else:
        pytest.fail("the idle instance was not stopped within 90 s")
    assert not engine.containers.list(all=True, filters={"label": "dsw/user=c-alice"})
    ws = requests.get(f"{chub.url}/services/dsw/api/v1/workspaces/cws",
                      headers={"Authorization": f"token {root}"}, timeout=30).json()
    assert ws["resource_groups"][0]["used"]["cpu"] == 0
