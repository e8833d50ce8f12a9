"""A real JupyterHub (with its real configurable-http-proxy) run as a subprocess
from hub_config/jupyterhub_config.py, the same file the README's command uses.

Routing: by default the hub is addressed as http://127.0.0.1:<port> with user servers under
/user/<name>/ on that one origin (DSW_SUBDOMAIN_HOST=off), so tests reach servers by path.
``subdomains=True`` runs the product's one-machine default instead: the hub at
http://localhost:<port> and each user's servers at http://<user>.localhost:<port>
(tests/conftest.py makes Python resolve *.localhost as browsers do).

Sign-in is per user (spawner_ext/embedded_auth.py): ``password(user)`` gives a member an
account the way a member gets one (sign-up with their own password, authorised by the first
platform admin through nativeauthenticator's page), ``login_session(user)`` a logged-in
``requests.Session``."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import http.cookiejar
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrowserLikeCookies(http.cookiejar.DefaultCookiePolicy):
    """http.cookiejar calls the dotless host "localhost" "localhost.local", so a cookie set with
    ``Domain=localhost`` (JupyterHub's session id when servers have subdomains) never goes back
    to localhost or <user>.localhost; a browser sends it to both. Without it every page of a
    logged-in session gets a new session id, and the hub's forms a stale _xsrf."""

    def return_ok_domain(self, cookie, request):
        host = urlsplit(request.get_full_url()).hostname or ""
        if cookie.domain == ".localhost" and (host == "localhost" or host.endswith(".localhost")):
            return True
        return super().return_ok_domain(cookie, request)

    def domain_return_ok(self, domain, request):
        host = urlsplit(request.get_full_url()).hostname or ""
        if domain == ".localhost" and (host == "localhost" or host.endswith(".localhost")):
            return True
        return super().domain_return_ok(domain, request)


class BrowserSession(requests.Session):
    """A requests session that sends cookies as a browser would (see BrowserLikeCookies)."""

    def __init__(self):
        super().__init__()
        self.cookies.set_policy(BrowserLikeCookies())

    def prepare_request(self, request):
        prepared = super().prepare_request(request)  # its Cookie header came from a default-policy copy
        jar = requests.cookies.RequestsCookieJar()
        jar.set_policy(BrowserLikeCookies())
        requests.cookies.merge_cookies(jar, self.cookies)
        requests.cookies.merge_cookies(jar, request.cookies or {})
        prepared.headers.pop("Cookie", None)
        prepared.prepare_cookies(jar)
        return prepared


def browser_session() -> requests.Session:
    return BrowserSession()


class Hub:
    def __init__(self, state: Path, catalog: Path, engine_url: str, extra_env: dict | None = None,
                 config: Path | None = None, subdomains: bool = False):
        self.config = config or ROOT / "hub_config" / "jupyterhub_config.py"
        self.state = state
        self.catalog = catalog
        self.engine_url = engine_url
        self.port, self.hub_port, self.proxy_port = free_port(), free_port(), free_port()
        self.subdomains = subdomains
        self.url = f"http://{'localhost' if subdomains else '127.0.0.1'}:{self.port}"
        self.passwords: dict[str, str] = {}
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
        if not self.subdomains:
            env["DSW_SUBDOMAIN_HOST"] = "off"
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

    def user_host(self, user: str) -> str:
        """Where ``user``'s servers are served: their own origin with subdomains."""
        return f"http://{user}.localhost:{self.port}" if self.subdomains else self.url

    # --- sign-in --------------------------------------------------------------------
    @property
    def admin_name(self) -> str:
        return yaml.safe_load(self.catalog.read_text())["platform_admins"][0]

    def admin_password(self) -> str:
        """The first platform admin's generated password (printed once, kept 0600)."""
        return json.loads((self.state / "credentials.json").read_text())["admin_password"]

    def form_post(self, session: requests.Session, path: str, data: dict, **kw) -> requests.Response:
        """POST a hub form as the browser does: after loading the page, with its _xsrf."""
        page = session.get(f"{self.url}{path}", timeout=30)
        field = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text)
        xsrf = field.group(1) if field else session.cookies.get("_xsrf", path="/hub/")
        return session.post(f"{self.url}{path}", data={**data, "_xsrf": xsrf}, timeout=30, **kw)

    def login(self, user: str, password: str) -> requests.Session:
        """A browser session after the login form; ``session.logged_in`` says whether it worked."""
        s = browser_session()
        r = self.form_post(s, "/hub/login", {"username": user, "password": password}, allow_redirects=False)
        s.logged_in = r.status_code == 302 and "jupyterhub-hub-login" in s.cookies.get_dict()
        s.login_response = r
        return s

    def signup(self, user: str, password: str) -> requests.Response:
        return self.form_post(browser_session(), "/hub/signup", {
            "username": user, "signup_password": password, "signup_password_confirmation": password})

    def password(self, user: str) -> str:
        """``user``'s own password, making their account first as a member does: sign up with a
        password of their own, then the first platform admin authorises it."""
        if user == self.admin_name:
            return self.admin_password()
        if user not in self.passwords:
            password = secrets.token_urlsafe(16)
            r = self.signup(user, password)
            assert r.status_code == 200 and "sent to the admin" in r.text, r.text[-2000:]
            admin = self.login(self.admin_name, self.admin_password())
            assert admin.logged_in, admin.login_response.text[-2000:]
            r = admin.get(f"{self.url}/hub/authorize/{user}", timeout=30)
            assert r.status_code == 200, r.text[-2000:]
            self.passwords[user] = password
        return self.passwords[user]

    def login_session(self, user: str) -> requests.Session:
        s = self.login(user, self.password(user))
        assert s.logged_in, s.login_response.text[-2000:]
        return s

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
