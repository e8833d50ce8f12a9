"""JupyterHub configuration for DSW Hub on Kubernetes (mounted from the chart's ConfigMap).

Settings come from /usr/local/etc/dsw/settings.json (non-secret, rendered from values)
and from environment variables filled from the chart's Secret.
"""

import json
import os
from pathlib import Path

CONFIG_DIR = Path(os.environ.get("DSW_CONFIG_DIR", "/usr/local/etc/dsw"))
settings = json.loads((CONFIG_DIR / "settings.json").read_text())
hub, single = settings["hub"], settings["singleuser"]

c = get_config()  # noqa: F821 - provided by JupyterHub

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

c.JupyterHub.authenticator_class = hub["authenticator"]["class"]
c.Authenticator.admin_users = set(hub["authenticator"]["adminUsers"])

# --- instances ---------------------------------------------------------------------
c.JupyterHub.spawner_class = "spawner_ext.kube.spawner.DSWKubeSpawner"
s = c.DSWKubeSpawner
s.catalog_path = str(CONFIG_DIR / "catalog.yaml")
s.workspace_namespace_template = single["namespaceTemplate"]
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
if single["networkPolicy"]["enabled"]:
    s.network_policy_peers = {"namespace": hub["namespace"], "podLabels": hub["peerLabels"]}

extra = CONFIG_DIR / "extra_config.py"
if extra.exists():
    exec(compile(extra.read_text(), str(extra), "exec"))  # noqa: S102 - operator-provided config
