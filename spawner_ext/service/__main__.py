"""Entry point JupyterHub runs: serve the app on the port in JUPYTERHUB_SERVICE_URL.

The service lives and dies with the hub that started it (spawner_ext/lifetime.py says why
and how).
"""

import logging
import os
from urllib.parse import urlparse

import uvicorn

from ..lifetime import die_with_parent, watch_parent


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(asctime)s %(name)s] %(message)s")
    parent = os.getppid()
    die_with_parent(parent)
    from .app import app  # after the check: importing the app reads the catalogue

    app.state.watch_parent = lambda: watch_parent(parent)  # started by the app's lifespan
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    uvicorn.run(app, host=url.hostname or "127.0.0.1", port=url.port or 10101, log_level="info", access_log=True)


main()
