"""The DSW service lives and dies with its hub (issue 8, defect 3).

A hub killed with SIGKILL cannot stop its managed services. Before the fix the old service
kept its port, the next hub's service failed with "address already in use" and the old one
went on serving /services/dsw/ with the old configuration. Here a real hub is killed (the
hub process only, not its process group), a new hub with a DIFFERENT catalogue starts on the
same ports, and /services/dsw/ must answer from the new service.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from .conftest import make_catalog
from .hubproc import Hub, free_port

pytestmark = pytest.mark.integration


def children(pid: int, needle: str) -> list[int]:
    """Live processes whose parent is ``pid`` and whose command line holds ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and needle in cmdline and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper has exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def workspaces_seen(hub: Hub, token: str) -> list[str] | None:
    try:
        r = requests.get(f"{hub.url}/services/dsw/api/v1/workspaces", headers={"Authorization": f"token {token}"},
                         timeout=5)
    except requests.RequestException:
        return None
    return [w["id"] for w in r.json()] if r.status_code == 200 else None


def test_new_hub_after_sigkill_is_served_by_its_own_service(tmp_path, engine_url):
    service_port = free_port()
    hubs = {}
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
        catalog = make_catalog(tmp_path / name, workspaces=[
            {"id": f"lt-{name}", "members": {"lt-ann": "owner"}, "resource_groups": ["cpu"]}])
        hubs[name] = Hub(tmp_path / "state", catalog, engine_url, extra_env={"DSW_SERVICE_PORT": str(service_port)})
    old, new = hubs["old"], hubs["new"]
    # the same hub restarted: same state, ports and admin token, another configuration
    new.port, new.hub_port, new.proxy_port, new.url, new.token = old.port, old.hub_port, old.proxy_port, old.url, old.token
    old.start()
    try:
        old.wait_service()
        token = old.user_token("lt-ann")
        assert workspaces_seen(old, token) == ["lt-old"]
        [old_service] = children(old.proc.pid, "spawner_ext.service")

        os.kill(old.proc.pid, signal.SIGKILL)  # the hub process only: its group (proxy, service) stays
        old.proc.wait()
        wait_for(lambda: not alive(old_service), f"the old service (pid {old_service}) exits with its hub")

        new.start()
        new.wait_service()
        assert wait_for(lambda: workspaces_seen(new, token) == ["lt-new"], "the new catalogue is served")
        [new_service] = children(new.proc.pid, "spawner_ext.service")
        assert new_service != old_service and not alive(old_service)
        assert "address already in use" not in new.log.read_text().lower()
    finally:
        new.stop()
        try:  # whatever is left of the killed hub's group (the proxy, if the new hub did not replace it)
            os.killpg(old.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, TypeError, AttributeError):
            pass
