"""Pure builders: InstanceSpec -> Kubernetes objects as plain dicts. No I/O here.

Everything the Kubernetes backend decides about an instance is computed here from
plain values (the spec and a frozen ``KubeSettings``), so it can be tested by
comparing outputs and validated offline with ``kubernetes-validate``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from ..naming import dns_subdomain_problem
from ..quantities import format_cpu, format_memory, parse_memory
from ..spec import MANAGED_LABEL, InstanceSpec, Mount
from ..storage.credentials import Keys, StorageError

GPU_RESOURCE = "nvidia.com/gpu"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

#: labels that describe a whole instance (pod); shared objects carry the subset that fits them
POD_LABEL_KEYS = ("dsw/workspace", "dsw/user", "dsw/kind", "dsw/resource-group")


@dataclass(frozen=True)
class KubeSettings:
    """Deployment-wide choices (from the spawner's traitlets), as plain values."""

    namespace_template: str = "dsw-{workspace}"
    storage_class: str | None = None
    home_size: str = "10Gi"
    home_access_modes: tuple[str, ...] = ("ReadWriteOnce",)
    gpu_resource: str = GPU_RESOURCE
    gpu_type_label: str = "nvidia.com/gpu.product"
    cpu_request_fraction: float = 1.0
    memory_request_fraction: float = 1.0
    oss_csi_driver: str = "ru.yandex.s3.csi"
    oss_bucket_attribute: str = "bucket"
    oss_prefix_attribute: str = "prefix"
    #: volumeAttributes keys for the entry's endpoint and region; "" leaves them out (for drivers
    #: that read them from the Secret instead)
    oss_endpoint_attribute: str = "endpoint"
    oss_region_attribute: str = "region"
    oss_volume_attributes: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({"mounter": "geesefs"}))


# --- names -----------------------------------------------------------------------

def namespace_name(template: str, workspace: str) -> str:
    """The workspace's namespace from a template with ``{workspace}``; refused if not a DNS label."""
    name = template.format(workspace=workspace)
    if not DNS_LABEL.fullmatch(name):
        raise ValueError(f"namespace template {template!r} gives {name!r}, which is not a DNS label "
                         "(lower-case letters, digits and '-', at most 63 characters)")
    return name


# --- labels ----------------------------------------------------------------------

def pod_labels(spec: InstanceSpec) -> dict[str, str]:
    """Every spec label (workspace, user, kind, resource group, type, image, server) plus managed."""
    missing = [k for k in POD_LABEL_KEYS if k not in spec.labels]
    if missing:
        raise ValueError(f"spec labels lack {', '.join(missing)}")
    return {**spec.labels, MANAGED_LABEL: "true"}


def workspace_labels(workspace: str) -> dict[str, str]:
    """Shared per-workspace objects (namespace, network policy)."""
    return {"dsw/workspace": workspace, MANAGED_LABEL: "true"}


# --- pod fields --------------------------------------------------------------------

def container_resources(cpu: float, memory: int, gpu: int = 0, *, gpu_resource: str = GPU_RESOURCE,
                        cpu_request_fraction: float = 1.0, memory_request_fraction: float = 1.0) -> dict:
    """Requests and limits. GPUs go in limits only (Kubernetes sets the request equal)."""
    if not 0 < cpu_request_fraction <= 1 or not 0 < memory_request_fraction <= 1:
        raise ValueError("request fractions must be in (0, 1]")
    limits = {"cpu": format_cpu(cpu), "memory": format_memory(memory)}
    mem_request = memory
    if memory_request_fraction < 1:  # whole MiB, so the quantity stays readable
        mem_request = max(int(memory * memory_request_fraction) // 2**20, 1) * 2**20
    requests = {"cpu": format_cpu(max(cpu * cpu_request_fraction, 0.001)),
                "memory": format_memory(mem_request)}
    if gpu:
        limits[gpu_resource] = str(gpu)
    return {"requests": requests, "limits": limits}


def node_selector(group_selector: Mapping[str, str], gpu_type: str | None,
                  gpu_type_label: str) -> dict[str, str]:
    """Resource group's selector, plus the GPU type as a node label when the type has GPUs."""
    selector = dict(group_selector)
    if gpu_type:
        if selector.get(gpu_type_label, gpu_type) != gpu_type:
            raise ValueError(f"resource group selects {gpu_type_label}={selector[gpu_type_label]!r} "
                             f"but the instance type needs {gpu_type!r}")
        selector[gpu_type_label] = gpu_type
    return selector


PULL_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})


