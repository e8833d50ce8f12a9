"""Configure a JupyterHub config object for DSW: everything the hub runs, for both deployments.

``hub_config/jupyterhub_config.py`` (one machine) and the chart's
``helm/dsw-hub/files/jupyterhub_config.py`` (Kubernetes) both build a ``HubSettings`` and call
``configure(c, settings)``. So the sign-in, the workspace groups, roles and custom scopes, the
DSW service, named servers, the idle culler and the admin token are the same product on both;
the two files keep only what differs: where settings come from, which spawner (and its traits),
and how the proxy and the hub database are reached.

The defaults live here, once: a deployment passes only what it knows, and a ``DSW_*``
environment variable that is set wins (``HubSettings.from_environ``; ``ENVIRONMENT`` lists the
names). Secrets (passwords, tokens, client secret, database URL) are ``SecretStr`` or come only
from the environment, so they never print with the settings.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from . import rbac
from .catalog import load_catalog
from .catalog.db import sessions
from .catalog.live import effective_catalog
from .catalog.models import Catalog

# DSW_* variable -> HubSettings field. The one-machine README lists these; the chart sets
# the secret ones from its Secret (DSW_ADMIN_TOKEN, DSW_STATE_DB_URL, DSW_OIDC_CLIENT_SECRET,
# DSW_ADMIN_PASSWORD) and DSW_SERVICE_HOST from the pod's IP.
ENVIRONMENT: dict[str, str] = {
    "DSW_CATALOG": "catalog_path",
    "DSW_STATE": "state_dir",
    "DSW_STATE_DB_URL": "state_db_url",
    "DSW_BIND_URL": "public_url",
    "DSW_SUBDOMAIN_HOST": "subdomain_host",
    "DSW_AUTH": "auth",
    "DSW_ADMIN_PASSWORD": "embedded_admin_password",
    "DSW_OIDC_ISSUER": "oidc_issuer",
    "DSW_OIDC_CLIENT_ID": "oidc_client_id",
    "DSW_OIDC_CLIENT_SECRET": "oidc_client_secret",
    "DSW_OIDC_USERNAME_CLAIM": "oidc_username_claim",
    "DSW_OIDC_GROUPS_CLAIM": "oidc_groups_claim",
    "DSW_OIDC_ADMIN_GROUPS": "oidc_admin_groups",
    "DSW_OIDC_ROLE_MAP": "oidc_role_map",
    "DSW_SERVICE_HOST": "service_host",
    "DSW_SERVICE_PORT": "service_port",
    "DSW_RECONCILE_SECONDS": "reconcile_seconds",
    "DSW_IDLE_TIMEOUT": "idle_timeout",
    "DSW_IDLE_MAX_MINUTES": "idle_max_minutes",
    "DSW_IDLE_CHECK_SECONDS": "idle_check_seconds",
    "DSW_ADMIN_TOKEN": "admin_token",
    "DSW_SERVER_LIMIT": "server_limit",
    "DSW_POLL_INTERVAL": "poll_interval",
    "DSW_ENGINE_URL": "engine_url",
    "DSW_IMAGE_REGISTRY": "image_registry",
    "DSW_IMAGE_REGISTRY_TLS_VERIFY": "image_registry_tls_verify",
    "DSW_SAVE_TIMEOUT": "save_timeout",
    "DSW_IMAGE_AGENT_PORT": "image_agent_port",
    "DSW_AGENT_TOKEN_FILE": "agent_token_file",
    "DSW_KUBE_AGENT_NAMESPACE": "kube_agent_namespace",
    "DSW_KUBE_NAMESPACE_TEMPLATE": "kube_namespace_template",
    "DSW_KUBE_AGENT_SELECTOR": "kube_agent_selector",
}


class HubSettings(BaseModel):
    """What the hub needs to know, with the defaults of both deployments."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    catalog_path: str
    state_dir: str = "/var/lib/dsw-hub"
    state_db_url: SecretStr = SecretStr("")  # empty: sqlite file dsw.sqlite in state_dir
    # the hub's public origin: pages, login cookie, the only origin the DSW service takes
    # state changes from. "localhost" rather than 127.0.0.1 so that user servers can have
    # hosts of their own under it (<user>.localhost resolves to loopback in browsers and curl).
    public_url: str = "http://localhost:8000"
    # user servers on their own hosts (JupyterHub's subdomain_host), so a page served by one
    # member's server is another origin than the hub's pages; "" (or "off"): one origin, and
    # the DSW service refuses sharing
    subdomain_host: str = ""

    # sign-in: embedded (per-user passwords of catalogue members: spawner_ext/embedded_auth.py),
    # oidc (single sign-on), custom (any authenticator class: the chart's values schema guards
    # against accept-anything ones)
    auth: Literal["embedded", "oidc", "custom"] = "embedded"
    authenticator_class: str = ""
    admin_users: tuple[str, ...] = ()  # in addition to the catalogue's platform_admins
    embedded_admin_password: SecretStr | None = None  # the first platform admin's, used once
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr = SecretStr("")
    # a claim the user cannot edit: "sub" (stable, opaque) unless the operator names another
    oidc_username_claim: str = "sub"
    oidc_groups_claim: str = "groups"
    oidc_admin_groups: tuple[str, ...] = ()  # provider groups whose members are platform admins
    oidc_role_map: dict[str, Any] = {}  # checked against the catalogue by DSWOAuthenticator
    oidc_callback_url: str = ""  # empty: <public_url>/hub/oauth_callback

    # the DSW service (pages and API at /services/dsw/), run by the hub
    service_host: str = "127.0.0.1"
    service_port: int = Field(10101, ge=1, le=65535)
    reconcile_seconds: float = Field(60, ge=0)
    engine_url: str = ""  # empty: no container engine (Kubernetes); saving images is refused
    image_registry: str = ""
    image_registry_tls_verify: bool = True
    save_timeout: int | None = Field(None, gt=0)
    # one machine with an engine and a registry: the hub runs the image agent on loopback at this
    # port (0: the hub runs none; an agent started elsewhere announces itself in state_dir)
    image_agent_port: int = Field(9731, ge=0, le=65535)
    # Kubernetes (the chart's imageAgent): the service finds the instance's pod in its workspace
    # namespace and the agent pod on the same node (spawner_ext/snapshots.py KubeSettings), and
    # sends the agent the token in this file (mounted from the agent's Secret, never in a
    # ConfigMap). kube_agent_namespace "": not on Kubernetes, saving goes through the engine.
    agent_token_file: str = ""
    kube_agent_namespace: str = ""
    kube_namespace_template: str = "dsw-{workspace}"
    kube_agent_selector: str = "app.kubernetes.io/component=image-agent"

    idle_timeout: int = Field(0, ge=0)  # seconds: the platform's default idle limit; 0: none by default
    idle_max_minutes: float = Field(24 * 60, gt=0)  # the longest idle limit a workspace may allow
    idle_check_seconds: int = Field(0, ge=0)  # how often the culler looks; 0: half the default, 5-300 s
    admin_token: SecretStr | None = None  # set: a "dsw-admin" service with the admin role
    server_limit: int = Field(5, ge=0)  # named servers per user (JupyterHub: 0 is unlimited)
    poll_interval: int = Field(15, gt=0)  # seconds: how soon the hub notices an instance that died

    @field_validator("subdomain_host", mode="before")
    @classmethod
    def _off(cls, value):
        text = str(value or "").strip().rstrip("/")
        return "" if text.lower() in ("", "off", "no", "none", "0", "false") else text

    @field_validator("oidc_admin_groups", mode="before")
    @classmethod
    def _comma_list(cls, value):
        if isinstance(value, str):  # DSW_OIDC_ADMIN_GROUPS is "group-a,group-b"
            return tuple(g.strip() for g in value.split(",") if g.strip())
        return value

    @field_validator("oidc_role_map", mode="before")
    @classmethod
    def _json_text(cls, value):
        if isinstance(value, str):  # DSW_OIDC_ROLE_MAP is JSON text
            return json.loads(value) if value.strip() else {}
        return value

    @property
    def db_url(self) -> str:
        """The DSW state database: the given URL, or a sqlite file next to the hub's state."""
        return self.state_db_url.get_secret_value() or f"sqlite:///{os.path.join(self.state_dir, 'dsw.sqlite')}"

    @property
    def service_url(self) -> str:
        host = f"[{self.service_host}]" if ":" in self.service_host else self.service_host  # an IPv6 pod IP
        return f"http://{host}:{self.service_port}"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], **base: Any) -> HubSettings:
        """``base`` (what the deployment's file knows) overlaid with every non-empty DSW_*
        variable of ``ENVIRONMENT``. A bad value is refused naming the variable (or the key)."""
        given = {field: environ[var] for var, field in ENVIRONMENT.items() if environ.get(var)}
        try:
            return cls(**{**base, **given})
        except ValidationError as exc:
            names = {field: var for var, field in ENVIRONMENT.items() if var in environ and environ[var]}
            problems = [f"{names.get(str(e['loc'][0]), e['loc'][0]) if e['loc'] else '?'}: {e['msg']}"
                        for e in exc.errors()]
            raise ValueError("invalid DSW hub settings:\n  " + "\n  ".join(problems)) from None


