"""The GPU race through a real hub whose databases are a real PostgreSQL, as in the chart:
JupyterHub's own tables and the DSW state share one database (DSW_DB_URL and
DSW_STATE_DB_URL both point at it). 20 members each ask the hub's REST API for a 1-GPU
instance at once against a 4-GPU workspace allocation: every answer is 2xx or 403, none is
a 5xx, exactly 4 instances run and exactly 4 reservations are held."""

from __future__ import annotations

import concurrent.futures as cf

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from spawner_ext.catalog.db import Reservation
from tests.integration.conftest import cleanup_engine, engine, engine_url, make_catalog  # noqa: F401 - fixtures
from tests.integration.hubproc import Hub

pytestmark = pytest.mark.integration
WS = "pgrace"
MEMBERS = [f"pgr-u{i}" for i in range(20)]


def reserved(url: str) -> list[tuple[str, str]]:
    db = create_engine(url)
    try:
        with Session(db) as s:
            return sorted((r.user, r.server) for r in s.scalars(select(Reservation)))
    finally:
        db.dispose()


def test_twenty_members_race_for_four_gpus_through_the_hub(tmp_path, pg_url, engine, engine_url):  # noqa: F811
    cleanup_engine(engine, "pgr-")
    catalog = make_catalog(
        tmp_path, platform_admins=["pgr-root"],
        workspaces=[{"id": WS, "members": {m: "developer" for m in MEMBERS}, "resource_groups": ["gpu"],
                     "registry_allowlist": ["localhost/dsw"],
                     "quotas": {"gpu": {"cpu": 16, "memory": "16Gi", "gpu": 4}}}],
        instance_types=[{"id": "gpu-1", "cpu": "250m", "memory": "512Mi", "gpu": 1, "gpu_type": "test-gpu"}],
        resource_groups=[{"id": "gpu", "kind": "dedicated", "capacity": {"cpu": 32, "memory": "32Gi", "gpu": 8}}],
    )
    # No GPU on these machines: GPUs are counted by the quota but not requested from the engine.
    hub = Hub(tmp_path / "state", catalog, engine_url,
              extra_env={"DSW_DB_URL": pg_url, "DSW_STATE_DB_URL": pg_url, "DSW_ATTACH_GPUS": "0"})
    hub.start()
    try:
        # the hub makes the catalogue's members users at start (409: all of them exist already)
        assert hub.api("POST", "/users", json={"usernames": MEMBERS}).status_code in (201, 409)

        def spawn(user):
            return user, hub.api("POST", f"/users/{user}/servers/gpu", json={"workspace": WS, "kind": "terminal"},
                                 timeout=180)

        with cf.ThreadPoolExecutor(len(MEMBERS)) as pool:
            answers = dict(pool.map(spawn, MEMBERS))

        statuses = {user: r.status_code for user, r in answers.items()}
        assert all(code in (201, 202, 403) for code in statuses.values()), {
            u: (r.status_code, r.text[:200]) for u, r in answers.items()}
        admitted = sorted(u for u, code in statuses.items() if code in (201, 202))
        refused = [r for r in answers.values() if r.status_code == 403]
        assert len(admitted) == 4 and len(refused) == 16
        assert all("workspace pgrace: 4 of 4 GPUs in use in group gpu; this instance asks for 1" in r.json()["message"]
                   for r in refused)
        for user in admitted:
            hub.wait_ready(user, "gpu")
        assert sorted(c.labels["dsw/user"] for c in engine.containers.list(filters={"label": "dsw/managed=true"})
                      if c.labels.get("dsw/user", "").startswith("pgr-")) == admitted
        assert reserved(pg_url) == [(u, "gpu") for u in admitted]
        for user in admitted:
            hub.stop_server(user, "gpu")
            hub.wait_stopped(user, "gpu")
        assert reserved(pg_url) == []
    finally:
        hub.stop()
        cleanup_engine(engine, "pgr-")
