"""The local backend's pure builder: spec -> Docker Engine API create-arguments."""

import pytest

from spawner_ext.catalog import load_catalog
from spawner_ext.local.container import container_name, create_kwargs, mount_arg
from spawner_ext.options import resolve
from spawner_ext.spec import Mount
from tests.conftest import BASE_CATALOG


def test_create_kwargs(write_catalog):
    spec = resolve(load_catalog(write_catalog(BASE_CATALOG)), "bob", "exp1",
                   {"workspace": "nlp", "instance_type": "cpu-half", "kind": "terminal"})
    kw = create_kwargs(spec, name=container_name("bob", "exp1"), cmd=["jupyterhub-singleuser"],
                       env={"JUPYTERHUB_API_TOKEN": "t"})
    assert kw["name"] == "dsw-bob_exp1"
    assert kw["image"] == "localhost/dsw/notebook-cpu:test"
    hc = kw["host_config"]
    assert hc["NanoCpus"] == 500_000_000 and hc["Memory"] == 512 * 2**20
    assert hc["PortBindings"] == {"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert hc["Mounts"] == [{"Type": "volume", "Source": "dsw-home-nlp.bob", "Target": "/home/jovyan", "ReadOnly": False}]
    assert "DeviceRequests" not in hc
    assert kw["labels"]["dsw/managed"] == "true" and kw["labels"]["dsw/kind"] == "terminal"
    assert kw["environment"]["JUPYTERHUB_API_TOKEN"] == "t" and kw["environment"]["DSW_WORKSPACE"] == "nlp"
    assert kw["working_dir"] == "/home/jovyan"
    # hardened (issue 9, finding 5): the image user, no capabilities, no privilege gain
    assert kw["user"] == "1000:100"
    assert hc["CapDrop"] == ["ALL"] and hc["CapAdd"] == [] and hc["SecurityOpt"] == ["no-new-privileges"]
    assert hc["Privileged"] is False


def test_gpu_request(write_catalog):
    spec = resolve(load_catalog(write_catalog(BASE_CATALOG)), "alice", "", {"image": "nb-gpu", "resource_group": "gpu-a10"})
    kw = create_kwargs(spec, name="x", cmd=[], env={})
    assert kw["host_config"]["DeviceRequests"] == [{"Driver": "nvidia", "Count": 1, "Capabilities": [["gpu"]]}]


def test_default_server_name():
    assert container_name("alice", "") == "dsw-alice"
    assert container_name("a.b", "") != container_name("a-b", "")


def test_mounts():
    assert mount_arg(Mount("host", "/srv/nas", "/mnt/nas", True))["ReadOnly"] is True
    assert mount_arg(Mount("oss", "/run/dsw/oss/x", "/mnt/oss"))["BindOptions"] == {"Propagation": "rslave"}
    with pytest.raises(ValueError, match="nfs"):
        mount_arg(Mount("nfs", "srv:/x", "/mnt/x"))
