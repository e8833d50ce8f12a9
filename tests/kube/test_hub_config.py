"""The chart's hub configuration, loaded as JupyterHub loads it: the chart is rendered by the real
Helm engine (into the kmock API emulator: no Kubernetes API server can run here), then
helm/dsw-hub/files/jupyterhub_config.py is executed against a traitlets Config with the
rendered ConfigMap files and the hub container's environment (values, Secret keys and the
pod IP resolved as the kubelet would). The product it configures must be the one the
one-machine configuration configures for the same catalogue."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import psycopg2
import pytest
import yaml
from traitlets.config import Config

from spawner_ext import rbac
from spawner_ext.catalog.db import MemberChange, sessions
from spawner_ext.hubconfig import ENVIRONMENT, HubSettings
from tests.conftest import BASE_CATALOG
from tests.state.conftest import pg_url, postgres_server  # noqa: F401  (fixtures: a real PostgreSQL)

from .test_chart import CHART, ROOT, VALUES_MAX, one, render  # noqa: F401  (render: the fixture)

POD_IP = "10.42.0.7"


def hub_environment(objects: list[dict], pod_ip: str = POD_IP) -> dict[str, str]:
    """The hub container's environment as the kubelet fills it from the rendered objects."""
    container = one(objects, "Deployment", "dsw-hub-hub")["spec"]["template"]["spec"]["containers"][0]
    secret = {k: base64.b64decode(v).decode() for k, v in one(objects, "Secret", "dsw-hub-hub")["data"].items()}
    env = {}
    for e in container["env"]:
        source = e.get("valueFrom", {})
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in source:
            assert source["secretKeyRef"]["name"] == "dsw-hub-hub"
            env[e["name"]] = secret[source["secretKeyRef"]["key"]]
        elif source.get("fieldRef", {}).get("fieldPath") == "status.podIP":
            env[e["name"]] = pod_ip
        else:
            raise AssertionError(f"unexpected env entry {e}")
    return env


def load_chart_config(objects: list[dict], tmp_path: Path, monkeypatch) -> tuple[Config, dict, Path]:
    """Execute the chart's jupyterhub_config.py as the hub pod would; return (config, env, data dir).

    The ConfigMap's files go to a folder standing for its mount (DSW_CONFIG_DIR), and the
    hub's data volume (mounted at DSW_STATE in the pod) is a temporary folder."""
    pod = one(objects, "Deployment", "dsw-hub-hub")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    env = hub_environment(objects)
    assert env["DSW_CONFIG_DIR"] == mounts["config"] and env["DSW_STATE"] == mounts["data"]
    config_dir, data_dir = tmp_path / "config", tmp_path / "data"
    config_dir.mkdir()
    data_dir.mkdir(exist_ok=True)
    data = one(objects, "ConfigMap", "dsw-hub-hub")["data"]
    for name, text in data.items():
        (config_dir / name).write_text(text)
    env.update(DSW_CONFIG_DIR=str(config_dir), DSW_STATE=str(data_dir))
    # hub.extraConfig: a key of the Secret, mounted as a file of its own
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    if "extra-config" in mounts:
        assert mounts["extra-config"] == "/usr/local/etc/dsw-secret"
        text = base64.b64decode(one(objects, "Secret", "dsw-hub-hub")["data"]["extra_config.py"]).decode()
        (secret_dir / "extra_config.py").write_text(text)
    env["DSW_EXTRA_CONFIG_DIR"] = str(secret_dir)
    for var in [*ENVIRONMENT, "DSW_DB_URL", "DSW_COOKIE_SECRET", "CONFIGPROXY_AUTH_TOKEN", "DSW_EXTRA_CONFIG_DIR"]:
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    c = Config()
    exec(compile(data["jupyterhub_config.py"], "jupyterhub_config.py", "exec"), {"get_config": lambda: c})
    return c, env, data_dir


def load_one_machine_config(env: dict[str, str], monkeypatch) -> Config:
    for var in [*ENVIRONMENT, "DSW_DB_URL"]:
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    path = ROOT / "hub_config" / "jupyterhub_config.py"
    c = Config()
    exec(compile(path.read_text(), str(path), "exec"), {"get_config": lambda: c, "__file__": str(path)})
    return c


def services(c: Config) -> dict[str, dict]:
    return {s["name"]: s for s in c.JupyterHub.services}


def roles(c: Config) -> dict[str, dict]:
    return {r["name"]: r for r in c.JupyterHub.load_roles}


