"""Spawn-to-ready through the hub vs. bare `podman run` + server-ready, interleaved.

    .venv/bin/python benchmarks/spawn_latency.py [--runs 20]

Hub: POST /hub/api/users/<u>/servers/<s> until /user/<u>/<s>/api/status answers 200
through the proxy. Bare: `podman run -d -p 127.0.0.1::8888 <image> jupyter lab` until
/api/status answers 200. Prints both medians, the ratio and the hub's resident memory.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.conftest import cleanup_engine, make_catalog, managed_image  # noqa: E402
from tests.integration.hubproc import Hub  # noqa: E402


def wait_200(url: str, headers: dict | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, headers=headers, timeout=2, allow_redirects=False).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.02)
    raise TimeoutError(url)


def hub_run(hub: Hub, token: str, i: int) -> float:
    t0 = time.perf_counter()
    r = hub.api("POST", f"/users/t-alice/servers/b{i}", json={"kind": "notebook"}, timeout=120)
    r.raise_for_status()
    wait_200(f"{hub.url}/user/t-alice/b{i}/api/status", {"Authorization": f"token {token}"})
    elapsed = time.perf_counter() - t0
    hub.stop_server("t-alice", f"b{i}")
    hub.api("DELETE", f"/users/t-alice/servers/b{i}", json={"remove": True})
    return elapsed


def bare_run(image: str) -> float:
    t0 = time.perf_counter()
    cid = subprocess.run(
        ["podman", "run", "-d", "-p", "127.0.0.1::8888", "--cpus", "1", "--memory", "1g", image,
         "jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--ServerApp.token=bench", "--no-browser"],
        check=True, capture_output=True, text=True).stdout.strip()
    port = subprocess.run(["podman", "port", cid, "8888/tcp"], check=True, capture_output=True,
                          text=True).stdout.strip().rsplit(":", 1)[1]
    wait_200(f"http://127.0.0.1:{port}/api/status?token=bench")
    elapsed = time.perf_counter() - t0
    subprocess.run(["podman", "rm", "-f", "-t", "0", cid], check=True, capture_output=True)
    return elapsed


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    import docker
    engine_url = subprocess.run([str(ROOT / "scripts" / "engine.sh")], check=True, capture_output=True,
                                text=True).stdout.strip().splitlines()[-1]
    engine = docker.DockerClient(base_url=engine_url)
    image = managed_image()
    with tempfile.TemporaryDirectory() as tmp:
        hub = Hub(Path(tmp) / "state", make_catalog(Path(tmp)), engine_url)
        hub.start()
        try:
            token = hub.user_token("t-alice")
            hub_run(hub, token, 999)  # warm caches (image layers, home volume) once
            bare_run(image)
            hubs, bares = [], []
            for i in range(args.runs):
                hubs.append(hub_run(hub, token, i))
                bares.append(bare_run(image))
                print(f"run {i + 1:2d}: hub {hubs[-1]:.3f}s  bare {bares[-1]:.3f}s", flush=True)
            mem = rss_mb(hub.proc.pid)
        finally:
            hub.stop()
            cleanup_engine(engine)
    h, b = statistics.median(hubs), statistics.median(bares)
    print(f"\nmedian spawn-to-ready through the hub: {h:.3f} s")
    print(f"median bare podman run + ready:        {b:.3f} s")
    print(f"ratio hub / bare:                      {h / b:.2f} (target <= 1.10)")
    print(f"hub resident memory after {args.runs} runs:   {mem:.0f} MB")


if __name__ == "__main__":
    main()