def configure(c, settings: HubSettings) -> Catalog:
    """Set everything DSW needs on the config object ``c``; return the effective catalogue."""
    s = settings
    catalog = load_catalog(s.catalog_path)  # fail fast with file/path/cause on a bad catalogue
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = s.server_limit
    c.JupyterHub.default_url = "/hub/home"
    if s.subdomain_host:
        c.JupyterHub.subdomain_host = s.subdomain_host
        c.JupyterHub.subdomain_hook = subdomain_hook
    c.Spawner.poll_interval = s.poll_interval
    # the platform level of the idle policy (spawner_ext/policy.py): default and workspace bound
    c.Spawner.idle_default_minutes = s.idle_timeout / 60
    c.Spawner.idle_max_minutes = s.idle_max_minutes
    c.Spawner.idle_min_minutes = idle_min_minutes(s)
    c.CatalogSpawnerMixin.catalog_path = s.catalog_path
    c.CatalogSpawnerMixin.state_db_url = s.db_url
    _authenticator(c, s, catalog)

    # workspace roles as JupyterHub RBAC: groups, roles and custom scopes from the catalogue
    # as changed at run time (members added/removed through the service, SSO logins)
    with sessions(s.db_url)() as session:
        live = effective_catalog(catalog, session)
    c.JupyterHub.custom_scopes = rbac.custom_scopes()
    # with SSO the authenticator sets each user's groups at login (manage_groups; the hub
    # refuses load_groups then)
    c.JupyterHub.load_groups = ({} if s.auth == "oidc"
                                else {name: {"users": users} for name, users in rbac.groups(live).items()})
    roles = rbac.roles(live)
    if s.auth == "oidc":  # the platform-admin role goes to the provider's admin groups
        from .sso import PLATFORM_ADMIN_GROUP

        for role in roles:
            if role["name"] == "dsw-platform-admin":
                role["users"], role["groups"] = [], [PLATFORM_ADMIN_GROUP]
    services = [dsw_service(s)]
    agent = image_agent(s)
    if agent:
        services.append(agent)
    # always: workspaces and members choose idle limits even when the platform default is off
    culler, culler_role = idle_culler(s)
    # each instance reports its last activity (jupyterhub-singleuser) as often as the culler
    # looks, not every 300 s (its default): the culler never judges an instance in use on a
    # report older than one of its rounds
    c.Spawner.environment.update({"JUPYTERHUB_ACTIVITY_INTERVAL": str(idle_check_seconds(s))})
    services.append(culler)
    roles.append(culler_role)
    if s.admin_token is not None and s.admin_token.get_secret_value():
        services.append({"name": "dsw-admin", "api_token": s.admin_token.get_secret_value()})
        roles.append({"name": "admin", "services": ["dsw-admin"]})
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles
    return live


