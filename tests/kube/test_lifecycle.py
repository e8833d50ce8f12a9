"""DSWKubeSpawner's start/poll/stop/progress/restart through kubespawner's real client and
reflectors, against the kmock emulator (gaps filled in conftest.py)."""

from __future__ import annotations

import asyncio

import pytest
from tornado import web

from spawner_ext.catalog.models import Kind
from spawner_ext.kube.spawner import DSWKubeSpawner
from spawner_ext.spec import START_URL

from .conftest import live_objects

GROUPS = {
    "public-cpu": {"instance_type": "cpu-small", "image": "nb-cpu"},
    "gpu-a10": {"instance_type": "gpu-1", "image": "nb-gpu"},
}


def pods(emulator, namespace="dsw-vision"):
    return {p["metadata"]["name"]: p for p in live_objects(emulator, "pods")
            if p["metadata"]["namespace"] == namespace}


async def start_with_progress(spawner):
    """Start and follow progress side by side, as the hub does."""
    future = spawner.start()
    events = []

    async def follow():
        async for event in spawner.progress():
            events.append(event)

    follower = asyncio.ensure_future(follow())
    try:
        url = await future
    finally:
        await follower
    return url, events


@pytest.mark.parametrize("kind", ["notebook", "vscode", "terminal"])
@pytest.mark.parametrize("group", sorted(GROUPS))
async def test_start_poll_stop(make_spawner, kubelet, emulator, kind, group):
    spawner = make_spawner(user="bob", options={"workspace": "vision", "kind": kind, "resource_group": group,
                                                **GROUPS[group]})
    assert await spawner.poll() == 1  # nothing running yet

    url, events = await start_with_progress(spawner)
    assert url == "http://10.1.2.3:8888"
    # the kubelet's events reach the progress, each once (kubespawner's loop stopped and its last
    # pass made by DSWKubeSpawner.engine_create)
    pod_events = [e["message"] for e in events if "[Normal]" in e["message"]]
    assert pod_events and len(pod_events) == len(set(pod_events)), pod_events
    assert any("Successfully assigned" in m for m in pod_events), pod_events

    pod = pods(emulator)["dsw-bob"]
    assert pod["status"]["phase"] == "Running"
    labels = pod["metadata"]["labels"]
    assert (labels["dsw/workspace"], labels["dsw/user"], labels["dsw/kind"], labels["dsw/resource-group"]) == (
        "vision", "bob", kind, group)
    spec = pod["spec"]
    if group == "gpu-a10":
        assert spec["nodeSelector"] == {"dsw/pool": "gpu-a10", "nvidia.com/gpu.product": "nvidia-a10"}
        assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert spec["priorityClassName"] == "dsw-gpu"
        assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    else:
        assert "nodeSelector" not in spec and "tolerations" not in spec and "priorityClassName" not in spec
    start_url = START_URL[Kind(kind)]  # the same table the local backend uses
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["JUPYTERHUB_DEFAULT_URL"] == start_url

    # the objects the spawner created itself, as stored by the API, still validate
    assert emulator.namespaces["dsw-vision"]["metadata"]["labels"]["dsw/workspace"] == "vision"
    (pvc,) = live_objects(emulator, "persistentvolumeclaims")
    assert pvc["metadata"]["name"] == "dsw-home-vision.bob"
    assert pvc["metadata"]["labels"]["dsw/user"] == "bob"

    messages = [e["message"] for e in events]
    assert messages[0].startswith(f"Preparing a {kind} instance in workspace vision")
    assert any("Started container notebook" in m for m in messages)
    assert not any(e.get("failed") for e in events)

    assert await spawner.poll() is None
    await spawner.stop()
    assert "dsw-bob" not in pods(emulator)
    assert await spawner.poll() == 1
    # the home volume outlives the instance
    assert [p["metadata"]["name"] for p in live_objects(emulator, "persistentvolumeclaims")] == [
        "dsw-home-vision.bob"]


async def test_hub_restart_finds_the_running_pod(make_spawner, kubelet, emulator):
    first = make_spawner(user="alice", name="exp", options={"workspace": "vision", "kind": "terminal"})
    await first.start()
    state = first.get_state()
    assert state["namespace"] == "dsw-vision" and state["pod_name"] == "dsw-alice--exp"

    # the hub process goes away: its reflectors with it
    await DSWKubeSpawner._stop_all_reflectors()

    second = make_spawner(user="alice", name="exp")  # no user_options after a restart
    assert second.namespace != "dsw-vision"  # only the state knows where the pod lives
    second.load_state(state)
    assert await second.poll() is None
    await second.stop()
    assert pods(emulator) == {}
    assert await second.poll() == 1


async def test_image_pull_failure_is_reported_and_cleaned_up(make_spawner, kubelet, emulator):
    kubelet.missing_images.add("registry.example.com/vision/missing:1")
    spawner = make_spawner(user="alice", options={"workspace": "vision", "image": "nb-missing"})
    with pytest.raises(web.HTTPError) as caught:
        await start_with_progress(spawner)
    assert "registry.example.com/vision/missing:1 could not be pulled (ErrImagePull" in caught.value.log_message
    assert "pull secret vision-registry" in caught.value.log_message

    assert pods(emulator) == {}  # nothing left behind
    assert await spawner.poll() == 1


