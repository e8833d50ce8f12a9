"""Processes the hub starts (hub-managed services) live and die with that hub.

A hub killed with SIGKILL cannot stop its managed services: a stale one keeps its port, so the
next hub's copy fails with "address already in use" while the old one goes on with the old
configuration. So each asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG), checks
right away that the parent is still the hub (it may have died before the call), and an asyncio
watcher exits if it was re-parented anyway (no prctl on the system).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal

log = logging.getLogger("dsw.lifetime")
PR_SET_PDEATHSIG = 1


def started_by_hub() -> bool:
    """JupyterHub gives each managed service its name in the environment."""
    return bool(os.environ.get("JUPYTERHUB_SERVICE_NAME"))


def die_with_parent(parent: int) -> None:
    """Arm the parent-death signal, then check the parent is still ours: if it died before the
    call, no signal will ever come."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %s); relying on the parent watcher",
                        ctypes.get_errno())
    except (OSError, AttributeError):
        log.warning("no prctl on this system; relying on the parent watcher")
    if os.getppid() != parent:
        log.error("the hub (pid %s) is gone before this service started; exiting", parent)
        raise SystemExit(1)


async def watch_parent(parent: int, every: float = 1.0) -> None:
    """Exit when re-parented: the hub that started us is gone."""
    while True:
        await asyncio.sleep(every)
        if os.getppid() != parent:
            log.error("the hub (pid %s) is gone; this service exits with it", parent)
            os.kill(os.getpid(), signal.SIGTERM)
            return
