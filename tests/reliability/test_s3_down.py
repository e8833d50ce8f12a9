"""The S3 server is down when a member starts an instance that mounts an OSS entry (issue 12,
part 4). The storage check before anything is made must refuse the spawn, naming the storage
(the member sees which entry is at fault, not a container that starts without its data or
hangs), and leave nothing: no container, no s3fs mount or credential file, no quota
reservation, no server record counting toward the member's limit."""

from __future__ import annotations

import pytest

from spawner_ext.naming import slug
from spawner_ext.storage import local

from .conftest import SMALL, engine_any, reservations, wait_for

pytestmark = pytest.mark.integration


def test_spawn_with_oss_while_s3_is_down_is_refused_and_makes_nothing(rhub, oss, engine):
    layout = local.Layout.under(rhub.state)
    mounted_before = {p for p in local.mount_points() if p.startswith(str(layout.root) + "/")}
    oss.stop()
    try:
        assert oss.down()
        r = rhub.api("POST", "/users/rl-bob/servers/s3down", token=rhub.tokens["rl-bob"],
                     json={**SMALL, "mounts": [{"storage": "rl-data"}]}, timeout=120)
        assert r.status_code == 400, r.text
        message = r.json()["message"]
        assert "storage 'rl-data'" in message and oss.s3.endpoint in message, message
        assert oss.member[1] not in message

        assert not engine_any(engine, "rl-bob", "s3down")
        assert not layout.instance_dir("rl-bob", "s3down").exists()
        assert not (layout.creds / slug("rl-bob") / slug("s3down")).exists()
        assert {p for p in local.mount_points() if p.startswith(str(layout.root) + "/")} == mounted_before
        assert ("rl-bob", "s3down") not in reservations(rhub)
        servers = rhub.api("GET", "/users/rl-bob", params={"include_stopped_servers": "1"}).json()["servers"]
        assert "s3down" not in servers
    finally:
        oss.start()
    # and the same spawn works once the storage is back (the refusal was about the storage)
    r = rhub.spawn("rl-bob", "s3down", {**SMALL, "mounts": [{"storage": "rl-data"}]})
    assert r.status_code in (201, 202), r.text
    assert ("rl-bob", "s3down") in reservations(rhub)
    rhub.stop_server("rl-bob", "s3down")
    wait_for(lambda: not engine_any(engine, "rl-bob", "s3down"), "the instance's container is removed")
    assert ("rl-bob", "s3down") not in reservations(rhub)