def _authenticator(c, s: HubSettings, catalog: Catalog) -> None:
    c.Authenticator.admin_users = set(catalog.platform_admins) | set(s.admin_users)
    if s.auth == "oidc":
        # single sign-on: provider groups -> workspace roles at each login (spawner_ext/sso.py);
        # the provider's endpoints are discovered when the hub starts the authenticator
        for name in ("oidc_issuer", "oidc_client_id"):
            if not getattr(s, name):
                raise ValueError(f"DSW hub settings: auth=oidc needs {name}")
        a = c.DSWOAuthenticator
        c.JupyterHub.authenticator_class = "spawner_ext.sso.DSWOAuthenticator"
        a.issuer = s.oidc_issuer
        a.client_id = s.oidc_client_id
        a.client_secret = s.oidc_client_secret.get_secret_value()
        a.oauth_callback_url = s.oidc_callback_url or f"{s.public_url.rstrip('/')}/hub/oauth_callback"
        a.username_claim = s.oidc_username_claim
        a.auth_state_groups_key = f"oauth_user.{s.oidc_groups_claim}"
        a.platform_admin_groups = set(s.oidc_admin_groups)
        # platform admins from a provider group, never from a name (the catalogue's
        # platform_admins and admin_users are names): see spawner_ext/sso.py
        c.Authenticator.admin_users = set()
        a.workspace_role_map = dict(s.oidc_role_map)
        a.catalog_path = s.catalog_path
        a.state_db_url = s.db_url
    elif s.auth == "embedded":
        # per-user passwords (nativeauthenticator), members of the effective catalogue only;
        # the first platform admin's account is made with the generated password
        if s.embedded_admin_password is None:
            raise ValueError("DSW hub settings: auth=embedded needs embedded_admin_password (DSW_ADMIN_PASSWORD)")
        from .embedded_auth import TEMPLATE_DIR

        c.JupyterHub.authenticator_class = "spawner_ext.embedded_auth.DSWNativeAuthenticator"
        c.JupyterHub.template_paths = [TEMPLATE_DIR]
        a = c.DSWNativeAuthenticator
        a.catalog_path = s.catalog_path
        a.state_db_url = s.db_url
        admins = [*catalog.platform_admins, *s.admin_users]
        a.first_admin = admins[0] if admins else ""
        a.first_admin_password = s.embedded_admin_password.get_secret_value()
    else:
        if not s.authenticator_class:
            raise ValueError("DSW hub settings: auth=custom needs authenticator_class")
        c.JupyterHub.authenticator_class = s.authenticator_class


