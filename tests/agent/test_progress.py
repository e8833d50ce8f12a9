"""The service's record of saves in progress: one save per instance at a time, the agent's
progress kept per save, listed per workspace; and the agent's own per-container guard."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from spawner_ext.agent.app import Progress
from spawner_ext.service.actions import _Claims


def test_a_second_save_of_one_instance_is_refused_until_the_first_ends():
    claims = _Claims()
    key = ("im-bob", "lab")
    assert claims.claim(key, {"workspace": "ws1", "owner": "im-bob", "server": "lab", "name": "a"})
    assert not claims.claim(key, {"workspace": "ws1", "owner": "im-bob", "server": "lab", "name": "b"})
    assert claims.claim(("im-bob", "other"), {"workspace": "ws2", "owner": "im-bob", "server": "other", "name": "c"})
    claims.update(key, {"state": "uploading", "built": 1000, "uploaded": 10, "token": "never-copied"})
    (entry,) = claims.in_workspace("ws1")
    assert entry == {"workspace": "ws1", "owner": "im-bob", "server": "lab", "name": "a", "state": "uploading",
                     "built": 1000, "uploaded": 10}
    claims.release(key)
    assert claims.in_workspace("ws1") == [] and claims.claim(key, {"workspace": "ws1"})


def test_the_agent_refuses_a_second_save_of_a_running_container():
    progress = Progress()
    progress.begin("c" * 64)
    with pytest.raises(HTTPException) as err:
        progress.begin("c" * 64)
    assert err.value.status_code == 409
    progress.set("c" * 64, state="failed")
    progress.begin("c" * 64)  # a finished (or failed) save does not block the next
    assert progress.get("c" * 64) == {"state": "running", "built": 0, "uploaded": 0}
