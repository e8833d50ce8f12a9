"""The pod spec DSWKubeSpawner generates really runs: `podman kube play` it (the home PVC
swapped for a host folder after validation: the spawner itself refuses host folders; podman
ignores GPU limits, nodeSelector and tolerations) and reach the server.

Skipped when podman or the managed CPU image (images/images.yaml, id notebook-cpu; or
$DSW_TEST_NOTEBOOK_IMAGE) is missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from spawner_ext.catalog import load_catalog
from spawner_ext.options import resolve

from .validation import assert_valid

ROOT = Path(__file__).resolve().parents[2]


def managed_cpu_image() -> str | None:
    if os.environ.get("DSW_TEST_NOTEBOOK_IMAGE"):  # e.g. an older build while a new one runs
        return os.environ["DSW_TEST_NOTEBOOK_IMAGE"]
    meta = yaml.safe_load((ROOT / "images" / "images.yaml").read_text())
    return next((i["image"] for i in meta["images"] if i["id"] == "notebook-cpu"), None)


def podman(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


IMAGE = managed_cpu_image()
@pytest.fixture(autouse=True)
def podman_and_image():
    """podman and the managed image come from scripts/test.sh (setup.sh, images/build.sh)."""
    if shutil.which("podman") is None or IMAGE is None or podman("image", "exists", IMAGE).returncode != 0:
        pytest.fail(f"needs podman and the managed image {IMAGE}: scripts/test.sh builds it with images/build.sh")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_generated_pod_runs_under_podman(make_spawner, catalog_path, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o777)
    spec = resolve(load_catalog(catalog_path), "alice", "", {"workspace": "vision", "kind": "notebook"})
    spec = dataclasses.replace(spec, image=IMAGE)
    spawner = make_spawner(user="alice")
    spawner.port = free_port()
    spawner.apply_spec(spec)
    pod = assert_valid(await spawner.get_pod_manifest())
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "home"]
    assert volume["persistentVolumeClaim"]["claimName"] == "dsw-home-vision.alice"
    volume.pop("persistentVolumeClaim")
    volume["hostPath"] = {"path": str(home), "type": "Directory"}  # no PVCs under podman here
    pod["metadata"]["name"] = name = f"dsw-play-{spawner.port}"
    # No hub runs here: point the server at a stand-in that answers the hub API.
    hub_port = free_port()
    for var in pod["spec"]["containers"][0]["env"]:
        if var["name"] in ("JUPYTERHUB_API_URL", "JUPYTERHUB_ACTIVITY_URL"):
            var["value"] = re.sub(r"//[^/]+/", f"//host.containers.internal:{hub_port}/", var["value"], count=1)
    async def fake_hub(request):
        return web.json_response({"version": "5.5.4"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake_hub)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", hub_port).start()
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump(pod))

    played = await asyncio.to_thread(podman, "kube", "play", str(manifest))
    try:
        assert played.returncode == 0, played.stderr
        url = f"http://127.0.0.1:{spawner.port}/api"  # jupyter_server's version endpoint, no auth
        deadline = time.monotonic() + 90
        answer = None
        while answer is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    answer = (resp.status, resp.read())
            except OSError:
                await asyncio.sleep(0.5)
        logs = podman("pod", "logs", name).stdout[-2000:] if answer is None else ""
        assert answer is not None, f"the server did not answer at {url}; logs:\n{logs}"
        assert answer[0] == 200 and b'"version"' in answer[1]
        # the home folder is the container's working directory and is writable
        assert (await asyncio.to_thread(podman, "exec", f"{name}-notebook", "touch", "/home/jovyan/ok")).returncode == 0
        assert (home / "ok").exists()
    finally:
        await asyncio.to_thread(podman, "kube", "down", str(manifest))
        await runner.cleanup()