def subdomain_hook(name: str, domain: str, kind: str) -> str:
    """Each user's servers on a host of their own (JupyterHub's idna hook: ``<user>.<domain>``);
    services stay on the hub's host. The DSW pages are the hub's own (trusted) pages, so they
    keep the hub's origin and the same address with or without subdomains; the origins that
    must differ from the hub's are the members' servers."""
    from jupyterhub.utils import subdomain_hook_idna

    return domain if kind == "service" else subdomain_hook_idna(name, domain, kind)


def dsw_service(s: HubSettings) -> dict:
    """The DSW service (FastAPI, ``python -m spawner_ext.service``) as a hub-managed service:
    the hub starts it with its own API token and routes /services/dsw/ to it."""
    env = {"DSW_CATALOG": s.catalog_path, "DSW_STATE_DB_URL": s.db_url, "DSW_STATE": s.state_dir,
           "DSW_IDLE_DEFAULT_MINUTES": f"{s.idle_timeout / 60:g}", "DSW_IDLE_MAX_MINUTES": f"{s.idle_max_minutes:g}",
           "DSW_IDLE_MIN_MINUTES": f"{idle_min_minutes(s):g}",
           "DSW_PUBLIC_URL": s.public_url,
           "DSW_RECONCILE_SECONDS": f"{s.reconcile_seconds:g}", "PYTHONPATH": os.pathsep.join(sys.path),
           "DSW_IMAGE_REGISTRY_TLS_VERIFY": "1" if s.image_registry_tls_verify else "0"}
    # saving instances as images (spawner_ext/snapshots.py) runs in the service: only with an engine
    if s.subdomain_host:  # absent: one origin, the service refuses sharing
        env["DSW_SUBDOMAIN_HOST"] = s.subdomain_host
    if s.engine_url:
        env["DSW_ENGINE_URL"] = s.engine_url
    if s.image_registry:
        env["DSW_IMAGE_REGISTRY"] = s.image_registry
    if s.save_timeout:
        env["DSW_SAVE_TIMEOUT"] = str(s.save_timeout)
    if s.agent_token_file:
        env["DSW_AGENT_TOKEN_FILE"] = s.agent_token_file
    if s.kube_agent_namespace:  # Kubernetes: saving asks the image agent on the instance's node
        env.update(DSW_KUBE_AGENT_NAMESPACE=s.kube_agent_namespace,
                   DSW_KUBE_NAMESPACE_TEMPLATE=s.kube_namespace_template,
                   DSW_KUBE_AGENT_SELECTOR=s.kube_agent_selector)
    return {
        "name": "dsw",
        "url": s.service_url,
        "command": [sys.executable, "-m", "spawner_ext.service"],
        "environment": env,
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": sorted(rbac.custom_scopes()),
        "display": True,
    }


