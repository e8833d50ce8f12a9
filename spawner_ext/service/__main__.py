"""Entry point JupyterHub runs: serve the app on the port in JUPYTERHUB_SERVICE_URL.

The service lives and dies with the hub that started it. A hub killed with SIGKILL cannot
stop its managed services, and a stale service would keep the port (the next hub's service
then fails with "address already in use" while the old one serves the old configuration).
So the kernel sends us SIGTERM when the parent dies (PR_SET_PDEATHSIG), and a watcher
exits if we were re-parented anyway (the parent died before the signal was armed, or the
kernel lacks it).
"""

import asyncio
import ctypes
import logging
import os
import signal
from urllib.parse import urlparse

import uvicorn

log = logging.getLogger("dsw.lifetime")
PR_SET_PDEATHSIG = 1


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
        log.error("the hub (pid %s) is gone before the service started; exiting", parent)
        raise SystemExit(1)


async def watch_parent(parent: int, every: float = 1.0) -> None:
    """Exit when re-parented: the hub that started us is gone."""
    while True:
        await asyncio.sleep(every)
        if os.getppid() != parent:
            log.error("the hub (pid %s) is gone; the service exits with it", parent)
            os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown
            return


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(asctime)s %(name)s] %(message)s")
    parent = os.getppid()
    die_with_parent(parent)
    from .app import app  # after the check: importing the app reads the catalogue

    app.state.watch_parent = lambda: watch_parent(parent)  # started by the app's lifespan
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    uvicorn.run(app, host=url.hostname or "127.0.0.1", port=url.port or 10101, log_level="info", access_log=True)


main()
