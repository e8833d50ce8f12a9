"""DSW Hub on one machine: JupyterHub + configurable-http-proxy + a container engine.

What the hub runs (sign-in, workspace roles, the DSW service, named servers, idle culler,
admin token) is set by spawner_ext/hubconfig.py, the same module the Helm chart's
configuration calls. This file keeps what is particular to one machine: settings from the
environment, the local spawner, how the proxy and the hub database are reached, and the
release of stale storage at start.

Everything site-specific comes from the environment (defaults: spawner_ext/hubconfig.py's
HubSettings, except where this file says otherwise):

  DSW_STATE        state folder (database, cookie secret, credentials)   /var/lib/dsw-hub
  DSW_CATALOG      catalogue YAML                                         hub_config/catalog.yaml
  DSW_ENGINE_URL   Docker Engine API (podman's service or Docker)         unix://$DSW_STATE/podman.sock
  DSW_BIND_URL     the hub's public URL (its origin)                       http://localhost:8000
  DSW_SUBDOMAIN_HOST  user servers at <user>.<host> ("off": one origin, no sharing)  DSW_BIND_URL
  DSW_HUB_PORT     hub API port (127.0.0.1, and relayed on the bridge gateway)  8081
  DSW_HUB_RELAY_IP address instances reach the host at (the relay listens there)  the engine's bridge gateway
  DSW_PROXY_API_PORT  proxy REST API port                                 8001
  DSW_DB_URL       SQLAlchemy URL of the hub database                     sqlite in DSW_STATE
  DSW_STATE_DB_URL SQLAlchemy URL of DSW state (allocations, quotas, audit) sqlite in DSW_STATE
  DSW_ADMIN_TOKEN  API token with the admin role, for automation          unset
  DSW_SERVICE_PORT port of the DSW service (behind the proxy at /services/dsw/)  10101
  DSW_RECONCILE_SECONDS how often the service re-syncs hub groups and shares with membership  60
  DSW_IDLE_TIMEOUT seconds without activity before jupyterhub-idle-culler stops an instance  0 (off)
  DSW_SERVER_LIMIT named servers per user                                 5
  DSW_POLL_INTERVAL seconds between checks that an instance still runs    15
  DSW_IMAGE_REGISTRY  where saved images go (a registry host: pushed by the image agent)  localhost/dsw-saved
  DSW_IMAGE_AGENT_PORT  loopback port of the image agent the hub runs when it pushes (0: none)  9731
  DSW_AUTH         embedded (per-user passwords of catalogue members) or oidc (README: Single sign-on)
"""

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from spawner_ext.catalog import load_catalog
from spawner_ext.embedded_auth import CREDENTIALS, announce, ensure_admin_password
from spawner_ext.hubconfig import HubSettings, configure

c = get_config()  # noqa: F821  (provided by JupyterHub)

here = Path(__file__).resolve().parent
# one machine serves user servers on their own hosts by default: <user>.localhost resolves to
# loopback in browsers and curl, so no DNS is needed (DSW_SUBDOMAIN_HOST=off: one origin)
_public = os.environ.get("DSW_BIND_URL") or HubSettings.model_fields["public_url"].default
settings = HubSettings.from_environ(os.environ, catalog_path=str(here / "catalog.yaml"), subdomain_host=_public)
state = Path(settings.state_dir)
state.mkdir(parents=True, exist_ok=True)
# the local backend always has a container engine; the DSW service uses it to save images
local = {"engine_url": settings.engine_url or f"unix://{state / 'podman.sock'}"}
if settings.auth == "embedded" and settings.embedded_admin_password is None:
    # the first platform admin's password: generated on first start, printed once, kept 0600
    password, created = ensure_admin_password(state)
    if created:
        catalog = load_catalog(settings.catalog_path)
        first = ([*catalog.platform_admins, *settings.admin_users] or ["(no platform admin in the catalogue)"])[0]
        print(announce(first, password, state / CREDENTIALS), file=sys.stderr, flush=True)
    local.update(embedded_admin_password=password)