def image_agent(s: HubSettings) -> dict | None:
    """The image agent beside the engine (one machine), as a hub-managed service, so saving pushes
    only the instance's own layer as on Kubernetes. Only with an engine and a registry host to push
    to: without a registry the service commits through the engine. Its token is made once (0600) in
    the state folder; ``--announce`` tells the DSW service where the agent and its token are."""
    from .snapshots import registry_host

    if not (s.engine_url and s.image_agent_port and registry_host(s.image_registry)):
        return None
    token = os.path.join(s.state_dir, "image-agent.token")
    if not os.path.exists(token):
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return {"name": "image-agent",
            "command": [sys.executable, "-m", "spawner_ext.agent", "--host=127.0.0.1",
                        f"--port={s.image_agent_port}", f"--announce={s.state_dir}"],
            "environment": {"DSW_AGENT_TOKEN_FILE": token, "DSW_AGENT_ENGINE_URL": s.engine_url,
                            "DSW_AGENT_REGISTRY_INSECURE": "0" if s.image_registry_tls_verify else "1",
                            "PYTHONPATH": os.pathsep.join(sys.path)}}


def idle_check_seconds(s: HubSettings) -> int:
    """How often the idle culler looks (``DSW_IDLE_CHECK_SECONDS``; unset: half the platform
    default, 5 to 300 s), and so how often instances report their activity to the hub."""
    return s.idle_check_seconds or max(5, min(300, (s.idle_timeout or 24 * 3600) // 2))


def idle_min_minutes(s: HubSettings) -> float:
    """The shortest idle limit a workspace or member may choose: two check periods. An instance
    in use reports its activity once per period and the culler looks once per period, so its
    last activity as the culler sees it may be up to two periods old."""
    return 2 * idle_check_seconds(s) / 60


def idle_culler(s: HubSettings) -> tuple[dict, dict]:
    """jupyterhub-idle-culler as a hub-managed service, and the least-privilege role it needs
    (find users' servers and their activity, stop servers; it never removes users). Its
    per-instance decision is spawner_ext/idle.py (the instance's own limit from the state
    database); ``--timeout`` is the platform default, for instances without a record."""
    timeout = s.idle_timeout or 24 * 3600
    every = idle_check_seconds(s)
    from .idle import config_file

    service = {"name": "idle-culler",
               "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={timeout}",
                           f"--cull-every={every}", f"--config={config_file(s.state_dir)}"],
               "environment": {"DSW_STATE_DB_URL": s.db_url, "DSW_IDLE_DEFAULT_SECONDS": str(s.idle_timeout),
                               "PYTHONPATH": os.pathsep.join(sys.path)}}
    role = {"name": "idle-culler", "services": ["idle-culler"],
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]}
    return service, role
