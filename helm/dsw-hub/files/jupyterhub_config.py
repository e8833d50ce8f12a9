"""JupyterHub configuration for DSW Hub on Kubernetes (mounted from the chart's ConfigMap).

What the hub runs (sign-in, workspace groups/roles/scopes, the DSW service at /services/dsw/,
named servers, idle culler, admin token) is set by spawner_ext/hubconfig.py, the same module
the one-machine configuration calls. This file keeps what is particular to Kubernetes:
settings from /usr/local/etc/dsw/settings.json (non-secret, rendered from values) and from
DSW_* variables filled from the chart's Secret, the Kubernetes spawner and its traits, and
how the proxy (its own pod) and the hub database are reached.
"""

import json
import os
from pathlib import Path

from spawner_ext.hubconfig import HubSettings, configure

CONFIG_DIR = Path(os.environ.get("DSW_CONFIG_DIR", "/usr/local/etc/dsw"))
settings = json.loads((CONFIG_DIR / "settings.json").read_text())
hub, single = settings["hub"], settings["singleuser"]

c = get_config()  # noqa: F821 - provided by JupyterHub

# --- the product: the same as one machine. No container engine here: the DSW service saves
# instances through the node image agent (imageAgent.enabled: settings.json names its namespace,
# selector, token file and registry; refused without it). Its state lives in the hub's database
# (DSW_STATE_DB_URL from the Secret) or in a sqlite file on the hub's volume (DSW_STATE).
dsw = HubSettings.from_environ(os.environ, catalog_path=str(CONFIG_DIR / "catalog.yaml"), **settings["dsw"])
configure(c, dsw)

# --- hub and proxy -----------------------------------------------------------------
c.JupyterHub.cookie_secret = bytes.fromhex(os.environ["DSW_COOKIE_SECRET"])
c.JupyterHub.db_url = os.environ["DSW_DB_URL"]
c.JupyterHub.hub_bind_url = "http://:8081"
# User pods live in other namespaces: reach the hub through its fully qualified name.
c.JupyterHub.hub_connect_url = f"http://{hub['serviceName']}.{hub['namespace']}.svc.cluster.local:8081"
c.JupyterHub.log_level = hub["logLevel"]
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = f"http://{hub['proxyApiService']}:8001"
c.ConfigurableHTTPProxy.auth_token = os.environ["CONFIGPROXY_AUTH_TOKEN"]
c.JupyterHub.cleanup_servers = False  # pods survive a hub restart; the hub finds them again

# --- instances ---------------------------------------------------------------------
c.JupyterHub.spawner_class = "spawner_ext.kube.spawner.DSWKubeSpawner"
s = c.DSWKubeSpawner
s.workspace_namespace_template = single["namespaceTemplate"]
# Namespaces: the chart makes those of listed workspaces (rbac.workspaces), the hub the others.
s.create_namespaces = single["createNamespaces"]
s.start_timeout = single["startTimeout"]
s.cpu_request_fraction = single["cpuRequestFraction"]
s.memory_request_fraction = single["memoryRequestFraction"]
s.home_size = single["home"]["size"]
s.home_storage_class = single["home"]["storageClassName"] or None
s.home_access_modes = single["home"]["accessModes"]
s.gpu_resource_name = single["gpu"]["resourceName"]
s.gpu_type_label = single["gpu"]["typeLabel"]
oss = single["oss"]
s.oss_csi_driver = oss["csiDriver"]
s.oss_bucket_attribute = oss["bucketAttribute"]
s.oss_prefix_attribute = oss["prefixAttribute"]
s.oss_endpoint_attribute = oss["endpointAttribute"]
s.oss_region_attribute = oss["regionAttribute"]
s.oss_volume_attributes = oss["volumeAttributes"]
s.oss_secret_access_key_field = oss["secretKeys"]["accessKey"]
s.oss_secret_secret_key_field = oss["secretKeys"]["secretKey"]
s.storage_timeout = oss["checkTimeout"]
if single["networkPolicy"]["enabled"]:  # the hub is the only maker of workspace policies
    s.network_policy_peers = {"namespace": hub["namespace"], "podLabels": hub["peerLabels"]}
    s.network_policy_egress_deny = single["networkPolicy"]["egressDeny"]
    s.network_policy_dns_namespace = single["networkPolicy"]["dnsNamespace"]

# hub.extraConfig comes from the chart's Secret (it may hold authenticator client secrets)
extra = Path(os.environ.get("DSW_EXTRA_CONFIG_DIR", "/usr/local/etc/dsw-secret")) / "extra_config.py"
if extra.exists():
    exec(compile(extra.read_text(), str(extra), "exec"))  # noqa: S102 - operator-provided config
