"""The Kubernetes path at scale (issue 12, benchmark 4): 1,000 instances across 20 workspaces.

    .venv/bin/python benchmarks/kube_scale.py [--levels 0 250 500 1000] [--reps 20]
        [--concurrency 25] [--db-url URL] [--tracemalloc] [--profile DIR] [--quick]

Targets: the cost of one admission does not grow with the number of running instances
(cost at 1,000 / cost at 0); the hub holds <= 50 MB per 1,000 instances.

What stands in for what (no Kubernetes API server can run here, see docs/benchmarks.md):

* The API server is the kmock emulator with the gaps tests/kube/conftest.py fills
  (``DSWEmulator``: watch=True, metadata, resourceVersion-numbered watches, namespaces,
  discovery), served in a CHILD process (this script with ``--serve-emulator``), so what the
  emulator stores (every pod, event and watch change) is not counted in the hub's memory and
  its CPU is not this process's.
* The kubelet is tests/kube/conftest.py's ``FakeKubelet`` in that child: it posts the
  Scheduled/Pulling/Pulled/Started events and patches each new pod Running with a pod IP.
  No container runs; nothing is probed over HTTP (DSWKubeSpawner's start ends when kubespawner
  sees the pod Running, as on a cluster).
* One more gap filled here only: kmock keeps every request it served and finds each new one
  by scanning that record, so it slowed down with every request (quadratic over a run); the
  child's record shows each request only itself.
* The hub is NOT a real JupyterHub (1,000 servers would not fit 2 cores beside the rest):
  DSWKubeSpawner instances are built in this process the way tests/kube/conftest.py's
  ``make_spawner`` builds them (kubespawner's real client and shared per-namespace reflectors,
  the real lifecycle: options -> spec, quota.admit, instance record, namespace/PVC, pod create,
  wait for Running), held in a dict as the hub's ``user.spawners`` would hold them. The user and
  server-record stand-ins are small plain objects, not Mocks (a Mock per spawner would weigh
  more than the spawner). Not counted therefore: JupyterHub's own per-server objects (its ORM
  rows for users, spawners, servers and tokens, the User wrapper, the proxy's routes).
* The state database is a SQLite file in a temp dir (``--db-url`` for PostgreSQL: rows of
  users starting ``ks-`` are deleted before and after).

At each level N (instances running, brought up through ``DSWKubeSpawner.start()``,
``--concurrency`` at a time) the script measures:

* **admit** (``--admit-reps`` times): ``quota.admit`` alone for one more instance (wall time),
  released again (not timed) so N stays N;
* **start** (``--reps`` times): a full ``DSWKubeSpawner.start()`` of one more instance against the emulator
  (the probe instances rotate over the workspaces), stopped again (not timed);

the CPU time of one full re-list by every reflector (kubespawner's per-namespace pod and event
reflectors list their namespace again whenever a watch has been quiet for 10 s; kmock never
ends a watch, so here they would not, and this is measured directly), and the process's
resident memory (VmRSS, after ``gc.collect()``) with the N instances held. "start CPU" is this
process's CPU time during one start, background included (a reflector's watch restart builds
a new API client and SSL context, ~40 ms, whenever it falls inside a start).
MB per 1,000 instances is the least-squares slope of RSS over N. ``--tracemalloc`` adds what
Python allocated (traced) at each level, and the top allocation sites at the largest level
(slower; for finding what holds memory, not for the figures). ``--profile DIR`` writes
cProfile stats of the admissions and starts at the first and last level.

Everything is named ``ks-`` (workspaces, users, resource group). Not part of the test suite:
nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import cProfile
import gc
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import _bench as b
import yaml

PREFIX = "ks-"
GROUP = f"{PREFIX}cpu"
WORKSPACES = [f"{PREFIX}ws{i:02d}" for i in range(20)]
USERS_PER_WS = 10  # each workspace's developers; instances are named servers spread over them
OPTIONS = {"image": "nb-cpu", "resource_group": GROUP, "instance_type": f"{PREFIX}half", "kind": "notebook"}


# --- the emulator, in a child process ----------------------------------------------------------
class CurrentRequestOnly:
    """Stands in for kmock's request record: remembers the count, and for iteration only the
    request of the task iterating (each request is served in its own aiohttp task)."""

    def __init__(self):
        self._count = 0
        self._current = contextvars.ContextVar("ks_current_request", default=None)

    def append(self, request) -> None:
        self._count += 1
        self._current.set(request)

    def __len__(self) -> int:
        return self._count

    def __iter__(self):
        request = self._current.get()
        return iter(() if request is None else (request,))


def serve_emulator() -> None:
    """Child mode: DSWEmulator + FakeKubelet on a free port; prints the URL, runs until stdin closes."""
    import kmock

    from tests.integration.hubproc import free_port
    from tests.kube.conftest import DSWEmulator, FakeKubelet, declare

    async def main():
        async with DSWEmulator() as handler, kmock.Server(handler, port=free_port()):
            declare(handler)
            # kmock records every request and matches each new one against its reactions by scanning
            # that record (the request is found by identity): quadratic over a run, and the emulator,
            # not the hub, became what a start waited for (3 s a start at 100 instances). Each request
            # sees only itself (it is matched in its own task, right after it is recorded).
            handler._requests = CurrentRequestOnly()
            kubelet = FakeKubelet(handler)
            task = asyncio.ensure_future(kubelet.run())
            print(str(handler.url).rstrip("/"), flush=True)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sys.stdin.read)  # the parent closes our stdin to stop us
            task.cancel()

    asyncio.run(main())


class Emulator:
    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-emulator"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise RuntimeError("the emulator did not start")
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# --- catalogue and spawners ----------------------------------------------------------------
def catalogue(tmp: Path, capacity_instances: int) -> Path:
    """20 workspaces of 10 developers, one shared resource group with room for every instance,
    and a YAML allocation per workspace (so admission checks all three levels it can: group,
    workspace; member caps live in the state database and there are none)."""
    per_ws = capacity_instances // len(WORKSPACES) + 1  # CPUs (and GiB); instances take 0.5 / 0.5 of each
    cap = per_ws * len(WORKSPACES)
    data = {
        "platform_admins": [f"{PREFIX}root"],
        "workspaces": [
            {"id": ws, "members": {user(ws, u): "developer" for u in range(USERS_PER_WS)},
             "resource_groups": [GROUP], "quotas": {GROUP: {"cpu": per_ws, "memory": f"{per_ws}Gi"}}}
            for ws in WORKSPACES],
        "images": [{"id": "nb-cpu", "image": "localhost/dsw/notebook-cpu:test", "accelerator": "cpu"}],
        "instance_types": [{"id": f"{PREFIX}half", "cpu": "500m", "memory": "512Mi"}],
        "resource_groups": [{"id": GROUP, "kind": "public",
                             "capacity": {"cpu": cap, "memory": f"{cap}Gi"},
                             "instance_types": [f"{PREFIX}half"]}],
    }
    path = tmp / "catalog.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def user(ws: str, u: int) -> str:
    return f"{ws}-u{u}"


class BenchUser:
    """The user attributes a spawner reads (JupyterHub's User has these and much more)."""

    def __init__(self, name: str, uid: int):
        self.name = self.escaped_name = name
        self.id = uid
        self.groups: list = []
        self.spawners: dict = {}
        self.server = None
        self.url = f"/user/{name}/"
        self.progress_url = f"/hub/api/users/{name}/server/progress"


class BenchOrmSpawner:
    """The server-record attributes a spawner reads."""

    def __init__(self, name: str):
        self.name = name
        self.server = None
        self.last_activity = None
        self.state = {}
        self.user_options = {}


class Spawners:
    def __init__(self, emulator_url: str, catalog: Path, db_url: str):
        from jupyterhub.objects import Hub
        from traitlets.config import Config

        self.Hub = Hub
        cfg = Config()
        cfg.DSWKubeSpawner.catalog_path = str(catalog)
        cfg.DSWKubeSpawner.state_db_url = db_url
        cfg.DSWKubeSpawner.k8s_api_host = emulator_url
        cfg.DSWKubeSpawner.start_timeout = 120
        cfg.DSWKubeSpawner.k8s_api_request_timeout = 30  # the emulator shares 2 cores with everything
        self.cfg = cfg
        self.users: dict[str, BenchUser] = {}

    def make(self, username: str, server: str, workspace: str):
        from spawner_ext.kube.spawner import DSWKubeSpawner

        u = self.users.get(username) or self.users.setdefault(username, BenchUser(username, len(self.users) + 1))
        spawner = DSWKubeSpawner(hub=self.Hub(), user=u, orm_spawner=BenchOrmSpawner(server), config=self.cfg,
                                 api_token="ks-bench", oauth_client_id="unused")
        spawner.user_options = {"workspace": workspace, **OPTIONS}
        u.spawners[server] = spawner
        return spawner


def slot(i: int) -> tuple[str, str, str]:
    """The i-th running instance: (workspace, user, server name), spread evenly."""
    ws = WORKSPACES[i % len(WORKSPACES)]
    return ws, user(ws, (i // len(WORKSPACES)) % USERS_PER_WS), f"s{i}"


# --- measurements ---------------------------------------------------------------------------
def rss_mb() -> float:
    gc.collect()
    return b.proc_mem_mb(os.getpid())[0]


async def fill(sp: Spawners, running: dict, upto: int, concurrency: int) -> float:
    """Start instances until ``upto`` run; seconds taken."""
    sem = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()

    async def one(i):
        ws, u, name = slot(i)
        async with sem:
            spawner = sp.make(u, name, ws)
            await spawner.start()
            running[(u, name)] = spawner

    await asyncio.gather(*(one(i) for i in range(len(running), upto)))
    return time.perf_counter() - t0


async def probe_admits(sp: Spawners, reps: int, prof: cProfile.Profile | None) -> list[float]:
    """quota.admit for one more instance, timed alone; released (untimed) so N stays."""
    from spawner_ext import quota
    from spawner_ext.catalog.db import sessions
    from spawner_ext.catalog_spawner import cached_catalog
    from spawner_ext.options import resolve

    catalog = cached_catalog(sp.cfg.DSWKubeSpawner.catalog_path)
    sessionmaker = sessions(sp.cfg.DSWKubeSpawner.state_db_url)
    times = []
    for k in range(reps):
        ws = WORKSPACES[k % len(WORKSPACES)]
        spec = resolve(catalog, user(ws, 0), f"probe{k}", {"workspace": ws, **OPTIONS})
        if prof:
            prof.enable()
        t0 = time.perf_counter()
        quota.admit(sessionmaker, catalog, spec)
        times.append(time.perf_counter() - t0)
        if prof:
            prof.disable()
        quota.release(sessionmaker, spec.user, spec.server)
    return times


async def probe_starts(sp: Spawners, reps: int, prof: cProfile.Profile | None):
    """A full DSWKubeSpawner.start() of one more instance (wall time, and this process's CPU time
    while it ran: the hub's own work, which the wall time hides behind waits), then its stop
    (timed apart). Returns (start s, stop s, start CPU s)."""
    starts, stops, cpu = [], [], []
    for k in range(reps):
        ws = WORKSPACES[k % len(WORKSPACES)]
        spawner = sp.make(user(ws, 1), f"probe{k}", ws)
        if prof:
            prof.enable()
        c0, t0 = time.process_time(), time.perf_counter()
        await spawner.start()
        starts.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if prof:
            prof.disable()
        t0 = time.perf_counter()
        await spawner.stop(now=True)
        stops.append(time.perf_counter() - t0)
        sp.users[user(ws, 1)].spawners.pop(f"probe{k}", None)
    return starts, stops, cpu


async def relist_cpu_ms() -> float:
    """CPU ms of one full re-list by every reflector (what each does after a quiet watch)."""
    from spawner_ext.kube.spawner import DSWKubeSpawner

    c0 = time.process_time()
    for reflector in list(DSWKubeSpawner.reflectors.values()):
        await reflector._list_and_update()
    return (time.process_time() - c0) * 1e3


def reflector_cache() -> dict[str, tuple[int, float]]:
    """What the reflectors hold, by kind: (objects, MB of their JSON) -- a size for comparison;
    the parsed dicts in memory take several times their JSON."""
    import json

    from spawner_ext.kube.spawner import DSWKubeSpawner

    out: dict[str, list] = {}
    for reflector in DSWKubeSpawner.reflectors.values():
        entry = out.setdefault(reflector.kind, [0, 0.0])
        entry[0] += len(reflector.resources)
        entry[1] += sum(len(json.dumps(r)) for r in reflector.resources.values()) / 2**20
    return {k: (n, mb) for k, (n, mb) in out.items()}


def cleanup_db(db_url: str) -> None:
    """On a shared database (--db-url): remove what this benchmark's users left."""
    from sqlalchemy import delete

    from spawner_ext.catalog.db import InstanceLifecycle, Reservation, sessions

    with sessions(db_url)() as s, s.begin():
        for table in (Reservation, InstanceLifecycle):
            s.execute(delete(table).where(table.user.like(f"{PREFIX}%")))


def slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")


async def run(args, tmp: Path, emulator_url: str) -> None:
    from spawner_ext.kube.spawner import DSWKubeSpawner

    # kubespawner's client reads a kube config at construction: point it at the emulator
    kubeconfig = tmp / "kubeconfig"
    from tests.kube.conftest import kubeconfig_for

    class _Url:
        url = emulator_url
    kubeconfig.write_text(kubeconfig_for(_Url))
    os.environ["KUBECONFIG"] = str(kubeconfig)
    os.environ.pop("KUBERNETES_SERVICE_HOST", None)
    import kubernetes_asyncio.config.kube_config as kube_config
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig)

    db_url = args.db_url or f"sqlite:///{tmp}/dsw-state.sqlite"
    if args.db_url:
        cleanup_db(db_url)
    levels = sorted(set(args.levels))
    sp = Spawners(emulator_url, catalogue(tmp, max(levels) + 2 * args.reps + 50), db_url)
    running: dict = {}
    rows = []
    try:
        # warm-up: every workspace once (namespaces, home PVCs of the probe users, the 20 per-namespace
        # reflectors, imports, connection pools), so level 0 is the system at rest, not a cold start
        await probe_starts(sp, len(WORKSPACES), None)
        await probe_admits(sp, len(WORKSPACES), None)
        if args.tracemalloc:
            tracemalloc.start(10)
        for n in levels:
            fill_s = await fill(sp, running, n, args.concurrency)
            rss = rss_mb()
            relist_ms = await relist_cpu_ms()
            cache = reflector_cache()
            traced = tracemalloc.get_traced_memory()[0] / 2**20 if args.tracemalloc else float("nan")
            profile = args.profile and n in (levels[0], levels[-1])
            pa = cProfile.Profile() if profile else None
            ps = cProfile.Profile() if profile else None
            admits = await probe_admits(sp, args.admit_reps, pa)
            starts, stops, cpu = await probe_starts(sp, args.reps, ps)
            if profile:
                pa.dump_stats(Path(args.profile) / f"admit-{n}.prof")
                ps.dump_stats(Path(args.profile) / f"start-{n}.prof")
            row = {"n": n, "fill_s": fill_s, "rss": rss, "traced": traced, "relist_ms": relist_ms, "cache": cache,
                   "admit_ms": statistics.median(admits) * 1e3, "admit_p90": b.pct(admits, 90) * 1e3,
                   "admit_min": min(admits) * 1e3,
                   "start_ms": statistics.median(starts) * 1e3, "start_p90": b.pct(starts, 90) * 1e3,
                   "cpu_ms": statistics.median(cpu) * 1e3, "stop_ms": statistics.median(stops) * 1e3}
            rows.append(row)
            print(f"N={n}: filled in {fill_s:.1f} s; admit {row['admit_ms']:.2f} ms, start {row['start_ms']:.0f} ms, "
                  f"RSS {rss:.1f} MB, relist {relist_ms:.0f} ms CPU, reflectors hold "
                  + ", ".join(f"{n} {kind} ({mb:.1f} MB JSON)" for kind, (n, mb) in sorted(cache.items()))
                  + f", load {b.load()}", flush=True)
        if args.tracemalloc:
            top = tracemalloc.take_snapshot().statistics("filename")[:15]
            print("\ntop traced allocations by file at the largest level:")
            for stat in top:
                print(f"  {stat.size / 2**20:7.2f} MB  {stat.count:8d}  {stat.traceback[0].filename}")
    finally:
        for key, spawner in list(running.items()):  # pods go with the emulator; the DB rows stay in tmp
            running.pop(key)
        await DSWKubeSpawner._stop_all_reflectors()
        if args.db_url:
            cleanup_db(db_url)

    print(f"\nmachine: {b.machine()}; load after: {b.load()}")
    print(f"state database: {'PostgreSQL' if db_url.startswith('postgres') else 'SQLite file'}; "
          f"{args.admit_reps} admissions and {args.reps} starts per level; levels reached {args.concurrency} starts at a time\n")
    print("| running instances N | fill s | admit p50 ms | admit p90 ms | admit min ms | start p50 ms | start p90 ms "
          "| start CPU p50 ms | stop p50 ms | relist CPU ms | RSS MB |" + (" traced MB |" if args.tracemalloc else ""))
    print("|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if args.tracemalloc else ""))
    for r in rows:
        print(f"| {r['n']} | {r['fill_s']:.1f} | {r['admit_ms']:.2f} | {r['admit_p90']:.2f} | {r['admit_min']:.2f} | {r['start_ms']:.0f} "
              f"| {r['start_p90']:.0f} | {r['cpu_ms']:.1f} | {r['stop_ms']:.0f} | {r['relist_ms']:.0f} | {r['rss']:.1f} |"
              + (f" {r['traced']:.1f} |" if args.tracemalloc else ""))
    first, last = rows[0], rows[-1]
    ns = [r["n"] for r in rows]
    mb_per_1000 = slope(ns, [r["rss"] for r in rows]) * 1000
    print(f"\nadmission cost at N={last['n']} / at N={first['n']}: admit {last['admit_ms'] / first['admit_ms']:.2f} "
          f"(p50), {last['admit_min'] / first['admit_min']:.2f} (min), "
          f"full start {last['start_ms'] / first['start_ms']:.2f} (wall), {last['cpu_ms'] / first['cpu_ms']:.2f} "
          f"(hub CPU) (target: no growth, ~1.0)")
    print(f"hub RSS per 1,000 instances (slope over the levels): {mb_per_1000:.1f} MB (target <= 50 MB)"
          + (f"; traced: {slope(ns, [r['traced'] for r in rows]) * 1000:.1f} MB" if args.tracemalloc else ""))


def main() -> None:
    if "--serve-emulator" in sys.argv:
        return serve_emulator()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[0, 250, 500, 1000])
    parser.add_argument("--reps", type=int, default=20, help="full starts per level")
    parser.add_argument("--admit-reps", type=int, default=60,
                        help="admissions per level (a few ms each; a SQLite commit waits on a disk other "
                             "jobs share, so more of them, and their minimum, steady the figure)")
    parser.add_argument("--concurrency", type=int, default=25, help="starts in flight while filling a level")
    parser.add_argument("--db-url", help="state database (default: a SQLite file in a temp dir)")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--profile", metavar="DIR", help="cProfile stats of the probes at the first and last level")
    parser.add_argument("--quick", action="store_true", help="levels 0 50 100, 5 repetitions")
    args = parser.parse_args()
    if args.quick:
        args.levels, args.reps, args.admit_reps = [0, 50, 100], 5, 15
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ks-bench-") as tmp, Emulator() as emu:
        asyncio.run(run(args, Path(tmp), emu.url))


if __name__ == "__main__":
    main()
