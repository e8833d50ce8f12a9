"""Quota admission under a real race, on SQLite and on a real PostgreSQL: 20 one-GPU
admissions released together by one barrier against a workspace allocation of 4 GPUs.
Each worker opens its own engine and connection, as the hub and its DSW service do; the
workers are threads of the test process, or threads of five separate processes. Exactly 4 are admitted; the 16 others are clean refusals that name the
GPUs in use; nothing else is raised (a lost race used to be a serialization failure, a
500 upstream); exactly 4 reservation rows remain."""

from __future__ import annotations

import copy
import multiprocessing
import threading

import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from spawner_ext import quota
from spawner_ext.catalog import load_catalog
from spawner_ext.catalog.db import Reservation, open_engine, sessions
from spawner_ext.options import resolve
from tests.conftest import BASE_CATALOG

WORKERS = 20
REFUSAL = "workspace vision: 4 of 4 GPUs in use in group gpu-a10; this instance asks for 1"


@pytest.fixture
def race_catalog(write_catalog):
    data = copy.deepcopy(BASE_CATALOG)
    data["resource_groups"][1]["capacity"]["gpu"] = 8  # the workspace allocation is the binding limit
    data["workspaces"][0]["quotas"] = {"gpu-a10": {"cpu": 64, "memory": "240Gi", "gpu": 4}}
    data["workspaces"][0]["members"].update({f"race{i}": "developer" for i in range(WORKERS)})
    return write_catalog(data)


def _admit_one(url, catalog_path, user, barrier, results):
    """One spawn's admission with its own engine and connection; reports what it saw."""
    engine = open_engine(url)
    try:
        catalog = load_catalog(catalog_path)
        spec = resolve(catalog, user, "gpu", {"workspace": "vision", "image": "nb-gpu", "resource_group": "gpu-a10",
                                              "instance_type": "gpu-1"})
        barrier.wait()
        quota.admit(sessionmaker(engine, expire_on_commit=False), catalog, spec)
        results.put((user, "admitted", ""))
    except quota.QuotaExceeded as exc:
        results.put((user, "refused", str(exc)))
    except Exception as exc:  # any other outcome is the defect this test looks for
        results.put((user, "error", f"{type(exc).__name__}: {exc}"))
    finally:
        engine.dispose()


def _admit_in_threads(url, catalog_path, users, barrier, results):
    threads = [threading.Thread(target=_admit_one, args=(url, catalog_path, user, barrier, results)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.parametrize("processes", [1, 5], ids=["20-threads", "5-processes-x-4-threads"])
def test_twenty_concurrent_gpu_admissions_admit_exactly_four(state_url, race_catalog, processes):
    """One barrier for all 20 workers, whether they are threads of the test process or
    threads of separate processes (spawned: nothing shared but the database)."""
    sessions(state_url)  # schema in place before the race: the race is about admission
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
    users = [f"race{i}" for i in range(WORKERS)]
    if processes == 1:
        workers = [threading.Thread(target=_admit_in_threads, args=(state_url, str(race_catalog), users, barrier, results))]
    else:
        workers = [ctx.Process(target=_admit_in_threads,
                               args=(state_url, str(race_catalog), users[p::processes], barrier, results))
                   for p in range(processes)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in range(WORKERS)]
    for worker in workers:
        worker.join(timeout=60)

    errors = [o for o in outcomes if o[1] == "error"]
    assert errors == []
    admitted = sorted(user for user, outcome, _ in outcomes if outcome == "admitted")
    refusals = [message for _, outcome, message in outcomes if outcome == "refused"]
    assert len(admitted) == 4
    assert refusals == [REFUSAL] * 16
    with sessions(state_url)() as s:
        rows = s.scalars(select(Reservation)).all()
        assert sorted(r.user for r in rows) == admitted
        assert quota.usage(s, "gpu-a10", workspace="vision").gpu == 4


def test_a_refusal_leaves_the_reservations_as_they_were(state_url, race_catalog):
    """A refused restart of a running server must not drop that server's own reservation
    (admission deletes the old row first, inside the transaction the refusal rolls back)."""
    catalog = load_catalog(race_catalog)
    gpu = {"workspace": "vision", "image": "nb-gpu", "resource_group": "gpu-a10", "instance_type": "gpu-1"}
    for i in range(4):
        quota.admit(sessions(state_url), catalog, resolve(catalog, f"race{i}", "gpu", gpu))
    quota.admit(sessions(state_url), catalog, resolve(catalog, "race0", "gpu", gpu))  # its own server again: fits
    with pytest.raises(quota.QuotaExceeded, match=REFUSAL):
        quota.admit(sessions(state_url), catalog, resolve(catalog, "race0", "other", gpu))
    with sessions(state_url)() as s:
        assert sorted((r.user, r.server) for r in s.scalars(select(Reservation))) == [
            (f"race{i}", "gpu") for i in range(4)]
