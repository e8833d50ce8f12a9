"""The pure builders (compared by output) and every object the backend emits, validated
strictly against the pinned Kubernetes schema."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from spawner_ext.catalog import load_catalog
from spawner_ext.kube import objects
from spawner_ext.kube.objects import KubeSettings
from spawner_ext.options import resolve
from spawner_ext.catalog.models import Kind
from spawner_ext.spec import START_URL, Mount, OssCredentials
from spawner_ext.storage.credentials import Keys, StorageError

from .validation import assert_valid

SETTINGS = KubeSettings()


@pytest.fixture
def catalog(catalog_path):
    return load_catalog(catalog_path)


@pytest.fixture
def cpu_spec(catalog):
    return resolve(catalog, "alice", "", {"workspace": "vision", "kind": "notebook", "image": "nb-cpu",
                                          "resource_group": "public-cpu", "instance_type": "cpu-half"})


@pytest.fixture
def gpu_spec(catalog):
    return resolve(catalog, "bob", "train", {"workspace": "vision", "kind": "vscode", "image": "nb-gpu",
                                             "resource_group": "gpu-a10", "instance_type": "gpu-1"})


# --- resources, placement ----------------------------------------------------------

def test_resources_requests_equal_limits_by_default():
    assert objects.container_resources(0.5, 512 * 2**20) == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "500m", "memory": "512Mi"},
    }


def test_gpus_are_limits_only_under_the_configured_resource_name():
    res = objects.container_resources(8, 30 * 2**30, 2, gpu_resource="amd.com/gpu")
    assert res["limits"] == {"cpu": "8", "memory": "30Gi", "amd.com/gpu": "2"}
    assert res["requests"] == {"cpu": "8", "memory": "30Gi"}


def test_request_fractions_lower_requests_only():
    res = objects.container_resources(2, 4 * 2**30, cpu_request_fraction=0.25, memory_request_fraction=0.5)
    assert res == {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    with pytest.raises(ValueError, match="fractions"):
        objects.container_resources(1, 2**30, cpu_request_fraction=0)


def test_gpu_type_becomes_a_node_selector_next_to_the_group_selector():
    assert objects.node_selector({"dsw/pool": "gpu-a10"}, "nvidia-a10", "nvidia.com/gpu.product") == {
        "dsw/pool": "gpu-a10", "nvidia.com/gpu.product": "nvidia-a10"}
    assert objects.node_selector({"dsw/pool": "cpu"}, None, "nvidia.com/gpu.product") == {"dsw/pool": "cpu"}
    with pytest.raises(ValueError, match="needs 'nvidia-a10'"):
        objects.node_selector({"gpu": "h100"}, "nvidia-a10", "gpu")


def test_namespace_template():
    assert objects.namespace_name("dsw-{workspace}", "vision") == "dsw-vision"
    assert objects.namespace_name("team-{workspace}-prod", "nlp") == "team-nlp-prod"
    with pytest.raises(ValueError, match="not a DNS label"):
        objects.namespace_name("DSW_{workspace}", "vision")


def test_pod_fields_public_cpu(cpu_spec):
    fields = objects.pod_fields(cpu_spec, SETTINGS)
    assert fields.namespace == "dsw-vision"
    assert fields.image == "localhost/dsw/notebook-cpu:test"
    assert fields.image_pull_secrets == []
    assert fields.resources == {"requests": {"cpu": "500m", "memory": "512Mi"},
                                "limits": {"cpu": "500m", "memory": "512Mi"}}
    assert fields.node_selector == {}
    assert fields.tolerations == []
    assert fields.priority_class_name is None
    assert fields.default_url == START_URL[Kind.notebook]
    assert fields.volumes == [{"name": "home", "persistentVolumeClaim": {
        "claimName": "dsw-home-vision.alice", "readOnly": False}}]
    assert fields.volume_mounts == [{"name": "home", "mountPath": "/home/jovyan", "readOnly": False}]
    assert {k: fields.labels[k] for k in objects.POD_LABEL_KEYS} == {
        "dsw/workspace": "vision", "dsw/user": "alice", "dsw/kind": "notebook", "dsw/resource-group": "public-cpu"}


def test_pod_fields_dedicated_gpu(gpu_spec, catalog):
    fields = objects.pod_fields(gpu_spec, KubeSettings(gpu_type_label="example.com/gpu"))
    assert fields.resources["limits"] == {"cpu": "8", "memory": "30Gi", "nvidia.com/gpu": "1"}
    assert fields.node_selector == {"dsw/pool": "gpu-a10", "example.com/gpu": "nvidia-a10"}
    assert fields.tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert fields.priority_class_name == "dsw-gpu"
    assert fields.default_url == START_URL[Kind.vscode]
    assert fields.labels["dsw/resource-group"] == "gpu-a10" and fields.labels["dsw/kind"] == "vscode"


def test_pull_secret_from_the_catalogue(catalog):
    spec = resolve(catalog, "alice", "", {"workspace": "vision", "image": "nb-missing"})
    assert objects.pod_fields(spec, SETTINGS).image_pull_secrets == [{"name": "vision-registry"}]


def test_terminal_kind_lands_on_a_terminal(catalog):
    spec = resolve(catalog, "alice", "", {"workspace": "vision", "kind": "terminal"})
    fields = objects.pod_fields(spec, SETTINGS)
    assert fields.default_url == START_URL[Kind.terminal] and fields.image == "localhost/dsw/notebook-cpu:test"


# --- volumes ------------------------------------------------------------------------

def test_nfs_volume_read_only_on_volume_and_mount():
    mount = Mount(type="nfs", source="nas.example.com:/exports/vision", mount_path="/mnt/nas", read_only=True,
                  name="team-nas")
    volume, volume_mount = objects.volume_and_mount(mount, 0, SETTINGS)
    assert volume == {"name": "team-nas", "nfs": {"server": "nas.example.com", "path": "/exports/vision",
                                                  "readOnly": True}}
    assert volume_mount == {"name": "team-nas", "mountPath": "/mnt/nas", "readOnly": True}
    with pytest.raises(ValueError, match="server:/export/path"):
        objects.nfs_volume("x", "nas.example.com/exports", False)


def oss_mount(**kw):
    base = dict(type="oss", source="datasets/vision/raw", mount_path="/mnt/oss", read_only=False,
                storage="datasets", endpoint="https://oss.example.com", region="eu-1",
                credentials=OssCredentials(secret="oss-datasets", file="/etc/x"))
    return Mount(**{**base, **kw})


def test_oss_volume_is_inline_csi_with_the_entry_secret_endpoint_and_region():
    settings = KubeSettings(oss_csi_driver="s3.csi.example.com", oss_volume_attributes={"mounter": "s3fs"},
                            oss_endpoint_attribute="endpointUrl", oss_region_attribute="awsRegion")
    volume, volume_mount = objects.volume_and_mount(oss_mount(), 3, settings)
    assert volume == {"name": "oss-3", "csi": {
        "driver": "s3.csi.example.com", "readOnly": False,
        "volumeAttributes": {"mounter": "s3fs", "bucket": "datasets", "prefix": "vision/raw",
                             "endpointUrl": "https://oss.example.com", "awsRegion": "eu-1"},
        "nodePublishSecretRef": {"name": "oss-datasets"}}}
    assert volume_mount == {"name": "oss-3", "mountPath": "/mnt/oss", "readOnly": False}
    ro, ro_mount = objects.volume_and_mount(oss_mount(read_only=True), 3, settings)
    assert ro["csi"]["readOnly"] is True and ro_mount["readOnly"] is True
    with pytest.raises(ValueError, match="bucket"):
        objects.csi_oss_volume("x", "/", False, driver="d", secret_name="s")


def test_oss_endpoint_and_region_attributes_can_be_left_out():
    default, _ = objects.volume_and_mount(oss_mount(region=""), 0, SETTINGS)
    assert default["csi"]["volumeAttributes"] == {"mounter": "geesefs", "bucket": "datasets", "prefix": "vision/raw",
                                                  "endpoint": "https://oss.example.com"}
    bare, _ = objects.volume_and_mount(oss_mount(), 0, KubeSettings(oss_endpoint_attribute="",
                                                                    oss_region_attribute=""))
    assert set(bare["csi"]["volumeAttributes"]) == {"mounter", "bucket", "prefix"}


def test_oss_mount_without_a_secret_and_host_folders_are_refused():
    with pytest.raises(ValueError, match="storage 'datasets' names no Kubernetes Secret"):
        objects.volume_and_mount(oss_mount(credentials=OssCredentials(file="/etc/x")), 0, SETTINGS)
    host = Mount(type="host", source="/srv/nas/vision", mount_path="/mnt/nas", storage="vision-local")
    with pytest.raises(ValueError, match="storage 'vision-local' is a folder on one machine.*nas.nfs"):
        objects.volume_and_mount(host, 0, SETTINGS)


def test_oss_keys_from_secret_data():
    enc = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    keys = objects.oss_keys({"accessKeyID": enc("AK"), "secretAccessKey": enc("SK\n")}, secret="s",
                            namespace="dsw-vision", storage="datasets")
    assert keys == Keys("AK", "SK")
    assert objects.oss_keys({"a": enc("A"), "b": enc("B")}, secret="s", namespace="n", storage="d",
                            access_key_field="a", secret_key_field="b") == Keys("A", "B")
    with pytest.raises(StorageError, match="storage 'datasets': Secret s in namespace dsw-vision lacks "
                                           "secretAccessKey"):
        objects.oss_keys({"accessKeyID": enc("AK")}, secret="s", namespace="dsw-vision", storage="datasets")
    with pytest.raises(StorageError, match="not base64"):
        objects.oss_keys({"accessKeyID": "%%%", "secretAccessKey": enc("SK-VALUE")}, secret="s",
                         namespace="n", storage="d")


def test_duplicate_volume_names_are_refused(cpu_spec):
    spec = dataclasses.replace(cpu_spec, mounts=(Mount(type="nfs", source="nas:/x", mount_path="/d", name="home"),))
    with pytest.raises(ValueError, match="duplicate volume names: home"):
        objects.volumes(spec, SETTINGS)


# --- whole objects --------------------------------------------------------------------

def test_home_pvc(cpu_spec):
    pvc = objects.home_pvc_manifest(cpu_spec, KubeSettings(storage_class="fast-ssd", home_size="20Gi"))
    assert pvc == {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": "dsw-home-vision.alice", "namespace": "dsw-vision",
                                "labels": {"dsw/workspace": "vision", "dsw/user": "alice", "dsw/managed": "true"}},
                   "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}},
                            "storageClassName": "fast-ssd"}}
    assert "storageClassName" not in objects.home_pvc_manifest(cpu_spec, SETTINGS)["spec"]
    with pytest.raises(Exception, match="not a quantity"):
        objects.home_pvc_manifest(cpu_spec, KubeSettings(home_size="ten gigs"))
    assert_valid(pvc)


def test_namespace_object_validates():
    ns = assert_valid(objects.namespace_manifest("dsw-vision", "vision"))
    assert ns["metadata"]["labels"] == {"dsw/workspace": "vision", "dsw/managed": "true"}


def test_the_validator_refuses_unknown_fields(cpu_spec):
    pvc = objects.home_pvc_manifest(cpu_spec, SETTINGS)
    pvc["spec"]["sizeInGigs"] = 10
    with pytest.raises(AssertionError, match="sizeInGigs"):
        assert_valid(pvc)


def test_image_pull_failure_reads_the_container_status():
    waiting = {"status": {"phase": "Pending", "containerStatuses": [
        {"name": "notebook", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling"}}}]}}
    assert objects.image_pull_failure(waiting) == "ImagePullBackOff: Back-off pulling"
    creating = {"status": {"containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    assert objects.image_pull_failure(creating) is None
    assert objects.image_pull_failure(None) is None


# --- the spawner's real pod manifest ------------------------------------------------

KINDS = ["notebook", "vscode", "terminal"]
GROUPS = {"public-cpu": "cpu-small", "gpu-a10": "gpu-1"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("group", sorted(GROUPS))
async def test_spawner_pod_manifest_validates(make_spawner, catalog, kind, group):
    options = {"workspace": "vision", "kind": kind, "resource_group": group, "instance_type": GROUPS[group],
               "image": "nb-gpu" if group == "gpu-a10" else "nb-cpu"}
    spawner = make_spawner(user="bob", options=options)
    spec = resolve(catalog, "bob", "", options)
    fields = spawner.apply_spec(spec)
    pod = assert_valid(await spawner.get_pod_manifest())
    container = pod["spec"]["containers"][0]
    assert container["resources"] == fields.resources
    assert container["image"] == spec.image
    assert container["args"][0] == "jupyterhub-singleuser"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["JUPYTERHUB_DEFAULT_URL"] == spec.start_url
    assert env["DSW_INSTANCE_KIND"] == kind
    assert pod["spec"].get("nodeSelector", {}) == fields.node_selector
    assert pod["spec"].get("tolerations", []) == fields.tolerations
    assert pod["spec"].get("priorityClassName") == fields.priority_class_name
    assert pod["metadata"]["labels"].items() >= fields.labels.items()
    assert container["workingDir"] == "/home/jovyan"
    # hardened (issue 9, finding 5): never root, no capability, no escalation, RuntimeDefault seccomp
    pod_sc, sc = pod["spec"]["securityContext"], container["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 1000 and pod_sc["fsGroup"] == 100
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsNonRoot"] is True and (sc["runAsUser"], sc["runAsGroup"]) == (1000, 100)
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc.get("privileged") in (None, False) and "add" not in sc["capabilities"]


async def test_pod_with_every_volume_kind_validates(make_spawner, cpu_spec):
    """nfs and CSI volumes (and PVCs) in a real pod manifest validate strictly."""
    spawner = make_spawner()
    spec = dataclasses.replace(cpu_spec, mounts=(
        Mount(type="nfs", source="nas:/exports/a", mount_path="/mnt/nas", read_only=True, name="nas"),
        oss_mount(mount_path="/mnt/oss", read_only=True, name="oss"),
        oss_mount(mount_path="/mnt/oss-rw", name="oss-rw", region=""),
        Mount(type="volume", source="shared-pvc", mount_path="/mnt/shared", read_only=True, name="shared"),
    ))
    spawner.apply_spec(spec)
    pod = assert_valid(await spawner.get_pod_manifest())
    names = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert set(names) == {"home", "nas", "oss", "oss-rw", "shared"}
    assert names["oss"]["csi"]["nodePublishSecretRef"] == {"name": "oss-datasets"}
    assert names["oss"]["csi"]["volumeAttributes"]["endpoint"] == "https://oss.example.com"
    assert names["nas"]["nfs"] == {"server": "nas", "path": "/exports/a", "readOnly": True}
    mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["nas"]["readOnly"] and mounts["oss"]["readOnly"] and mounts["shared"]["readOnly"]
    assert not mounts["home"].get("readOnly") and not mounts["oss-rw"]["readOnly"]


def test_network_policy_admits_only_the_listed_peers():
    hub = {"app.kubernetes.io/name": "dsw-hub", "app.kubernetes.io/component": "hub"}
    proxy = {"app.kubernetes.io/name": "dsw-hub", "app.kubernetes.io/component": "proxy"}
    policy = assert_valid(objects.network_policy_manifest("dsw-vision", "vision", "dsw", [hub, proxy]))
    assert policy["spec"]["podSelector"] == {"matchLabels": {"dsw/managed": "true"}}
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dsw"}}, "podSelector": {"matchLabels": hub}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dsw"}},
         "podSelector": {"matchLabels": proxy}},
    ]
    assert "ports" not in rule
    with pytest.raises(ValueError, match="at least one peer"):
        objects.network_policy_manifest("dsw-vision", "vision", "dsw", [])


def test_network_policy_egress_denies_the_api_server_database_and_metadata():
    """Issue 9, finding 12: instances reach the hub, the proxy, DNS and public addresses only."""
    import ipaddress

    hub = {"app.kubernetes.io/component": "hub"}
    policy = assert_valid(objects.network_policy_manifest(
        "dsw-vision", "vision", "dsw", [hub], egress_deny=("203.0.113.10/32", "2001:db8::1/128")))
    to_peers, dns, public = policy["spec"]["egress"]
    assert to_peers["to"] == policy["spec"]["ingress"][0]["from"] and "ports" not in to_peers
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}]
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    blocks = [b["ipBlock"] for b in public["to"]]
    assert "ports" not in public

    def allowed(address: str) -> bool:
        ip = ipaddress.ip_address(address)
        for block in blocks:
            if ip.version == ipaddress.ip_network(block["cidr"]).version and ip in ipaddress.ip_network(block["cidr"]):
                return not any(ip in ipaddress.ip_network(c) for c in block["except"])
        return False

    # cloud metadata, in-cluster API server (service and endpoint ranges), a database pod, a public
    # API server passed by the chart: denied; the internet: allowed
    for denied in ("169.254.169.254", "10.96.0.1", "172.20.0.5", "192.168.1.10", "10.244.3.7", "203.0.113.10",
                   "fe80::1", "fd00::10", "2001:db8::1", "127.0.0.1"):
        assert not allowed(denied), denied
    for public_ip in ("151.101.0.223", "8.8.8.8", "2a04:4e42::223"):
        assert allowed(public_ip), public_ip