def image_pull_failure(pod: Mapping | None) -> str | None:
    """If the pod's notebook container cannot get its image, say why (pure, reads pod status)."""
    if not pod:
        return None
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in PULL_FAILURES:
            detail = waiting.get("message") or "no detail from the kubelet"
            return f"{waiting['reason']}: {detail}"
    return None


def tolerations(spec_tolerations) -> list[dict]:
    return [dict(t) for t in spec_tolerations]


def image_pull_secrets(pull_secret: str | None) -> list[dict]:
    return [{"name": pull_secret}] if pull_secret else []


# --- volumes -------------------------------------------------------------------------

def volume_name(mount: Mount, index: int) -> str:
    """``home`` or ``storage-<catalogue id>`` (ids are DNS labels); refused, never rewritten."""
    name = mount.name or f"{mount.type}-{index}"
    if not DNS_LABEL.fullmatch(name):
        raise ValueError(f"volume name {name!r} is not a DNS label")
    return name


def nfs_volume(name: str, source: str, read_only: bool) -> dict:
    """``server:/export/path`` as an NFS volume."""
    server, sep, path = source.partition(":")
    if not sep or not server or not path.startswith("/"):
        raise ValueError(f"NFS source {source!r} must look like server:/export/path")
    return {"name": name, "nfs": {"server": server, "path": path, "readOnly": read_only}}


def csi_oss_volume(name: str, source: str, read_only: bool, *, driver: str, secret_name: str,
                   bucket_attribute: str = "bucket", prefix_attribute: str = "prefix",
                   endpoint: str = "", region: str = "", endpoint_attribute: str = "",
                   region_attribute: str = "", attributes: Mapping[str, str] | None = None) -> dict:
    """``bucket[/prefix]`` as an inline CSI volume; credentials come from ``secret_name`` (a
    Secret in the pod's namespace, handed to the driver as nodePublishSecretRef). The endpoint
    and region go into volumeAttributes under the given keys (an empty key leaves one out)."""
    bucket, _, prefix = source.strip("/").partition("/")
    if not bucket:
        raise ValueError(f"OSS source {source!r} must look like bucket or bucket/prefix")
    if not DNS_LABEL.fullmatch(secret_name or ""):
        raise ValueError(f"OSS secret name {secret_name!r} is not a DNS label")
    volume_attributes = {**(attributes or {}), bucket_attribute: bucket}
    if prefix:
        volume_attributes[prefix_attribute] = prefix
    if endpoint_attribute and endpoint:
        volume_attributes[endpoint_attribute] = endpoint
    if region_attribute and region:
        volume_attributes[region_attribute] = region
    return {"name": name, "csi": {
        "driver": driver, "readOnly": read_only,
        "volumeAttributes": {k: str(v) for k, v in volume_attributes.items()},
        "nodePublishSecretRef": {"name": secret_name},
    }}


def oss_secret_ref(mount: Mount) -> str:
    """The Secret (in the workspace namespace) that holds an OSS mount's keys, from the
    catalogue entry's ``credentials.secret``; refused when the entry names none."""
    secret = mount.credentials.secret if mount.credentials else None
    if not secret:
        raise ValueError(f"storage {mount.storage or mount.source!r} names no Kubernetes Secret: on Kubernetes "
                         "the catalogue entry needs oss.credentials.secret")
    return secret


def oss_keys(data: Mapping[str, str] | None, *, secret: str, namespace: str, storage: str,
             access_key_field: str = "accessKeyID", secret_key_field: str = "secretAccessKey") -> Keys:
    """Keys from a Secret's ``data`` (base64 values, as the API returns them). Errors name the
    Secret and the missing field, never a value."""
    data = data or {}
    who = f"storage {storage!r}: Secret {secret} in namespace {namespace}"
    missing = [f for f in (access_key_field, secret_key_field) if not data.get(f)]
    if missing:
        raise StorageError(f"{who} lacks {' and '.join(missing)} (the platform puts the access key in "
                           f"{access_key_field} and the secret key in {secret_key_field})")
    try:
        access, secret_key = (base64.b64decode(data[f], validate=True).decode().strip()
                              for f in (access_key_field, secret_key_field))
    except (binascii.Error, UnicodeDecodeError):
        raise StorageError(f"{who} holds a key that is not base64-encoded text") from None
    if not access or not secret_key:
        raise StorageError(f"{who} holds an empty key")
    return Keys(access, secret_key)


