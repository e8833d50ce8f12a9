"""Shared parts of the spawn benchmarks (spawn_latency.py, concurrent_spawns.py).

Not part of the test suite: nothing here asserts a timing. Everything a benchmark makes is
named with ``PREFIX`` (users, hence DSW containers and home volumes; bare and stock containers
too), and cleanup removes only that, so benchmarks never touch other people's test containers
on a shared machine.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.conftest import cleanup_engine, managed_image  # noqa: E402,F401
from tests.integration.hubproc import Hub, free_port  # noqa: E402,F401

PREFIX = "bn-"  # benchmark users and containers (cleanup removes only these)
BARE_LABEL = "dsw-bench=bare"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dsw-bench"


# --- machine and process figures ----------------------------------------------------------
def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    podman = subprocess.run(["podman", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} cores ({cpu}), {podman}"


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (not its children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds of every live process in a process group: the hub started in its own session
    with the proxy, the DSW service and the hub relay (containers belong to the engine, not here)."""
    total = 0.0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                pass
    return total


def proc_mem_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MB of one process, from /proc/<pid>/status."""
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            vals[line.split(":")[0]] = int(line.split()[1]) / 1024
    return vals.get("VmRSS", math.nan), vals.get("VmHWM", math.nan)


def hub_pid(proc: subprocess.Popen) -> int:
    """The JupyterHub process: Hub starts the ``jupyterhub`` entry point itself (no shell)."""
    return proc.pid


# --- statistics ---------------------------------------------------------------------------
def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(xs)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def summary(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0, "median": math.nan, "p90": math.nan, "p95": math.nan, "min": math.nan, "max": math.nan}
    return {"n": len(xs), "median": statistics.median(xs), "p90": pct(xs, 90), "p95": pct(xs, 95),
            "min": min(xs), "max": max(xs)}


def row(name: str, s: dict, cols=("median", "p90", "min", "max")) -> str:
    return f"| {name} | {s['n']} | " + " | ".join(f"{s[c]:.2f}" for c in cols) + " |"


# --- readiness ------------------------------------------------------------------------------
def wait_200(url: str, headers: dict | None = None, timeout: float = 180, interval: float = 0.02) -> None:
    """Until ``url`` answers 200 (a server's /api/status: the server is up and reachable)."""
    deadline = time.monotonic() + timeout
    with requests.Session() as s:
        while time.monotonic() < deadline:
            try:
                if s.get(url, headers=headers, timeout=5, allow_redirects=False).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(interval)
    raise TimeoutError(url)


def follow_progress(hub_url: str, user: str, server: str, token: str, timeout: float = 180) -> None:
    """What the spawn-pending page does: read the hub's progress stream until ready (or failed).
    Event-driven, so waiting adds no polling load to the hub."""
    url = f"{hub_url}/hub/api/users/{user}/servers/{server}/progress"
    with requests.get(url, headers={"Authorization": f"token {token}"}, stream=True, timeout=timeout) as r:
        r.raise_for_status()
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                if event.get("failed"):
                    raise RuntimeError(f"{user}/{server}: {event.get('message')}")
                if event.get("ready"):
                    return
    raise RuntimeError(f"{user}/{server}: progress stream ended before ready")


def hub_spawn(hub_url: str, user: str, server: str, token: str, options: dict | None = None,
              timeout: float = 180, interval: float = 0.02) -> float:
    """Spawn-to-ready as a user sees it: POST the server (the hub answers 201 when it is up, or
    202 after its slow_spawn_timeout), follow the progress stream if pending, then GET the
    server's /api/status through the proxy until 200. Seconds from the POST."""
    auth = {"Authorization": f"token {token}"}
    t0 = time.perf_counter()
    r = requests.post(f"{hub_url}/hub/api/users/{user}/servers/{server}", json=options or {},
                      headers=auth, timeout=timeout)
    if r.status_code not in (201, 202):
        raise RuntimeError(f"{user}/{server}: POST answered {r.status_code}: {r.text[:300]}")
    if r.status_code == 202:
        follow_progress(hub_url, user, server, token, timeout)
    wait_200(f"{hub_url}/user/{user}/{server}/api/status", auth, timeout, interval)
    return time.perf_counter() - t0


def hub_remove(hub_url: str, user: str, server: str, token: str, timeout: float = 120) -> None:
    """Stop and remove a named server; return when the hub no longer lists it."""
    auth = {"Authorization": f"token {token}"}
    requests.delete(f"{hub_url}/hub/api/users/{user}/servers/{server}", json={"remove": True},
                    headers=auth, timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = requests.get(f"{hub_url}/hub/api/users/{user}", headers=auth, timeout=30).json()
        if server not in model.get("servers", {}):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{user}/{server} was not removed")


# --- bare arm -----------------------------------------------------------------------------
def bare_run(image: str, name: str, timeout: float = 180, interval: float = 0.02) -> tuple[float, str]:
    """`podman run` of the image's JupyterLab with the instance type's limits (1 CPU, 1 GiB),
    then GET /api/status until 200. (seconds, container id)."""
    t0 = time.perf_counter()
    cid = subprocess.run(
        ["podman", "run", "-d", "--name", name, "--label", BARE_LABEL, "-p", "127.0.0.1::8888",
         "--cpus", "1", "--memory", "1g", image,
         "jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--ServerApp.token=bench", "--no-browser"],
        check=True, capture_output=True, text=True).stdout.strip()
    port = subprocess.run(["podman", "port", cid, "8888/tcp"], check=True, capture_output=True,
                          text=True).stdout.strip().rsplit(":", 1)[1]
    wait_200(f"http://127.0.0.1:{port}/api/status?token=bench", timeout=timeout, interval=interval)
    return time.perf_counter() - t0, cid


def bare_remove(*cids: str) -> None:
    if cids:
        subprocess.run(["podman", "rm", "-f", "-t", "0", *cids], capture_output=True)


def bare_cleanup() -> None:
    """Every bare or stock-DockerSpawner container a benchmark left (by label and name prefix)."""
    ids = subprocess.run(["podman", "ps", "-aq", "--filter", f"label={BARE_LABEL}"],
                         capture_output=True, text=True).stdout.split()
    ids += subprocess.run(["podman", "ps", "-aq", "--filter", f"name=^{PREFIX}"],
                          capture_output=True, text=True).stdout.split()
    bare_remove(*dict.fromkeys(ids))


# --- this hub -----------------------------------------------------------------------------
def bench_catalog(tmp: Path, users: list[str], servers: int) -> Path:
    """A catalogue for the benchmark: one workspace with ``users`` as developers and a
    resource group large enough for ``servers`` small instances (1 CPU, 1 GiB each), so
    admission never refuses a benchmark spawn (quotas are checked, not exhausted)."""
    cap = max(8, servers + 2)
    data = {
        "image_metadata": str(ROOT / "images" / "images.yaml"),
        "platform_admins": [f"{PREFIX}root"],
        "workspaces": [{"id": "bench", "members": {u: "developer" for u in users}, "resource_groups": ["cpu"]}],
        "instance_types": [{"id": "small", "cpu": 1, "memory": "1Gi"}],
        "resource_groups": [{"id": "cpu", "capacity": {"cpu": cap, "memory": f"{cap}Gi"}}],
    }
    path = tmp / "catalog.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def dsw_hub(tmp: Path, engine_url: str, users: list[str], servers_per_user: int, servers: int,
            extra_env: dict | None = None) -> Hub:
    """This hub, as the README runs it (hub_config/jupyterhub_config.py, real proxy), with the
    named-server limit raised for the benchmark (DSW_SERVER_LIMIT)."""
    env = {"DSW_SERVER_LIMIT": str(max(5, servers_per_user))}
    env.update(extra_env or {})
    return Hub(tmp / "state", bench_catalog(tmp, users, servers), engine_url, extra_env=env)


# --- stock JupyterHub + DockerSpawner ---------------------------------------------------------
STOCK_VENV = CACHE / "stock-venv"


def stock_venv(jupyterhub: str, dockerspawner: str) -> Path:
    """A virtual environment with PyPI's jupyterhub and dockerspawner (made once, kept in the
    cache). The hub version defaults to the one in the managed image (its jupyterhub-singleuser
    must match), so the comparison differs in the hub's spawner, not in the server."""
    want = f"jupyterhub=={jupyterhub} dockerspawner=={dockerspawner}"
    marker = STOCK_VENV / "bench-installed.txt"
    if marker.exists() and marker.read_text() == want:
        return STOCK_VENV
    print(f"installing {want} into {STOCK_VENV} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(STOCK_VENV)], check=True)
    subprocess.run([str(STOCK_VENV / "bin" / "pip"), "install", "-q", *want.split()], check=True)
    marker.write_text(want)
    return STOCK_VENV


STOCK_CONFIG = """
import os
c = get_config()
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
# instances reach the hub at host.containers.internal (podman's bridge gateway): listen there too
c.JupyterHub.hub_ip = "0.0.0.0"
c.JupyterHub.hub_port = {hub_port}
c.Spawner.hub_connect_url = "http://host.containers.internal:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_port}"
c.ConfigurableHTTPProxy.pid_file = "{state}/proxy.pid"
c.JupyterHub.db_url = "sqlite:///{state}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{state}/cookie_secret"
c.JupyterHub.pid_file = "{state}/jupyterhub.pid"
c.JupyterHub.cleanup_servers = True
c.JupyterHub.allow_named_servers = True
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "{password}"
c.JupyterHub.services = [{{"name": "bench", "api_token": "{token}"}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": ["bench"]}}]
c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.client_kwargs = {{"base_url": "{engine_url}"}}
c.DockerSpawner.image = "{image}"
c.DockerSpawner.prefix = "{prefix}stock"
c.DockerSpawner.remove = True
c.DockerSpawner.use_internal_ip = False
c.DockerSpawner.host_ip = "127.0.0.1"
c.DockerSpawner.cpu_limit = 1.0
c.DockerSpawner.mem_limit = "1G"
c.Spawner.http_timeout = 60
c.Spawner.start_timeout = 120
"""


class StockHub:
    """Stock JupyterHub + DockerSpawner + configurable-http-proxy, configured only as far as
    this machine needs (podman's Docker API, the bridge address, the same image and limits)."""

    def __init__(self, tmp: Path, venv: Path, engine_url: str, image: str):
        import secrets

        self.state = tmp / "stock"
        self.state.mkdir(parents=True, exist_ok=True)
        self.venv = venv
        self.port, self.hub_port, self.proxy_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.config = self.state / "jupyterhub_config.py"
        self.config.write_text(STOCK_CONFIG.format(
            port=self.port, hub_port=self.hub_port, proxy_port=self.proxy_port, state=self.state,
            password=secrets.token_hex(8), token=self.token, engine_url=engine_url, image=image, prefix=PREFIX))
        self.log = self.state / "hub.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        env = dict(os.environ)
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '')}"
        env.pop("VIRTUAL_ENV", None)
        self.proc = subprocess.Popen([str(self.venv / "bin" / "jupyterhub"), "-f", str(self.config)],
                                     cwd=self.state, env=env, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"stock hub exited:\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/hub/api/", timeout=1).status_code == 200:
                    requests.post(f"{self.url}/hub/api/users/{PREFIX}stock",
                                  headers={"Authorization": f"token {self.token}"}, timeout=30)
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"stock hub did not answer:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
