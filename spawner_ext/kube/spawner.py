"""DSWKubeSpawner: instances as pods, one namespace per workspace.

Only the Kubernetes steps of the shared lifecycle (``spawner_ext/lifecycle.py``, which
owns options -> spec, admission, the storage check, progress and release): spec ->
kubespawner traits (pure builders in ``objects.py``), the OSS keys from a Secret, the
namespace / network policy / home PVC, creating the pod through kubespawner's own start
(failing fast when the image cannot be pulled, its pod events copied into the lifecycle's
progress), polling and deleting the pod.

OSS keys: each OSS mount's catalogue entry names a Secret (``credentials.secret``) in the
workspace namespace, created by the platform team. The pod gets it only as the CSI
volume's ``nodePublishSecretRef``; the hub reads it (``get secrets``) to check access with
boto3 before the pod is created, and never writes it anywhere.
"""

from __future__ import annotations

import asyncio

from jupyterhub.utils import exponential_backoff
from kubernetes_asyncio.client import ApiException, V1DeleteOptions, V1EnvVar, V1ResourceRequirements
from kubespawner import KubeSpawner
from kubespawner.clients import shared_client
from tornado import web
from traitlets import Bool, Dict, Float, List, Unicode, default

from .. import startup
from ..lifecycle import LifecycleMixin
from ..spec import InstanceSpec, Mount
from ..storage.credentials import Keys, StorageError
from . import objects


