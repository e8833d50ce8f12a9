"""API latency under load: the DSW service's read endpoints against the hub's own GET /hub/api/user.

    .venv/bin/python benchmarks/api_latency.py [--concurrency 16] [--requests 400] [--instances 4]
        [--rounds 5] [--max-seconds 60] [--profile]

A real hub (JupyterHub + configurable-http-proxy + the DSW service, hub_config as a newcomer
runs it) with a catalogue of one workspace, ten developers, an owner and a platform admin;
--instances terminal instances run in it so the instance list has rows. The load generator
(aiohttp on loopback, in this process) keeps --concurrency requests in flight on one endpoint
at a time: each endpoint gets the same concurrent load. Arms are interleaved in --rounds rounds
(each round: a burst on every endpoint in turn), so a slow moment of the machine falls on all
of them. Bounded: --requests per endpoint in all, and each burst stops after --max-seconds.

Endpoints, each as the member who would call it (tokens from the hub's API):
    hub  GET /hub/api/user                                    (a developer)       the reference
    dsw  GET /services/dsw/api/v1/workspaces/<ws>             workspace view      (a developer)
    dsw  GET /services/dsw/api/v1/workspaces/<ws>/instances   instance list       (a developer)
    dsw  GET /services/dsw/api/v1/allocations                 allocations         (the platform admin)
    hub  GET /hub/api/users?state=active                      what the instance list asks the hub

Prints per endpoint: count, errors, p50, p95, p99 (ms) and p50 / the hub's p50 (target <= 1.2),
plus the CPU seconds the hub's process group (hub, proxy, service) spent during the load.
--profile records the DSW service under py-spy during the load (raw stacks in
/tmp/dsw-api-latency.pyspy.txt). Not part of the test suite: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

import _bench as b
import aiohttp
import docker
from tests.integration.conftest import make_catalog

WS = "bnapi"


def catalogue(tmp: Path) -> Path:
    members = {f"{b.PREFIX}api{i}": "developer" for i in range(10)}
    members[f"{b.PREFIX}apiown"] = "owner"
    return make_catalog(tmp, platform_admins=[f"{b.PREFIX}apiroot"], workspaces=[
        {"id": WS, "members": members, "resource_groups": ["cpu"]}],
        resource_groups=[{"id": "cpu", "capacity": {"cpu": 64, "memory": "128Gi"}}])


def service_pid(hub_pid: int) -> int | None:
    """The DSW service: a child of the hub started as ``python -m spawner_ext.service``."""
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                args = (p / "cmdline").read_bytes().split(b"\0")
                stat = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == hub_pid and b"spawner_ext.service" in b" ".join(args):
                return int(p.name)
    return None


async def burst(session: aiohttp.ClientSession, path: str, token: str, concurrency: int, count: int,
                max_seconds: float, times: list[float], errors: list[str]) -> None:
    """``count`` GETs of one endpoint with ``concurrency`` in flight; latency in ms."""
    budget = count
    deadline = time.monotonic() + max_seconds

    async def worker():
        nonlocal budget
        while budget > 0 and time.monotonic() < deadline:
            budget -= 1
            t0 = time.perf_counter()
            async with session.get(path, headers={"Authorization": f"token {token}"}) as r:
                await r.read()
                elapsed = (time.perf_counter() - t0) * 1000
                (times.append(elapsed) if r.status == 200 else errors.append(str(r.status)))
    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def load(base: str, endpoints: list[tuple[str, str, str]], concurrency: int, per_endpoint: int,
               rounds: int, max_seconds: float):
    """Every endpoint under the same load, in interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name, _, _ in endpoints}
    errors: dict[str, list[str]] = {name: [] for name, _, _ in endpoints}
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=conn) as session:
        for _ in range(rounds):
            for name, path, token in endpoints:
                await burst(session, path, token, concurrency, max(1, per_endpoint // rounds), max_seconds,
                            times[name], errors[name])
    return times, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--requests", type=int, default=400, help="requests per endpoint")
    ap.add_argument("--instances", type=int, default=4, help="terminal instances running during the load")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=60, help="bound on each burst")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    engine_url = subprocess.run([str(b.ROOT / "scripts" / "engine.sh")], check=True, capture_output=True,
                                text=True).stdout.strip()
    engine = docker.DockerClient(base_url=engine_url, timeout=60)
    b.cleanup_engine(engine, b.PREFIX)
    tmp = Path(tempfile.mkdtemp(prefix="dsw-api-latency-"))
    hub = b.Hub(tmp / "state", catalogue(tmp), engine_url)
    hub.start()
    profiler = None
    try:
        hub.wait_service()
        dev = hub.user_token(f"{b.PREFIX}api0")
        root = hub.user_token(f"{b.PREFIX}apiroot")
        for i in range(args.instances):
            user = f"{b.PREFIX}api{i % 10}"
            r = hub.spawn(user, f"load{i}", {"workspace": WS, "kind": "terminal", "instance_type": "half"})
            assert r.status_code in (201, 202), r.text
        api = "/services/dsw/api/v1"
        endpoints = [("hub GET /hub/api/user", "/hub/api/user", dev),
                     ("dsw workspace view", f"{api}/workspaces/{WS}", dev),
                     ("dsw instance list", f"{api}/workspaces/{WS}/instances", dev),
                     ("dsw allocations", f"{api}/allocations", root),
                     # what the instance list asks the hub (as the service does, with admin's read scopes)
                     ("hub GET /hub/api/users?state=active", "/hub/api/users?state=active", root)]
        # warm-up: token caches, connection pools, the first-request imports
        asyncio.run(load(hub.url, endpoints, 4, 10, 1, 30))
        pgid = os.getpgid(hub.proc.pid)
        cpu0 = b.group_cpu_seconds(pgid)
        if args.profile:
            pid = service_pid(hub.proc.pid)
            profiler = subprocess.Popen([str(Path(b.sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
                                         "-o", "/tmp/dsw-api-latency.pyspy.txt"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        t0 = time.monotonic()
        times, errors = asyncio.run(load(hub.url, endpoints, args.concurrency, args.requests, args.rounds,
                                         args.max_seconds))
        wall = time.monotonic() - t0
        cpu = b.group_cpu_seconds(pgid) - cpu0
        if profiler:
            profiler.send_signal(2)
            profiler.wait(30)
    finally:
        hub.stop()
        b.cleanup_engine(engine, b.PREFIX)

    print(f"\nmachine: {b.machine()}; load average {b.load()}")
    print(f"{args.concurrency} requests in flight on each endpoint in turn, {args.rounds} rounds, "
          f"{args.instances} instances running; {wall:.1f} s, hub group CPU {cpu:.1f} s\n")
    print("| endpoint | n | errors | p50 ms | p95 ms | p99 ms | p50 / hub |")
    print("|---|---|---|---|---|---|---|")
    ref = b.summary(times[endpoints[0][0]])["median"]
    for name, _, _ in endpoints:
        xs = times[name]
        s = b.summary(xs)
        p99 = b.pct(xs, 99) if xs else float("nan")
        print(f"| {name} | {s['n']} | {len(errors[name])} | {s['median']:.1f} | {s['p95']:.1f} | {p99:.1f} | "
              f"{s['median'] / ref:.2f} |")
    worst = max(b.summary(times[n])["median"] / ref for n, _, _ in endpoints if n.startswith("dsw"))
    print(f"\nworst DSW p50 / hub p50: {worst:.2f} (target <= 1.2)")
    if any(errors.values()):
        print("errors:", {k: sorted(set(v)) for k, v in errors.items() if v})


if __name__ == "__main__":
    main()
