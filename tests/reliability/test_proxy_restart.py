"""configurable-http-proxy dies while instances run (issue 12, part 3). The proxy keeps its
routes in memory only, so a new proxy starts empty: the hub must notice (its proxy check),
start a new one and put the routes of the running instances back, so members reach them again
without anyone restarting anything."""

from __future__ import annotations

import os
import signal

import pytest

from .conftest import alive, reachable, wait_for

pytestmark = pytest.mark.integration


def proxy_pid(hub) -> int | None:
    try:
        return int((hub.state / "proxy.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def test_killed_proxy_is_restarted_with_the_routes_of_running_instances(rhub, instances):
    for user, server in instances:
        wait_for(lambda: reachable(rhub, user, server), f"{user}/{server} answers before the kill")
    old = proxy_pid(rhub)
    assert old and alive(old) and "configurable-http-proxy" in open(f"/proc/{old}/cmdline").read().replace("\0", " ")
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not alive(old), "the proxy is dead")
    if proxy_pid(rhub) in (old, None):  # not yet replaced (the hub checks every few seconds)
        assert not any(reachable(rhub, u, s) for u, s in instances)  # nothing serves them now

    new = wait_for(lambda: (p := proxy_pid(rhub)) and p != old and alive(p) and p, "the hub starts a new proxy")
    for user, server in instances:
        wait_for(lambda: reachable(rhub, user, server), f"{user}/{server} answers through the new proxy")
        assert rhub.server_model(user, server)["ready"]
    assert alive(new)
    assert rhub.proc.poll() is None  # the hub itself stayed up