settings = HubSettings(**{**settings.model_dump(), **local})
configure(c, settings)


def _bridge_gateway(engine_url: str) -> str:
    """The container engine's bridge gateway (podman: 10.88.0.1), which instances reach as
    host.containers.internal, from the engine's network settings (the bridge itself may be down
    while no container runs); "" when the engine cannot say."""
    try:
        import docker

        client = docker.DockerClient(base_url=engine_url, timeout=5)
        try:
            nets = [n for n in client.networks.list() if n.name in ("podman", "bridge")]
            return next((cfg["Gateway"] for n in nets for cfg in n.attrs.get("IPAM", {}).get("Config") or []
                         if cfg.get("Gateway")), "")
        finally:
            client.close()
    except Exception as exc:
        print(f"hub API: the engine gave no bridge address ({exc})", file=sys.stderr)
        return ""


# --- hub, proxy, database ------------------------------------------------------
# The proxy listens at the public URL ("localhost" is bound as 127.0.0.1: Node may resolve
# it to ::1 only). The hub's API listens on loopback, where the proxy and the DSW service reach
# it; instances reach it through spawner_ext/hub_relay.py on the engine's bridge gateway
# (host.containers.internal), and on no other address of this machine.
_bind = urlsplit(settings.public_url)
if _bind.hostname == "localhost":
    _bind = _bind._replace(netloc=f"127.0.0.1:{_bind.port or 80}")
c.JupyterHub.bind_url = urlunsplit(_bind)
if settings.public_url != c.JupyterHub.bind_url:
    c.JupyterHub.public_url = settings.public_url
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ.get("DSW_HUB_PORT", "8081"))
_relay_ip = os.environ.get("DSW_HUB_RELAY_IP") or _bridge_gateway(settings.engine_url)
if _relay_ip:
    c.JupyterHub.services.append({
        "name": "hub-relay",
        "command": [sys.executable, "-m", "spawner_ext.hub_relay", _relay_ip, str(c.JupyterHub.hub_port),
                    "127.0.0.1", str(c.JupyterHub.hub_port)],
        "environment": {"PYTHONPATH": os.pathsep.join(sys.path)},
    })
else:
    print("hub API: on loopback only; instances cannot reach the hub until DSW_HUB_RELAY_IP names "
          "the address they reach the host at", file=sys.stderr)
# how instances reach the hub API: podman's name for the host (Docker: host.docker.internal)
c.Spawner.hub_connect_url = (
    f"http://{os.environ.get('DSW_HUB_CONNECT_HOST', 'host.containers.internal')}:{c.JupyterHub.hub_port}"
)
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ.get('DSW_PROXY_API_PORT', '8001')}"
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
c.JupyterHub.db_url = os.environ.get("DSW_DB_URL", f"sqlite:///{state / 'jupyterhub.sqlite'}")
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
c.JupyterHub.cleanup_servers = False  # a hub restart keeps running instances

# --- spawner -------------------------------------------------------------------
c.JupyterHub.spawner_class = "spawner_ext.local.spawner.DSWLocalSpawner"
c.DSWLocalSpawner.engine_url = settings.engine_url
c.DSWLocalSpawner.attach_gpus = os.environ.get("DSW_ATTACH_GPUS", "1") != "0"
c.Spawner.http_timeout = 60

# --- storage: OSS mount points and passwd files under DSW_STATE; at hub start, release what a
# crash left behind (mounts and passwd files of instances whose containers no longer run) ----
c.DSWLocalSpawner.storage_state = str(state)
try:
    from spawner_ext.storage.local import Layout, sweep_with_engine

    _swept = sweep_with_engine(Layout.under(state), settings.engine_url, timeout=15)
    if _swept:
        print(f"released stale storage: {len(_swept)} mount point(s)/credential file(s)", file=sys.stderr)
except Exception as exc:  # the engine may not be up yet; never block the hub's start on this
    print(f"stale storage not swept: {exc}", file=sys.stderr)
