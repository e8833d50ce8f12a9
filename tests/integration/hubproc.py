"""A real JupyterHub (with its real configurable-http-proxy) run as a subprocess
from hub_config/jupyterhub_config.py, the same file the README's command uses."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hub:
    def __init__(self, state: Path, catalog: Path, engine_url: str, extra_env: dict | None = None,
                 config: Path | None = None):
        self.config = config or ROOT / "hub_config" / "jupyterhub_config.py"
        self.state = state
        self.catalog = catalog
        self.engine_url = engine_url
        self.port, self.hub_port, self.proxy_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self.log = state / "hub.log"

    def env(self) -> dict:
        env = dict(os.environ)
        env.update({
            "DSW_STATE": str(self.state), "DSW_CATALOG": str(self.catalog),
            "DSW_ENGINE_URL": self.engine_url, "DSW_BIND_URL": self.url,
            "DSW_HUB_PORT": str(self.hub_port), "DSW_PROXY_API_PORT": str(self.proxy_port),
            "DSW_ADMIN_TOKEN": self.token, "DSW_SERVICE_PORT": str(free_port()),
        })
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        bindir = Path(sys.executable).parent
        env = self.env()
        env["PATH"] = f"{bindir}:{env.get('PATH', '')}"
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [str(bindir / "jupyterhub"), "-f", str(self.config)],
            cwd=self.state, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/hub/api/", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"hub did not answer within {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    # --- REST helpers ---------------------------------------------------------------
    def api(self, method: str, path: str, token: str | None = None, **kw) -> requests.Response:
        headers = {"Authorization": f"token {token or self.token}", **kw.pop("headers", {})}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=kw.pop("timeout", 30), **kw)

    def user_token(self, user: str) -> str:
        self.api("POST", f"/users/{user}")  # create if missing (409 if present: fine)
        r = self.api("POST", f"/users/{user}/tokens", json={"note": "tests"})
        r.raise_for_status()
        return r.json()["token"]

    def spawn(self, user: str, server: str, options: dict, timeout: float = 120) -> requests.Response:
        r = self.api("POST", f"/users/{user}/servers/{server}", json=options, timeout=timeout)
        if r.status_code == 202:
            self.wait_ready(user, server, timeout)
        return r

    def server_model(self, user: str, server: str) -> dict | None:
        model = self.api("GET", f"/users/{user}").json()
        return model.get("servers", {}).get(server)

    def wait_ready(self, user: str, server: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.server_model(user, server)
            if s and s.get("ready"):
                return s
            if s is None or not s.get("pending") and not s.get("ready"):
                raise RuntimeError(f"server {user}/{server} failed: {s}\n{self.log.read_text()[-2000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"server {user}/{server} not ready in {timeout}s")

    def wait_service(self, timeout: float = 30) -> None:
        """The DSW service starts beside the hub; wait until the proxy reaches it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = requests.get(f"{self.url}/services/dsw/api/v1/openapi.json", timeout=5)
            if r.status_code == 200:
                return
            time.sleep(0.2)
        raise TimeoutError("the DSW service did not answer")

    def wait_stopped(self, user: str, server: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.server_model(user, server)
            if not s or not (s.get("ready") or s.get("pending")):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{user}/{server} did not stop")

    def stop_server(self, user: str, server: str, timeout: float = 60) -> None:
        r = self.api("DELETE", f"/users/{user}/servers/{server}", json={"remove": False})
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.server_model(user, server)
            if not s or not s.get("pending"):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{user}/{server} did not stop")