class DSWKubeSpawner(LifecycleMixin, KubeSpawner):
    """Spawn Notebook/VSCode/Terminal instances as pods in the workspace's namespace."""

    workspace_namespace_template = Unicode(
        "dsw-{workspace}", config=True,
        help="Namespace of a workspace's instances and home volumes; ``{workspace}`` is the workspace id. "
             "The result must be a DNS label.",
    )
    create_namespaces = Bool(
        True, config=True,
        help="Create a workspace's namespace on its first spawn (needs cluster-wide 'create namespaces'). "
             "Turn off when the platform team creates namespaces (and the hub's RoleBindings) itself.",
    )
    home_storage_class = Unicode(
        None, allow_none=True, config=True,
        help="StorageClass of home PVCs; None uses the cluster's default class.",
    )
    home_size = Unicode("10Gi", config=True, help="Requested size of each home PVC (one per user and workspace).")
    home_access_modes = List(Unicode(), ["ReadWriteOnce"], config=True, help="Access modes of home PVCs.")
    gpu_resource_name = Unicode(
        objects.GPU_RESOURCE, config=True, help="Extended resource that counts GPUs (set in container limits).",
    )
    gpu_type_label = Unicode(
        "nvidia.com/gpu.product", config=True,
        help="Node label whose value is an instance type's gpu_type; GPU pods select nodes by it "
             "(NVIDIA GPU feature discovery sets nvidia.com/gpu.product).",
    )
    cpu_request_fraction = Float(
        1.0, config=True, help="CPU request as a fraction of the instance type's CPU (the limit). 1: guaranteed.",
    )
    memory_request_fraction = Float(
        1.0, config=True, help="Memory request as a fraction of the instance type's memory (the limit).",
    )
    oss_csi_driver = Unicode(
        "ru.yandex.s3.csi", config=True,
        help="CSI driver that mounts OSS buckets as inline pod volumes (it must support the Ephemeral mode).",
    )
    oss_bucket_attribute = Unicode("bucket", config=True, help="CSI volumeAttributes key that names the bucket.")
    oss_prefix_attribute = Unicode("prefix", config=True, help="CSI volumeAttributes key for a path in the bucket.")
    oss_volume_attributes = Dict(
        {"mounter": "geesefs"}, config=True, help="Extra CSI volumeAttributes for every OSS volume.",
    )
    oss_endpoint_attribute = Unicode(
        "endpoint", config=True,
        help="CSI volumeAttributes key that receives the storage entry's endpoint URL; empty: not passed "
             "(for drivers that read the endpoint from the Secret).",
    )
    oss_region_attribute = Unicode(
        "region", config=True,
        help="CSI volumeAttributes key that receives the storage entry's region (when it has one); "
             "empty: not passed.",
    )
    oss_secret_access_key_field = Unicode(
        "accessKeyID", config=True,
        help="Key of the access key in an OSS entry's Secret (csi-s3 reads accessKeyID).",
    )
    oss_secret_secret_key_field = Unicode(
        "secretAccessKey", config=True,
        help="Key of the secret key in an OSS entry's Secret (csi-s3 reads secretAccessKey).",
    )
    network_policy_peers = Dict(
        {}, config=True,
        help="When set, each workspace namespace gets a NetworkPolicy that admits connections to "
             "instances only from these pods: {'namespace': <hub namespace>, 'podLabels': [<labels>, ...]} "
             "(the chart passes the hub's and the proxy's labels).",
    )
    network_policy_egress_deny = List(
        Unicode(), [], config=True,
        help="CIDRs instances may not reach, beyond the private and link-local ranges the network "
             "policy always denies: the API server's and the database's addresses when they are public "
             "(private ones are denied already).",
    )
    network_policy_dns_namespace = Unicode(
        "kube-system", config=True, help="Namespace of the cluster DNS pods instances may query (port 53).",
    )
    failure_check_interval = Float(
        0.5, config=True, help="Seconds between checks for a pod that cannot pull its image while starting.",
    )

    @default("cmd")
    def _dsw_cmd(self):
        # Same command as the local backend: the managed image's single-user server.
        return ["jupyterhub-singleuser"]

    @default("pod_name_template")
    def _dsw_pod_name_template(self):
        return "dsw-{user_server}"

    @default("delete_pvc")
    def _dsw_delete_pvc(self):
        # Home volumes are per workspace, not per server: never drop them with a server.
        return False

    @default("delete_stopped_pods")
    def _dsw_delete_stopped_pods(self):
        # poll only reports; the lifecycle's release deletes a pod that ended on its own
        return False

    @default("start_timeout")
    def _dsw_start_timeout(self):
        return 300

    @property
    def settings(self) -> objects.KubeSettings:
        return objects.KubeSettings(
            namespace_template=self.workspace_namespace_template,
            storage_class=self.home_storage_class,
            home_size=self.home_size,
            home_access_modes=tuple(self.home_access_modes),
            gpu_resource=self.gpu_resource_name,
            gpu_type_label=self.gpu_type_label,
            cpu_request_fraction=self.cpu_request_fraction,
            memory_request_fraction=self.memory_request_fraction,
            oss_csi_driver=self.oss_csi_driver,
            oss_bucket_attribute=self.oss_bucket_attribute,
            oss_prefix_attribute=self.oss_prefix_attribute,
            oss_endpoint_attribute=self.oss_endpoint_attribute,
            oss_region_attribute=self.oss_region_attribute,
            oss_volume_attributes=dict(self.oss_volume_attributes),
        )

    # --- spec -> kubespawner traits ------------------------------------------------------
    _dsw_spec: InstanceSpec | None = None
    _dsw_fields: objects.PodFields | None = None

    def apply_spec(self, spec: InstanceSpec) -> objects.PodFields:
        """Set kubespawner's traits from the builders' output (no I/O)."""
        if self.enable_user_namespaces:
            raise ValueError("DSWKubeSpawner chooses namespaces per workspace: leave enable_user_namespaces off")
        fields = objects.pod_fields(spec, self.settings)
        self._dsw_spec, self._dsw_fields = spec, fields
        self.namespace = fields.namespace
        self.dns_name = self.dns_name_template.format(namespace=self.namespace, name=self.pod_name)
        self.image = fields.image
        self.image_pull_secrets = fields.image_pull_secrets
        self.node_selector = fields.node_selector
        self.tolerations = fields.tolerations
        self.priority_class_name = fields.priority_class_name or ""
        self.extra_labels = fields.labels
        self.volumes = fields.volumes
        self.volume_mounts = fields.volume_mounts
        self.storage_pvc_ensure = False  # the home PVC is ours (objects.home_pvc_manifest)
        self.default_url = fields.default_url
        self.working_dir = fields.working_dir
        # the image user, no capabilities, no escalation, RuntimeDefault seccomp (objects.py says why)
        self.uid, self.gid, self.fs_gid = objects.INSTANCE_UID, objects.INSTANCE_GID, objects.INSTANCE_GID
        self.allow_privilege_escalation = False
        self.pod_security_context = fields.pod_security_context
        self.container_security_context = fields.container_security_context
        self.environment = {**self.environment, **spec.env}
        # Limits as traits too, so the server sees CPU_LIMIT/MEM_LIMIT like on the local backend.
        self.cpu_limit, self.mem_limit = spec.cpu, spec.memory
        self.cpu_guarantee = spec.cpu * self.cpu_request_fraction
        self.mem_guarantee = int(spec.memory * self.memory_request_fraction)
        return fields

    def engine_apply_spec(self, spec: InstanceSpec) -> None:
        self.apply_spec(spec)

    def engine_placement(self, spec: InstanceSpec) -> str:
        return f" in namespace {self.namespace}"

    async def load_user_options(self):
        """kubespawner's own hook (profiles): the lifecycle has applied the spec already."""

    # --- storage: OSS keys from the entry's Secret --------------------------------------------
    def engine_mount_how(self, mount: Mount) -> str:
        if mount.type == "oss":
            return f"CSI driver {self.oss_csi_driver}, Secret {objects.oss_secret_ref(mount)}"
        return "NFS volume"

    async def engine_oss_keys(self, mount: Mount, spec: InstanceSpec) -> Keys:
        namespace = self.namespace
        name = objects.oss_secret_ref(mount)
        where = f"storage {mount.storage!r}: Secret {name} in namespace {namespace}"
        try:
            secret = await asyncio.wait_for(self.api.read_namespaced_secret(name, namespace),
                                            self.k8s_api_request_timeout)
        except ApiException as exc:
            if exc.status == 404:
                raise StorageError(f"{where} does not exist (the platform team creates it with the keys "
                                   f"{self.oss_secret_access_key_field} and {self.oss_secret_secret_key_field})"
                                   ) from None
            raise StorageError(f"{where} cannot be read ({exc.status} {exc.reason})") from None
        except asyncio.TimeoutError:
            raise StorageError(f"{where} cannot be read (the API server did not answer)") from None
        return objects.oss_keys(secret.data, secret=name, namespace=namespace, storage=mount.storage,
                                access_key_field=self.oss_secret_access_key_field,
                                secret_key_field=self.oss_secret_secret_key_field)

    # --- shared objects: namespace, network policy, home PVC ----------------------------------
    @property
    def api_networking(self):
        return shared_client("NetworkingV1Api")

    async def engine_prepare(self, spec: InstanceSpec) -> None:
        namespace = self.namespace
        if self.create_namespaces:
            await self._dsw_create(self.api.create_namespace, objects.namespace_manifest(namespace, spec.workspace))
        if self.network_policy_peers:
            policy = objects.network_policy_manifest(
                namespace, spec.workspace, self.network_policy_peers["namespace"],
                self.network_policy_peers["podLabels"], egress_deny=tuple(self.network_policy_egress_deny),
                dns_namespace=self.network_policy_dns_namespace)
            await self._dsw_create(self.api_networking.create_namespaced_network_policy, policy,
                                   namespace=namespace)
        pvc = objects.home_pvc_manifest(spec, self.settings)
        if pvc:
            created = await self._dsw_create(self.api.create_namespaced_persistent_volume_claim,
                                             pvc, namespace=namespace)
            if created:
                self.emit(20, f"Created home volume {pvc['metadata']['name']}")

    async def _dsw_create(self, create, body: dict, **kwargs) -> bool:
        """Create ``body``; an existing object is fine. True when it was created now."""
        try:
            await asyncio.wait_for(create(body=body, **kwargs), self.k8s_api_request_timeout)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise web.HTTPError(500, log_message=f"cannot create {body['kind']} {body['metadata']['name']}: "
                                           f"{exc.status} {exc.reason}") from None

    async def get_pod_manifest(self):
        pod = await super().get_pod_manifest()
        if self._dsw_fields is not None:
            # kubespawner writes floats and bytes; the DSW writes the quantities the catalogue means.
            pod.spec.containers[0].resources = V1ResourceRequirements(**self._dsw_fields.resources)
        if self._dsw_spec is not None and self._dsw_spec.startup_script:
            # the same wrapper as the local backend (spawner_ext/startup.py); kubespawner puts the
            # command in args, so the image's entrypoint (tini) stays in front of it
            server = pod.spec.containers[0]
            server.args = startup.command(server.args or [], self._dsw_spec.startup_script)
            server.env = [*(server.env or []),
                          *(V1EnvVar(name=k, value=v) for k, v in startup.environment(self._dsw_spec.startup_script).items())]
        return pod

    # --- create: kubespawner's start, failing fast when the image cannot be pulled ----------
    async def engine_create(self, spec: InstanceSpec):
        inner = KubeSpawner.start(self)  # kubespawner's own start future (sets self._start_future)
        copied = [0]
        pump = asyncio.ensure_future(self._copy_pod_events(copied))
        try:
            return await self._watch_image_pull(inner, spec)
        except BaseException:
            if not inner.done():
                inner.cancel()
            raise
        finally:
            # kubespawner's loop sleeps 1 s between passes, and waiting for its last pass made
            # every start last at least 1 s (benchmarks/kube_scale.py): stop it, then make that
            # last pass now (with the start done, kubespawner's generator makes exactly one)
            pump.cancel()
            await asyncio.wait([pump], timeout=5)
            if self._start_future is not None and self._start_future.done():
                await asyncio.wait_for(self._copy_pod_events(copied), 5)

    async def _copy_pod_events(self, copied: list[int]) -> None:
        """kubespawner's pod events (Scheduled, Pulling, ...) into the lifecycle's progress;
        ``copied[0]`` counts the pod events already copied, so a later pass adds only new ones."""
        seen = 0
        async for event in KubeSpawner.progress(self):
            if "raw_event" in event:
                seen += 1
                if seen <= copied[0]:
                    continue
                copied[0] = seen
            event = {k: v for k, v in event.items() if k in ("progress", "message")}
            self._progress().add(event)

    async def _watch_image_pull(self, inner: asyncio.Future, spec: InstanceSpec):
        while True:
            done, _ = await asyncio.wait({inner}, timeout=self.failure_check_interval)
            if done:
                return inner.result()
            reflector = self.pod_reflector
            pod = reflector.pods.get(f"{self.namespace}/{self.pod_name}") if reflector else None
            reason = objects.image_pull_failure(pod)
            if reason is None:
                continue
            message = (f"The image {spec.image} could not be pulled ({reason}). Check the image reference"
                       + (f" and the pull secret {spec.pull_secret}" if spec.pull_secret else "")
                       + "; the instance was not started.")
            raise web.HTTPError(500, log_message=message, reason=None)

    async def engine_output(self) -> str:
        try:
            return await asyncio.wait_for(
                self.api.read_namespaced_pod_log(self.pod_name, self.namespace, container="notebook"),
                self.k8s_api_request_timeout)
        except ApiException as exc:
            if exc.status in (400, 404):  # the container is not running yet, or the pod went
                return ""
            raise

    # --- poll and delete --------------------------------------------------------------------
    async def engine_poll(self):
        return await KubeSpawner.poll(self)

    async def engine_delete(self, now: bool) -> list[str]:
        """Delete the pod (with the grace period unless ``now``) and wait until it is gone."""
        await self._start_watching_pods()
        key = f"{self.namespace}/{self.pod_name}"
        grace = 0 if now else self.delete_grace_period
        try:
            await asyncio.wait_for(
                self.api.delete_namespaced_pod(self.pod_name, self.namespace,
                                               body=V1DeleteOptions(grace_period_seconds=grace),
                                               grace_period_seconds=grace),
                self.k8s_api_request_timeout)
        except ApiException as exc:
            if exc.status != 404:
                raise
            if self.pod_reflector.pods.get(key) is None:
                return []  # nothing there
        await exponential_backoff(lambda: self.pod_reflector.pods.get(key) is None,
                                  f"pod {key} did not disappear in {self.start_timeout} seconds",
                                  timeout=self.start_timeout)
        return [f"pod {key}"]
