"""Quota admission on a real SQLite database: limits, messages, atomicity, release."""

import copy
import threading

import pytest

from spawner_ext import quota
from spawner_ext.catalog import load_catalog
from spawner_ext.catalog.db import Allocation, MemberQuota, sessions
from spawner_ext.options import resolve
from spawner_ext.resources import Resources
from tests.conftest import BASE_CATALOG


@pytest.fixture
def setup(write_catalog, tmp_path):
    data = copy.deepcopy(BASE_CATALOG)
    data["workspaces"][0]["quotas"] = {"gpu-a10": {"cpu": 64, "memory": "240Gi", "gpu": 4}}
    data["resource_groups"][1]["capacity"]["gpu"] = 8
    data["workspaces"][0]["members"].update({f"u{i}": "developer" for i in range(20)})
    cat = load_catalog(write_catalog(data))
    return cat, sessions(f"sqlite:///{tmp_path}/dsw.sqlite")


def gpu_spec(cat, user, server="s"):
    return resolve(cat, user, server, {"workspace": "vision", "image": "nb-gpu", "resource_group": "gpu-a10"})


def test_concurrent_admissions_never_exceed_the_quota(setup):
    cat, sess = setup
    admitted, refused, barrier = [], [], threading.Barrier(20)

    def one(i):
        barrier.wait()
        try:
            quota.admit(sess, cat, gpu_spec(cat, f"u{i}"))
            admitted.append(i)
        except quota.QuotaExceeded as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(admitted) == 4 and len(refused) == 16
    assert "workspace vision: 4 of 4 GPUs in use in group gpu-a10; this instance asks for 1" in refused


def test_release_frees_quota(setup):
    cat, sess = setup
    for i in range(4):
        quota.admit(sess, cat, gpu_spec(cat, f"u{i}"))
    with pytest.raises(quota.QuotaExceeded):
        quota.admit(sess, cat, gpu_spec(cat, "u9"))
    quota.release(sess, "u0", "s")
    quota.admit(sess, cat, gpu_spec(cat, "u9"))


def test_restarting_the_same_server_does_not_double_count(setup):
    cat, sess = setup
    for _ in range(6):
        quota.admit(sess, cat, gpu_spec(cat, "u1"))
    with sess() as s:
        assert quota.usage(s, "gpu-a10", workspace="vision").gpu == 1


def test_database_allocation_overrides_yaml_and_member_cap(setup):
    cat, sess = setup
    with sess() as s, s.begin():
        s.add(Allocation(workspace="vision", resource_group="gpu-a10", cpu=64, memory=2**40, gpu=2))
        s.add(MemberQuota(workspace="vision", user="u1", resource_group="gpu-a10", cpu=8, memory=2**40, gpu=1))
    quota.admit(sess, cat, gpu_spec(cat, "u1", "a"))
    with pytest.raises(quota.QuotaExceeded, match="member u1 in workspace vision: 1 of 1 GPUs"):
        quota.admit(sess, cat, gpu_spec(cat, "u1", "b"))
    quota.admit(sess, cat, gpu_spec(cat, "u2"))
    with pytest.raises(quota.QuotaExceeded, match="workspace vision: 2 of 2 GPUs"):
        quota.admit(sess, cat, gpu_spec(cat, "u3"))


def test_group_capacity_limits_all_workspaces(setup):
    cat, sess = setup
    # public-cpu has 8 CPUs and no allocations: the group's capacity is the limit
    for i in range(8):
        quota.admit(sess, cat, resolve(cat, f"u{i}", "c", {"workspace": "vision", "instance_type": "cpu-small"}))
    with pytest.raises(quota.QuotaExceeded, match="resource group public-cpu: 8 of 8 CPUs in use; this instance asks for 1"):
        quota.admit(sess, cat, resolve(cat, "nina", "c", {"instance_type": "cpu-small"}))


def test_yaml_quotas_over_capacity_are_refused_at_load(write_catalog):
    from spawner_ext.catalog import CatalogError
    data = copy.deepcopy(BASE_CATALOG)
    data["workspaces"][0]["quotas"] = {"gpu-a10": {"cpu": 1, "memory": "1Gi", "gpu": 3}}
    data["workspaces"][1]["resource_groups"].append("gpu-a10")
    data["workspaces"][1]["quotas"] = {"gpu-a10": {"cpu": 1, "memory": "1Gi", "gpu": 2}}
    with pytest.raises(CatalogError, match=r"resource_groups\[1\].capacity.gpu: workspace quotas add up to 5 but the group has 4"):
        load_catalog(write_catalog(data))


def test_a_lowered_allocation_refuses_only_what_it_is_over(setup):
    """An admin lowers the GPU allocation below what runs: GPU requests are refused with the
    real numbers, a CPU-only instance in the same group is still admitted."""
    cat, sess = setup
    quota.admit(sess, cat, gpu_spec(cat, "u1"))
    quota.admit(sess, cat, gpu_spec(cat, "u2"))
    with sess() as s, s.begin():
        s.add(Allocation(workspace="vision", resource_group="gpu-a10", cpu=64, memory=2**40, gpu=1))
    with pytest.raises(quota.QuotaExceeded, match="workspace vision: 2 of 1 GPUs in use in group gpu-a10; this instance asks for 1"):
        quota.admit(sess, cat, gpu_spec(cat, "u3"))
    cpu_only = resolve(cat, "u3", "c", {"workspace": "vision", "resource_group": "gpu-a10", "instance_type": "cpu-small"})
    assert cpu_only.gpu == 0
    quota.admit(sess, cat, cpu_only)
    with sess() as s:
        assert quota.usage(s, "gpu-a10", workspace="vision") == Resources(cpu=2 * 8 + 1, memory=2 * 30 * 2**30 + 2 * 2**30, gpu=2)