async def test_image_pull_failure_progress_events(make_spawner, kubelet, emulator):
    kubelet.missing_images.add("registry.example.com/vision/missing:1")
    spawner = make_spawner(user="alice", options={"workspace": "vision", "image": "nb-missing"})
    future = spawner.start()
    events = []

    async def follow():
        async for event in spawner.progress():
            events.append(event)

    follower = asyncio.ensure_future(follow())
    with pytest.raises(web.HTTPError):
        await future
    await follower
    messages = [e["message"] for e in events]
    assert any('[Warning] Failed to pull image "registry.example.com/vision/missing:1"' in m for m in messages)
    failed = [e for e in events if e.get("failed")]
    assert len(failed) == 1 and "could not be pulled" in failed[0]["message"]
    assert events[-1] is failed[0]
    assert pods(emulator) == {}


async def test_each_workspace_has_its_namespace_and_home(make_spawner, kubelet, emulator):
    for workspace in ("vision", "nlp"):
        spawner = make_spawner(user="bob", name=workspace, options={"workspace": workspace})
        await spawner.start()
        assert spawner.namespace == f"dsw-{workspace}"
        assert f"dsw-bob--{workspace}" in pods(emulator, f"dsw-{workspace}")
    assert {"dsw-vision", "dsw-nlp"} <= set(emulator.namespaces)
    homes = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in live_objects(emulator,
                                                                                       "persistentvolumeclaims")}
    assert homes == {("dsw-vision", "dsw-home-vision.bob"), ("dsw-nlp", "dsw-home-nlp.bob")}


async def test_second_start_reuses_namespace_and_home(make_spawner, kubelet, emulator):
    spawner = make_spawner(user="alice", options={"workspace": "vision"})
    _, first = await start_with_progress(spawner)
    await spawner.stop()
    _, second = await start_with_progress(spawner)
    assert any("Created home volume dsw-home-vision.alice" in e["message"] for e in first)
    assert not any("Created home volume" in e["message"] for e in second)
    assert len(live_objects(emulator, "persistentvolumeclaims")) == 1
    await spawner.stop()


async def test_refused_options_create_nothing(make_spawner, kubelet, emulator):
    spawner = make_spawner(user="nina", options={"workspace": "vision"})  # nina is not a member
    with pytest.raises(web.HTTPError) as caught:
        await spawner.start()
    assert caught.value.status_code == 403
    assert "not a member of workspace 'vision'" in caught.value.log_message
    assert live_objects(emulator, "pods") == [] and emulator.namespaces == {}


async def test_new_workspace_namespace_gets_the_network_policy(make_spawner, kubelet, emulator):
    peers = {"namespace": "dsw", "podLabels": [{"app.kubernetes.io/component": "hub"},
                                               {"app.kubernetes.io/component": "proxy"}]}
    spawner = make_spawner(user="bob", options={"workspace": "nlp"}, network_policy_peers=peers)
    await spawner.start()
    (policy,) = live_objects(emulator, "networkpolicies")
    assert policy["metadata"]["namespace"] == "dsw-nlp"
    assert [p["podSelector"]["matchLabels"] for p in policy["spec"]["ingress"][0]["from"]] == peers["podLabels"]
    # the instance pod is one the policy selects
    pod = pods(emulator, "dsw-nlp")["dsw-bob"]
    assert pod["metadata"]["labels"].items() >= policy["spec"]["podSelector"]["matchLabels"].items()
    await spawner.stop()


async def test_a_pod_that_died_is_released_once_by_the_post_stop_hook(make_spawner, kubelet, emulator,
                                                                      state_db_url):
    """JupyterHub calls no stop() for a server that died on its own, only the post-stop hook:
    that releases the failed pod and the quota reservation, once."""
    from .test_quota import reservations

    spawner = make_spawner(user="bob", name="dies", options={"workspace": "vision", "instance_type": "cpu-small"})
    await spawner.start()
    assert reservations(state_db_url) == {("bob", "dies")}
    pod = pods(emulator)["dsw-bob--dies"]
    await kubelet.patch_status(pod, {"phase": "Failed", "containerStatuses": [{
        "name": "notebook", "ready": False, "restartCount": 0, "image": pod["spec"]["containers"][0]["image"],
        "imageID": "", "state": {"terminated": {"exitCode": 137, "reason": "Error"}}}]})
    for _ in range(200):  # the reflector sees the change
        if await spawner.poll() is not None:
            break
        await asyncio.sleep(0.05)
    assert await spawner.poll() == 137
    assert "dsw-bob--dies" in pods(emulator)  # poll only reports

    await spawner.run_post_stop_hook()
    assert "dsw-bob--dies" not in pods(emulator) and reservations(state_db_url) == set()
    assert await spawner.release_instance("again") == []  # nothing left: nothing released twice
