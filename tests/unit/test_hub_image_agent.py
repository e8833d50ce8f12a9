"""The one-machine hub runs the image agent beside the engine only when there is a registry host to
push to (spawner_ext.hubconfig.image_agent); its token is made once, readable by root only."""

import os
import stat

from spawner_ext.hubconfig import HubSettings, image_agent


def settings(tmp_path, **kw) -> HubSettings:
    return HubSettings(catalog_path=str(tmp_path / "catalog.yaml"), state_dir=str(tmp_path), **kw)


def test_agent_runs_beside_the_engine_when_a_registry_is_configured(tmp_path):
    s = settings(tmp_path, engine_url="unix:///run/podman.sock", image_registry="127.0.0.1:5000/dsw",
                 image_registry_tls_verify=False)
    svc = image_agent(s)
    assert svc["name"] == "image-agent"
    assert "--host=127.0.0.1" in svc["command"] and f"--announce={tmp_path}" in svc["command"]
    env = svc["environment"]
    assert env["DSW_AGENT_ENGINE_URL"] == "unix:///run/podman.sock"
    assert env["DSW_AGENT_REGISTRY_INSECURE"] == "1"
    token = env["DSW_AGENT_TOKEN_FILE"]
    assert stat.S_IMODE(os.stat(token).st_mode) == 0o600
    first = open(token).read()
    assert len(first) == 64 and first not in repr(svc["command"])
    assert image_agent(s)["environment"]["DSW_AGENT_TOKEN_FILE"] == token and open(token).read() == first


def test_no_agent_without_a_registry_host_an_engine_or_a_port(tmp_path):
    assert image_agent(settings(tmp_path, engine_url="unix:///x", image_registry="localhost/dsw-saved")) is None
    assert image_agent(settings(tmp_path, image_registry="127.0.0.1:5000/dsw")) is None  # Kubernetes: no engine
    assert image_agent(settings(tmp_path, engine_url="unix:///x", image_registry="127.0.0.1:5000/dsw",
                                image_agent_port=0)) is None
    assert not (tmp_path / "image-agent.token").exists()
