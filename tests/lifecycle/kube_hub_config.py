"""Test only: the one-machine hub configuration, unchanged, with DSWKubeSpawner in place of the
local spawner, pointed at the kmock emulator. The emulator stands in for a Kubernetes API server
(none can run on these machines); a fake kubelet in the test process runs each pod as a podman
container and reports its IP, so the hub reaches a real single-user server."""

import os
from pathlib import Path

load_subconfig(str(Path(__file__).resolve().parents[2] / "hub_config" / "jupyterhub_config.py"))  # noqa: F821

c = get_config()  # noqa: F821
c.JupyterHub.spawner_class = "spawner_ext.kube.spawner.DSWKubeSpawner"
c.DSWKubeSpawner.k8s_api_host = os.environ["DSW_TEST_K8S_API"]
c.DSWKubeSpawner.start_timeout = 120