HOST_REFUSAL = ("is a folder on one machine (a NAS entry with only host_path); Kubernetes nodes do not share "
                "it: give the catalogue entry nas.nfs to mount it here")


def volume_and_mount(mount: Mount, index: int, settings: KubeSettings) -> tuple[dict, dict]:
    """One spec mount -> (pod volume, container volumeMount), read-only on both sides."""
    name = volume_name(mount, index)
    if mount.type == "volume":
        volume = {"name": name, "persistentVolumeClaim": {"claimName": mount.source, "readOnly": mount.read_only}}
    elif mount.type == "host":
        raise ValueError(f"storage {mount.storage or mount.source!r} {HOST_REFUSAL}")
    elif mount.type == "nfs":
        volume = nfs_volume(name, mount.source, mount.read_only)
    elif mount.type == "oss":
        volume = csi_oss_volume(
            name, mount.source, mount.read_only, driver=settings.oss_csi_driver,
            secret_name=oss_secret_ref(mount),
            bucket_attribute=settings.oss_bucket_attribute, prefix_attribute=settings.oss_prefix_attribute,
            endpoint=mount.endpoint, region=mount.region, endpoint_attribute=settings.oss_endpoint_attribute,
            region_attribute=settings.oss_region_attribute, attributes=settings.oss_volume_attributes)
    else:
        raise ValueError(f"mount type {mount.type!r} is not supported on Kubernetes")
    return volume, {"name": name, "mountPath": mount.mount_path, "readOnly": mount.read_only}


def volumes(spec: InstanceSpec, settings: KubeSettings) -> tuple[list[dict], list[dict]]:
    pairs = [volume_and_mount(m, i, settings) for i, m in enumerate(spec.all_mounts)]
    names = [v["name"] for v, _ in pairs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate volume names: {', '.join(duplicates)}")
    return [v for v, _ in pairs], [m for _, m in pairs]


# --- security contexts -----------------------------------------------------------------
#: the managed images' user (jovyan) and group (users); instances run as nothing else
INSTANCE_UID, INSTANCE_GID = 1000, 100


def pod_security_context(uid: int = INSTANCE_UID, gid: int = INSTANCE_GID) -> dict:
    """Pod-wide: never root, the image user even when an image says otherwise (a free-form image
    that starts as root runs as ``uid``), volumes group-owned by ``gid``, the runtime's default
    seccomp profile (issue 9, finding 5)."""
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "fsGroup": gid,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security_context(uid: int = INSTANCE_UID, gid: int = INSTANCE_GID) -> dict:
    """The notebook container: no capability at all and no way to gain one (setuid binaries and
    file capabilities do nothing under allowPrivilegeEscalation false)."""
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid,
            "allowPrivilegeEscalation": False, "privileged": False,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


# --- whole objects ------------------------------------------------------------------

@dataclass(frozen=True)
class PodFields:
    """What the DSW decides about a user pod; the spawner hands these to kubespawner."""

    namespace: str
    image: str
    image_pull_secrets: list[dict]
    resources: dict
    node_selector: dict[str, str]
    tolerations: list[dict]
    priority_class_name: str | None
    labels: dict[str, str]
    volumes: list[dict]
    volume_mounts: list[dict]
    default_url: str
    working_dir: str | None
    pod_security_context: dict = field(default_factory=pod_security_context)
    container_security_context: dict = field(default_factory=container_security_context)


def pod_fields(spec: InstanceSpec, settings: KubeSettings) -> PodFields:
    vols, mounts = volumes(spec, settings)
    if spec.home is not None and spec.home.type == "volume":
        problem = dns_subdomain_problem(spec.home.source)
        if problem:  # refused, never shortened: a shortened name could be someone else's
            raise ValueError(f"the home volume name {spec.home.source!r} {problem}; on Kubernetes user "
                             "names must give a DNS name (letters, digits, '.', '-', '_'; not ending in '-')")
    return PodFields(
        namespace=namespace_name(settings.namespace_template, spec.workspace),
        image=spec.image,
        image_pull_secrets=image_pull_secrets(spec.pull_secret),
        resources=container_resources(
            spec.cpu, spec.memory, spec.gpu, gpu_resource=settings.gpu_resource,
            cpu_request_fraction=settings.cpu_request_fraction,
            memory_request_fraction=settings.memory_request_fraction),
        node_selector=node_selector(spec.node_selector, spec.gpu_type if spec.gpu else None,
                                    settings.gpu_type_label),
        tolerations=tolerations(spec.tolerations),
        priority_class_name=spec.priority_class,
        labels=pod_labels(spec),
        volumes=vols,
        volume_mounts=mounts,
        default_url=spec.start_url,
        working_dir=spec.home.mount_path if spec.home else None,
    )


def namespace_manifest(name: str, workspace: str) -> dict:
    """A workspace's namespace, made by the hub only for workspaces the chart does not list
    (``rbac.workspaces``: the chart makes those, with the hub's Role; ``create_namespaces`` off)."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": workspace_labels(workspace)}}


def home_pvc_manifest(spec: InstanceSpec, settings: KubeSettings) -> dict | None:
    """The home PVC for the spec's user and workspace (None when the spec has no home)."""
    if spec.home is None or spec.home.type != "volume":
        return None
    parse_memory(settings.home_size)  # a malformed size is refused here, not by the API server
    pvc_spec: dict = {
        "accessModes": list(settings.home_access_modes),
        "resources": {"requests": {"storage": settings.home_size}},
    }
    if settings.storage_class is not None:
        pvc_spec["storageClassName"] = settings.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": spec.home.source,
                         "namespace": namespace_name(settings.namespace_template, spec.workspace),
                         "labels": spec.home_labels()},
            "spec": pvc_spec}


