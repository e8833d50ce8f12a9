"""DSW Hub on one machine: JupyterHub + configurable-http-proxy + a container engine.

Everything site-specific comes from the environment so the same file serves the
embedded default, the tests and a packaged install:

  DSW_STATE        state folder (database, cookie secret, credentials)   /var/lib/dsw-hub
  DSW_CATALOG      catalogue YAML                                         hub_config/catalog.yaml
  DSW_ENGINE_URL   Docker Engine API (podman's service or Docker)         unix://$DSW_STATE/podman.sock
  DSW_BIND_URL     public URL                                             http://127.0.0.1:8000
  DSW_HUB_PORT     hub API port (containers reach it)                     8081
  DSW_PROXY_API_PORT  proxy REST API port                                 8001
  DSW_DB_URL       SQLAlchemy URL of the hub database                     sqlite in DSW_STATE
  DSW_STATE_DB_URL SQLAlchemy URL of DSW state (allocations, quotas, audit) sqlite in DSW_STATE
  DSW_ADMIN_TOKEN  API token with the admin role, for automation          unset
  DSW_SERVICE_PORT port of the DSW service (behind the proxy at /services/dsw/)  10101
  DSW_RECONCILE_SECONDS how often the service re-syncs hub groups and shares with membership  60
  DSW_IDLE_TIMEOUT seconds without activity before jupyterhub-idle-culler stops an instance  0 (off)
"""

import os
import sys
from pathlib import Path

from spawner_ext import rbac
from spawner_ext.catalog import load_catalog
from spawner_ext.catalog.db import sessions
from spawner_ext.catalog.live import effective_catalog
from spawner_ext.embedded_auth import announce, ensure_credentials

c = get_config()  # noqa: F821  (provided by JupyterHub)

here = Path(__file__).resolve().parent
state = Path(os.environ.get("DSW_STATE", "/var/lib/dsw-hub"))
state.mkdir(parents=True, exist_ok=True)
catalog_path = os.environ.get("DSW_CATALOG", str(here / "catalog.yaml"))
catalog = load_catalog(catalog_path)  # fail fast with file/path/cause on a bad catalogue

# --- hub, proxy, database ------------------------------------------------------
c.JupyterHub.bind_url = os.environ.get("DSW_BIND_URL", "http://127.0.0.1:8000")
c.JupyterHub.hub_ip = os.environ.get("DSW_HUB_IP", "0.0.0.0")  # containers call the hub API
c.JupyterHub.hub_port = int(os.environ.get("DSW_HUB_PORT", "8081"))
c.JupyterHub.hub_connect_ip = "127.0.0.1"  # how the proxy reaches the hub
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
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = int(os.environ.get("DSW_SERVER_LIMIT", "5"))
c.JupyterHub.default_url = "/hub/home"

# --- spawner -------------------------------------------------------------------
c.JupyterHub.spawner_class = "spawner_ext.local.spawner.DSWLocalSpawner"
c.CatalogSpawnerMixin.catalog_path = catalog_path
state_db_url = os.environ.get("DSW_STATE_DB_URL", f"sqlite:///{state / 'dsw.sqlite'}")
c.CatalogSpawnerMixin.state_db_url = state_db_url
c.DSWLocalSpawner.engine_url = os.environ.get("DSW_ENGINE_URL", f"unix://{state / 'podman.sock'}")
c.DSWLocalSpawner.attach_gpus = os.environ.get("DSW_ATTACH_GPUS", "1") != "0"
c.Spawner.http_timeout = 60
c.Spawner.poll_interval = 15  # notice instances that died within seconds

# --- storage: OSS mount points and passwd files under DSW_STATE; at hub start, release what a
# crash left behind (mounts and passwd files of instances whose containers no longer run) ----
c.DSWLocalSpawner.storage_state = str(state)
try:
    from spawner_ext.storage.local import Layout, sweep_with_engine

    _swept = sweep_with_engine(Layout.under(state), c.DSWLocalSpawner.engine_url, timeout=15)
    if _swept:
        print(f"released stale storage: {len(_swept)} mount point(s)/credential file(s)", file=sys.stderr)
except Exception as exc:  # the engine may not be up yet; never block the hub's start on this
    print(f"stale storage not swept: {exc}", file=sys.stderr)