async def test_default_chart_runs_the_whole_product(render, tmp_path, monkeypatch):
    objects = (await render())["objects"]
    c, env, data_dir = load_chart_config(objects, tmp_path, monkeypatch)
    catalog = yaml.safe_load(yaml.safe_load((CHART / "values.yaml").read_text())["catalog"])

    # the DSW service: managed by the hub, in the hub pod, reached by the proxy at the pod's address
    dsw = services(c)["dsw"]
    # the idle culler always runs (workspaces and members choose limits); no admin token unless asked
    assert set(services(c)) == {"dsw", "idle-culler"}
    assert dsw["url"] == f"http://{POD_IP}:10101"
    assert dsw["command"][1:] == ["-m", "spawner_ext.service"]
    assert dsw["oauth_client_allowed_scopes"] == sorted(rbac.custom_scopes())
    # its state: a sqlite file on the hub's volume, the same file the spawner admits quota in
    assert dsw["environment"]["DSW_STATE_DB_URL"] == f"sqlite:///{data_dir}/dsw.sqlite"
    assert c.CatalogSpawnerMixin.state_db_url == dsw["environment"]["DSW_STATE_DB_URL"]
    assert (data_dir / "dsw.sqlite").exists()
    assert "DSW_ENGINE_URL" not in dsw["environment"]  # no container engine on Kubernetes
    ports = one(objects, "Deployment", "dsw-hub-hub")["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "dsw", "containerPort": 10101} in ports

    # workspace groups, roles and custom scopes from the catalogue
    assert c.JupyterHub.custom_scopes == rbac.custom_scopes()
    assert c.JupyterHub.load_groups[rbac.ws_role_group("demo", "owner")] == {"users": ["admin"]}
    demo_owner = roles(c)[rbac.ws_role_name("demo", "owner")]
    assert demo_owner["groups"] == [rbac.ws_role_group("demo", "owner")]
    assert rbac.scope("manage-members", "demo") in demo_owner["scopes"]
    assert roles(c)["user"]["scopes"] == rbac.BASE_USER_SCOPES
    assert roles(c)["dsw-platform-admin"]["users"] == catalog["platform_admins"]
    assert (c.JupyterHub.allow_named_servers, c.JupyterHub.named_server_limit_per_user) == (True, 5)
    assert c.Spawner.poll_interval == 15

    # the embedded login: per-user passwords of members (nativeauthenticator), the first
    # platform admin's generated one from the chart's Secret; no shared password
    assert c.JupyterHub.authenticator_class == "spawner_ext.embedded_auth.DSWNativeAuthenticator"
    a = c.DSWNativeAuthenticator
    assert (a.first_admin, a.first_admin_password) == ("admin", env["DSW_ADMIN_PASSWORD"])
    assert (a.catalog_path, a.state_db_url) == (c.CatalogSpawnerMixin.catalog_path, c.CatalogSpawnerMixin.state_db_url)
    assert "DSW_USER_PASSWORD" not in env and c.Authenticator.admin_users == {"admin"}
    from spawner_ext.embedded_auth import TEMPLATE_DIR
    assert c.JupyterHub.template_paths == [TEMPLATE_DIR]  # JupyterHub 5 finds nativeauthenticator's pages
    assert c.JupyterHub.hub_connect_url == "http://dsw-hub-hub.dsw.svc.cluster.local:8081"
    # the password is in the Secret only: not in the ConfigMap the hub's readers may see
    config_texts = one(objects, "ConfigMap", "dsw-hub-hub")["data"].values()
    for secret in (env["DSW_ADMIN_PASSWORD"], env["DSW_COOKIE_SECRET"]):
        assert not any(secret in text for text in config_texts)


async def test_maximal_values_configure_sso_culler_token_and_the_hubs_database(
        render, tmp_path, monkeypatch, pg_url):
    """hub.db.type=url: the DSW state goes to the hub's own PostgreSQL database (a throwaway
    cluster on loopback stands for the values' database server)."""
    from spawner_ext.kube.spawner import DSWKubeSpawner

    values = yaml.safe_load(VALUES_MAX.read_text())
    values["hub"]["db"]["url"] = pg_url
    objects = (await render(values))["objects"]
    c, env, _ = load_chart_config(objects, tmp_path, monkeypatch)

    dsw = services(c)["dsw"]
    assert dsw["environment"]["DSW_STATE_DB_URL"] == c.JupyterHub.db_url == pg_url
    with psycopg2.connect(pg_url.replace("postgresql+psycopg2", "postgresql")) as conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = {row[0] for row in cur.fetchall()}
    assert {"member_changes", "allocations", "reservations"} <= tables  # read at configuration time
    assert dsw["environment"]["DSW_RECONCILE_SECONDS"] == "30"
    culler = services(c)["idle-culler"]
    assert culler["command"][1:3] == ["-m", "jupyterhub_idle_culler"] and "--timeout=3600" in culler["command"]
    assert roles(c)["idle-culler"]["scopes"] == ["list:users", "read:users:activity", "read:servers",
                                                 "delete:servers"]
    assert services(c)["dsw-admin"]["api_token"] == values["hub"]["adminToken"]
    assert roles(c)["admin"]["services"] == ["dsw-admin"]
    assert (c.JupyterHub.named_server_limit_per_user, c.Spawner.poll_interval) == (3, 20)

    # single sign-on: endpoints are discovered when the authenticator starts, not here
    oidc = values["hub"]["authenticator"]["oidc"]
    a = c.DSWOAuthenticator
    assert c.JupyterHub.authenticator_class == "spawner_ext.sso.DSWOAuthenticator"
    assert (a.issuer, a.client_id, a.client_secret, a.oauth_callback_url) == (
        oidc["issuer"], oidc["clientId"], oidc["clientSecret"], oidc["callbackUrl"])
    assert (a.username_claim, a.auth_state_groups_key, a.workspace_role_map) == (
        "email", "oauth_user.roles", oidc["roleMap"])
    assert a.state_db_url == values["hub"]["db"]["url"]
    assert c.JupyterHub.load_groups == {}  # the authenticator manages groups at login
    # platform admins from the provider's groups, never from a name (catalogue or adminUsers)
    from spawner_ext.sso import PLATFORM_ADMIN_GROUP
    assert c.Authenticator.admin_users == set() and a.platform_admin_groups == {"dsw-admins", "platform-ops"}
    assert (roles(c)["dsw-platform-admin"]["users"], roles(c)["dsw-platform-admin"]["groups"]) == (
        [], [PLATFORM_ADMIN_GROUP])
    assert a.scope == ["openid", "profile", "email", "roles"]  # extraConfig ran after the chart's settings
    assert a.token_params == {"client_assertion": "extra-config-secret-value"}  # from the Secret's file
    # user servers on their own hosts; the service told the hub's origin and the subdomains
    assert c.JupyterHub.subdomain_host == "https://dsw.example.com"
    assert dsw["environment"]["DSW_PUBLIC_URL"] == dsw["environment"]["DSW_SUBDOMAIN_HOST"] == "https://dsw.example.com"

    # the Kubernetes spawner and its traits
    assert c.JupyterHub.spawner_class == "spawner_ext.kube.spawner.DSWKubeSpawner"
    assert c.ConfigurableHTTPProxy.api_url == "http://dsw-hub-proxy-api:8001"
    unknown = sorted(set(c.DSWKubeSpawner) - set(DSWKubeSpawner.class_trait_names()))
    assert not unknown, f"config sets traits DSWKubeSpawner does not have: {unknown}"
    s = c.DSWKubeSpawner
    assert (s.workspace_namespace_template, s.create_namespaces, s.home_storage_class, s.home_size) == (
        "team-{workspace}", False, "ceph-rbd", "50Gi")
    assert (s.oss_endpoint_attribute, s.oss_region_attribute, s.oss_secret_access_key_field,
            s.oss_secret_secret_key_field, s.storage_timeout) == (
        "endpointUrl", "", "access_key_id", "secret_access_key", 30)
    # the hub makes each workspace's NetworkPolicy (the chart does not)
    assert s.network_policy_peers["namespace"] == "dsw"
    assert [p["app.kubernetes.io/component"] for p in s.network_policy_peers["podLabels"]] == ["hub", "proxy"]
    assert (list(s.network_policy_egress_deny), s.network_policy_dns_namespace) == (["203.0.113.10/32"], "kube-dns")
    assert c.CatalogSpawnerMixin.catalog_path == str(tmp_path / "config" / "catalog.yaml")


async def test_dummy_authenticator_only_with_the_explicit_test_flag(render, tmp_path, monkeypatch):
    values = {"hub": {"authenticator": {"type": "custom", "class": "dummy", "allowAnyPasswordForTesting": True}}}
    objects = (await render(values))["objects"]
    c, _, _ = load_chart_config(objects, tmp_path, monkeypatch)
    assert c.JupyterHub.authenticator_class == "dummy"
    assert "admin-password" not in one(objects, "Secret", "dsw-hub-hub")["data"]


async def test_one_machine_and_chart_configure_the_same_product(render, tmp_path, monkeypatch):
    """Same catalogue, same DSW state (a member added at run time), same options: the same
    groups, roles, custom scopes, services and sign-in rules on both deployments."""
    token, catalog_text = "same-admin-token-0123456789abcdef0123", yaml.safe_dump(BASE_CATALOG)

    def add_member(db_url: str) -> None:  # as the DSW service records a member added by an admin
        with sessions(db_url)() as session, session.begin():
            session.add(MemberChange(workspace="nlp", user="carol", role="developer", source="admin"))

    local_state = tmp_path / "local"
    local_state.mkdir()
    (tmp_path / "catalog.yaml").write_text(catalog_text)
    add_member(f"sqlite:///{local_state}/dsw.sqlite")
    local = load_one_machine_config({
        "DSW_STATE": str(local_state), "DSW_CATALOG": str(tmp_path / "catalog.yaml"),
        "DSW_ENGINE_URL": f"unix://{tmp_path}/no-engine.sock", "DSW_ADMIN_TOKEN": token,
        "DSW_IDLE_TIMEOUT": "600", "DSW_IDLE_MAX_MINUTES": "480", "DSW_IDLE_CHECK_SECONDS": "30",
        "DSW_SERVER_LIMIT": "4", "DSW_POLL_INTERVAL": "10"}, monkeypatch)

    chart_dir = tmp_path / "chart"
    chart_dir.mkdir()
    (chart_dir / "data").mkdir()
    add_member(f"sqlite:///{chart_dir}/data/dsw.sqlite")
    objects = (await render({"catalog": catalog_text, "hub": {
        "adminToken": token, "idleTimeout": 600, "idleMaxMinutes": 480, "idleCheckSeconds": 30,
        "namedServerLimit": 4, "pollInterval": 10}}))["objects"]
    kube, _, _ = load_chart_config(objects, chart_dir, monkeypatch)

    assert local.JupyterHub.load_groups[rbac.ws_role_group("nlp", "developer")] == {"users": ["carol", "nina"]}
    for name in ("load_groups", "load_roles", "custom_scopes", "allow_named_servers",
                 "named_server_limit_per_user", "default_url", "authenticator_class"):
        assert getattr(local.JupyterHub, name) == getattr(kube.JupyterHub, name), name
    assert local.Spawner.poll_interval == kube.Spawner.poll_interval == 10
    # the platform level of the idle policy, from the same settings on both
    assert local.Spawner.idle_default_minutes == kube.Spawner.idle_default_minutes == 10
    assert local.Spawner.idle_max_minutes == kube.Spawner.idle_max_minutes == 480
    assert local.Spawner.idle_min_minutes == kube.Spawner.idle_min_minutes == 1  # two 30 s checks
    for c in (local, kube):
        assert "--cull-every=30" in services(c)["idle-culler"]["command"]
    for name in ("first_admin", "first_admin_password"):  # the same sign-in rules, the admin's own password
        assert bool(getattr(local.DSWNativeAuthenticator, name)) and bool(getattr(kube.DSWNativeAuthenticator, name))
    assert local.DSWNativeAuthenticator.first_admin == kube.DSWNativeAuthenticator.first_admin == "root"
    assert local.Authenticator.admin_users == kube.Authenticator.admin_users == {"root"}

    def comparable(c: Config) -> dict:
        """A service without what legitimately differs: its address, and the paths and engine
        of its environment."""
        out = {}
        for name, svc in services(c).items():
            svc = dict(svc)
            svc.pop("url", None)
            env = svc.pop("environment", {})
            # one machine serves servers on subdomains by default, the chart when subdomainHost is set
            svc["environment"] = sorted(set(env) - {"DSW_ENGINE_URL", "DSW_SUBDOMAIN_HOST"})
            # the culler's config file lives in each deployment's state folder
            svc["command"] = [a.split("=")[0] if a.startswith("--config=") else a for a in svc.get("command", [])]
            out[name] = svc
        return out

    assert comparable(local) == comparable(kube)
    assert set(services(local)) == {"dsw", "idle-culler", "dsw-admin"}
    assert "DSW_ENGINE_URL" in services(local)["dsw"]["environment"]  # one machine saves images
    assert os.path.exists(f"{chart_dir}/data/dsw.sqlite")


async def test_the_charts_dsw_service_serves_without_a_container_engine(render, tmp_path, monkeypatch):
    """The service as the chart's configuration defines it (command and environment; no
    DSW_ENGINE_URL) starts and serves its API. Only the address differs: the pod's IP is not
    this machine's, so it listens on loopback at the configured port's place."""
    import asyncio
    import socket
    import subprocess
    import sys

    import httpx

    c, _, _ = load_chart_config((await render())["objects"], tmp_path, monkeypatch)
    dsw = services(c)["dsw"]
    assert "DSW_ENGINE_URL" not in dsw["environment"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSW_", "JUPYTERHUB_"))}
    env.update(dsw["environment"])
    env.update(JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{port}", JUPYTERHUB_SERVICE_NAME="dsw",
               JUPYTERHUB_SERVICE_PREFIX="/services/dsw/", JUPYTERHUB_API_URL="http://127.0.0.1:9/hub/api",
               JUPYTERHUB_API_TOKEN="not-used", JUPYTERHUB_CLIENT_ID="service-dsw", JUPYTERHUB_BASE_URL="/",
               JUPYTERHUB_OAUTH_CALLBACK_URL="/services/dsw/oauth_callback", DSW_RECONCILE_SECONDS="0")
    assert dsw["command"][0] == sys.executable
    log = tmp_path / "service.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(dsw["command"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                assert proc.poll() is None, f"the service exited:\n{log.read_text()[-3000:]}"
                try:
                    r = await client.get(f"http://127.0.0.1:{port}/services/dsw/api/v1/openapi.json")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"the service did not answer:\n{log.read_text()[-3000:]}")
            assert r.status_code == 200 and "/services/dsw/api/v1/workspaces" in r.json()["paths"]
            # without a hub token nobody gets in
            denied = await client.get(f"http://127.0.0.1:{port}/services/dsw/api/v1/workspaces")
            assert denied.status_code in (401, 403)
    finally:
        proc.terminate()
        proc.wait(20)


# --- HubSettings: the defaults in one place, the environment's names in refusals ---------

def test_settings_defaults_and_environment_overrides():
    base = HubSettings(catalog_path="/c.yaml")
    assert (base.server_limit, base.poll_interval, base.idle_timeout, base.service_port, base.auth) == (
        5, 15, 0, 10101, "embedded")
    assert base.db_url == "sqlite:////var/lib/dsw-hub/dsw.sqlite"
    s = HubSettings.from_environ({"DSW_SERVER_LIMIT": "2", "DSW_POLL_INTERVAL": "7", "DSW_IDLE_TIMEOUT": "",
                                  "DSW_OIDC_ROLE_MAP": '{"g": ["ws:developer"]}', "DSW_SERVICE_HOST": "fd00::7"},
                                 catalog_path="/c.yaml", server_limit=9)
    assert (s.server_limit, s.poll_interval, s.idle_timeout) == (2, 7, 0)  # set variables win, empty ones do not
    assert s.oidc_role_map == {"g": ["ws:developer"]}
    assert s.service_url == "http://[fd00::7]:10101"


def test_bad_settings_are_refused_naming_the_variable():
    with pytest.raises(ValueError) as caught:
        HubSettings.from_environ({"DSW_POLL_INTERVAL": "0", "DSW_AUTH": "ldap"}, catalog_path="/c.yaml")
    assert "DSW_POLL_INTERVAL" in str(caught.value) and "DSW_AUTH" in str(caught.value)
    with pytest.raises(ValueError, match="extra_key"):
        HubSettings.from_environ({}, catalog_path="/c.yaml", extra_key=1)  # a misspelt settings.json key


def test_secrets_do_not_print_with_the_settings():
    s = HubSettings.from_environ({"DSW_ADMIN_TOKEN": "tok-123456", "DSW_STATE_DB_URL": "postgresql://u:pw-42@db/x",
                                  "DSW_OIDC_CLIENT_SECRET": "cs-789"}, catalog_path="/c.yaml")
    text = repr(s) + str(s) + s.model_dump_json()
    assert not any(secret in text for secret in ("tok-123456", "pw-42", "cs-789"))
    assert s.db_url == "postgresql://u:pw-42@db/x"