#: where instances may not connect (besides what ``deny`` adds): private and link-local
#: ranges, which hold the cluster's API server, databases and cloud metadata (169.254.169.254)
PRIVATE_RANGES_V4 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
                     "127.0.0.0/8")
PRIVATE_RANGES_V6 = ("fc00::/7", "fe80::/10", "::1/128")


def egress_rules(peers: list[dict], *, deny: tuple[str, ...] = (), dns_namespace: str = "kube-system",
                 dns_port: int = 53) -> list[dict]:
    """Instances may reach: the hub and the proxy (``peers``), the cluster DNS (pods in
    ``dns_namespace`` on port 53), and public addresses. Everything else -- the API server, the
    hub's database, other pods, link-local metadata -- is denied. ``deny`` adds CIDRs to refuse
    among public addresses too (an API server or a database with a public address)."""
    v4 = [c for c in deny if ":" not in c]
    v6 = [c for c in deny if ":" in c]
    dns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": dns_namespace}}}
    return [
        {"to": peers},
        {"to": [dns], "ports": [{"protocol": "UDP", "port": dns_port}, {"protocol": "TCP", "port": dns_port}]},
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [*PRIVATE_RANGES_V4, *v4]}},
                {"ipBlock": {"cidr": "::/0", "except": [*PRIVATE_RANGES_V6, *v6]}}]},
    ]


def network_policy_manifest(namespace: str, workspace: str, peer_namespace: str,
                            peer_pod_labels: list[Mapping[str, str]], *, egress_deny: tuple[str, ...] = (),
                            dns_namespace: str = "kube-system") -> dict:
    """Only the listed pods (the hub and the proxy, in the hub's namespace) may open
    connections to DSW instances in a workspace namespace, and instances may open connections
    only to those pods, the cluster DNS and public addresses (``egress_rules``).
    The hub is the one maker of this policy in every deployment (the chart makes none)."""
    if not peer_pod_labels:
        raise ValueError("a network policy needs at least one peer (the hub and the proxy)")
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": peer_namespace}},
              "podSelector": {"matchLabels": dict(labels)}} for labels in peer_pod_labels]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "dsw-instances", "namespace": namespace, "labels": workspace_labels(workspace)},
            "spec": {"podSelector": {"matchLabels": {MANAGED_LABEL: "true"}},
                     "policyTypes": ["Ingress", "Egress"],
                     "ingress": [{"from": peers}],
                     "egress": egress_rules(peers, deny=tuple(egress_deny), dns_namespace=dns_namespace)}}
