"""Entry point JupyterHub runs: serve the app on the port in JUPYTERHUB_SERVICE_URL."""

import os
from urllib.parse import urlparse

import uvicorn

from .app import app

url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
uvicorn.run(app, host=url.hostname or "127.0.0.1", port=url.port or 10101, log_level="info", access_log=True)
