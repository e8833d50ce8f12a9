"""Quota admission on Kubernetes: DSWKubeSpawner reserves like the local backend (after the
spec is resolved, before anything is created) and releases on stop and on a failed start."""

from __future__ import annotations

import pytest
from tornado import web

from spawner_ext import quota
from spawner_ext.catalog import load_catalog
from spawner_ext.catalog.db import Reservation, sessions
from spawner_ext.options import resolve

from .conftest import live_objects

GPU = {"workspace": "vision", "image": "nb-gpu", "resource_group": "gpu-a10", "instance_type": "gpu-1"}


def reservations(state_db_url) -> set[tuple[str, str]]:
    with sessions(state_db_url)() as s:
        return {(r.user, r.server) for r in s.query(Reservation).all()}


def fill(catalog_path, state_db_url, count: int) -> None:
    """Reserve ``count`` GPU instances of other servers, as running instances would."""
    catalog = load_catalog(catalog_path)
    for i in range(count):
        quota.admit(sessions(state_db_url), catalog, resolve(catalog, "alice", f"busy{i}", GPU))


async def test_refused_admission_creates_nothing_and_stop_releases(make_spawner, kubelet, emulator,
                                                                    catalog_path, state_db_url):
    fill(catalog_path, state_db_url, 3)  # gpu-a10 has 4 GPUs
    first = make_spawner(user="bob", name="one", options=GPU)
    await first.start()
    assert ("bob", "one") in reservations(state_db_url)
    pods_before = len(live_objects(emulator, "pods"))

    second = make_spawner(user="olga", name="two", options=GPU)
    with pytest.raises(web.HTTPError) as caught:
        await second.start()
    assert caught.value.status_code == 403
    assert "resource group gpu-a10: 4 of 4 GPUs in use; this instance asks for 1" in caught.value.log_message
    assert len(live_objects(emulator, "pods")) == pods_before  # nothing created for olga
    assert not [p for p in live_objects(emulator, "persistentvolumeclaims")
                if p["metadata"]["labels"]["dsw/user"] == "olga"]
    assert ("olga", "two") not in reservations(state_db_url)

    await first.stop()  # releases bob's GPU
    assert ("bob", "one") not in reservations(state_db_url)
    await second.start()
    assert ("olga", "two") in reservations(state_db_url)
    await second.stop()
    assert reservations(state_db_url) == {("alice", f"busy{i}") for i in range(3)}


async def test_refusal_on_a_fresh_cluster_creates_no_namespace(make_spawner, kubelet, emulator,
                                                               catalog_path, state_db_url):
    fill(catalog_path, state_db_url, 4)
    spawner = make_spawner(user="bob", options=GPU)
    with pytest.raises(web.HTTPError, match="403"):
        await spawner.start()
    assert emulator.namespaces == {} and live_objects(emulator, "pods") == []
    assert live_objects(emulator, "persistentvolumeclaims") == []


async def test_failed_image_pull_releases_the_reservation(make_spawner, kubelet, emulator, state_db_url):
    kubelet.missing_images.add("registry.example.com/vision/missing:1")
    spawner = make_spawner(user="alice", name="broken", options={"workspace": "vision", "image": "nb-missing"})
    with pytest.raises(web.HTTPError, match="could not be pulled"):
        await spawner.start()
    assert reservations(state_db_url) == set()
    assert live_objects(emulator, "pods") == []
    # the released capacity is usable again
    ok = make_spawner(user="alice", name="ok", options={"workspace": "vision"})
    await ok.start()
    assert reservations(state_db_url) == {("alice", "ok")}
    await ok.stop()
    assert reservations(state_db_url) == set()