# --- single sign-on (DSW_AUTH=oidc): OpenID Connect, provider groups -> workspace roles -----
#   DSW_OIDC_ISSUER, DSW_OIDC_CLIENT_ID, DSW_OIDC_CLIENT_SECRET, DSW_OIDC_GROUPS_CLAIM (groups),
#   DSW_OIDC_USERNAME_CLAIM (preferred_username), DSW_OIDC_ROLE_MAP (JSON: group -> ["ws:role"])
sso = os.environ.get("DSW_AUTH", "embedded") == "oidc"
if sso:
    import json

    from spawner_ext.sso import DSWOAuthenticator, discover

    _oidc = discover(os.environ["DSW_OIDC_ISSUER"])
    c.JupyterHub.authenticator_class = DSWOAuthenticator
    c.DSWOAuthenticator.authorize_url = _oidc["authorization_endpoint"]
    c.DSWOAuthenticator.token_url = _oidc["token_endpoint"]
    c.DSWOAuthenticator.userdata_url = _oidc["userinfo_endpoint"]
    c.DSWOAuthenticator.client_id = os.environ["DSW_OIDC_CLIENT_ID"]
    c.DSWOAuthenticator.client_secret = os.environ.get("DSW_OIDC_CLIENT_SECRET", "")
    c.DSWOAuthenticator.oauth_callback_url = f"{c.JupyterHub.bind_url.rstrip('/')}/hub/oauth_callback"
    c.DSWOAuthenticator.username_claim = os.environ.get("DSW_OIDC_USERNAME_CLAIM", "preferred_username")
    c.DSWOAuthenticator.auth_state_groups_key = f"oauth_user.{os.environ.get('DSW_OIDC_GROUPS_CLAIM', 'groups')}"
    c.DSWOAuthenticator.workspace_role_map = json.loads(os.environ.get("DSW_OIDC_ROLE_MAP") or "{}")
    c.DSWOAuthenticator.catalog_path = catalog_path
    c.DSWOAuthenticator.state_db_url = state_db_url
    c.Authenticator.admin_users = set(catalog.platform_admins)
else:  # --- embedded authentication: users come from the catalogue ----------------
    creds, created = ensure_credentials(state)
    if created:
        print(announce(creds, catalog.platform_admins, state / "credentials.json"), file=sys.stderr, flush=True)
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.admin_password = creds["admin_password"]
    c.SharedPasswordAuthenticator.user_password = creds["user_password"]
    c.Authenticator.allowed_users = catalog.usernames()
    c.Authenticator.allow_existing_users = True  # members added at run time through the DSW service
    c.Authenticator.admin_users = set(catalog.platform_admins)

# --- workspace roles as JupyterHub RBAC (groups, roles, custom scopes) ----------------
with sessions(state_db_url)() as session:
    live = effective_catalog(catalog, session)
c.JupyterHub.custom_scopes = rbac.custom_scopes()
# with SSO the authenticator sets each user's groups at login (manage_groups; the hub refuses load_groups then)
c.JupyterHub.load_groups = {} if sso else {name: {"users": users} for name, users in rbac.groups(live).items()}
roles = rbac.roles(live)

# --- the DSW service: REST API and pages at /services/dsw/ ----------------------------
service_env = {"DSW_CATALOG": catalog_path, "DSW_STATE_DB_URL": state_db_url, "DSW_STATE": str(state),
               "DSW_RECONCILE_SECONDS": os.environ.get("DSW_RECONCILE_SECONDS", "60"),
               "PYTHONPATH": os.pathsep.join(sys.path), "DSW_ENGINE_URL": c.DSWLocalSpawner.engine_url}
# saving instances as images (spawner_ext/snapshots.py) runs in the service
service_env.update({k: os.environ[k] for k in ("DSW_IMAGE_REGISTRY", "DSW_IMAGE_REGISTRY_TLS_VERIFY", "DSW_SAVE_TIMEOUT")
                    if k in os.environ})
services = [{
    "name": "dsw",
    "url": f"http://127.0.0.1:{os.environ.get('DSW_SERVICE_PORT', '10101')}",
    "command": [sys.executable, "-m", "spawner_ext.service"],
    "environment": service_env,
    "oauth_no_confirm": True,
    "oauth_client_allowed_scopes": sorted(rbac.custom_scopes()),
    "display": True,
}]

# --- idle instances stop on their own (jupyterhub-idle-culler), when DSW_IDLE_TIMEOUT is set ---
idle_timeout = int(os.environ.get("DSW_IDLE_TIMEOUT", "0"))
if idle_timeout > 0:
    services.append({
        "name": "idle-culler",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={idle_timeout}",
                    f"--cull-every={max(5, min(300, idle_timeout // 2))}"],
    })
    roles.append({"name": "idle-culler", "services": ["idle-culler"],
                  "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]})

# --- automation token -----------------------------------------------------------
if os.environ.get("DSW_ADMIN_TOKEN"):
    services.append({"name": "dsw-admin", "api_token": os.environ["DSW_ADMIN_TOKEN"]})
    roles.append({"name": "admin", "services": ["dsw-admin"]})
c.JupyterHub.services = services
c.JupyterHub.load_roles = roles
