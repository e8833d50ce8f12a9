"""The image agent's HTTP glue (FastAPI): token auth, the managed-instance check, one save
per container at a time, progress.

Only the DSW service calls it: requests carry ``Authorization: Bearer <token>`` with the
token from ``DSW_AGENT_TOKEN_FILE`` (a Secret on Kubernetes). The service has checked that
the caller owns the instance; the agent checks that the container is a managed instance:
through the engine's labels (``dsw/managed=true``) when ``DSW_AGENT_ENGINE_URL`` is set (one
machine), else by the hub's variables in the init process's environment (Kubernetes, where
the node has no engine API the agent may rely on).

Routes are plain ``def``: the work is blocking file and registry I/O in FastAPI's threads.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
import threading

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from ..lifetime import die_with_parent, started_by_hub
from . import layer as layers
from . import locate, packages, publish

TMP_PATHS = ("/tmp",)


class SaveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    container_id: str = Field(pattern=r"^[0-9a-f]{12,64}$")
    base: str = Field(min_length=3, max_length=512, description="registry reference of the image the instance runs")
    target: str = Field(min_length=3, max_length=512, description="registry reference to push to")
    max_layer_bytes: int | None = Field(default=None, ge=0, description="cap on the new layer (compressed)")
    home: str = Field(default="/home/jovyan", description="the instance's home folder (left out)")
    comment: str = Field(default="", max_length=500)


class Progress:
    """Per container: state and bytes built/uploaded; a container saves at most once at a time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_container: dict[str, dict] = {}

    def begin(self, cid: str) -> None:
        with self.lock:
            if self.by_container.get(cid, {}).get("state") == "running":
                raise HTTPException(409, f"container {cid[:12]} is already being saved")
            self.by_container[cid] = {"state": "running", "built": 0, "uploaded": 0}

    def set(self, cid: str, **kw) -> None:
        with self.lock:
            self.by_container[cid].update(kw)

    def get(self, cid: str) -> dict | None:
        with self.lock:
            return dict(self.by_container[cid]) if cid in self.by_container else None


def _token() -> str:
    path = os.environ.get("DSW_AGENT_TOKEN_FILE", "")
    try:
        token = open(path).read().strip() if path else ""
    except OSError:
        token = ""
    if not token:
        raise RuntimeError("the image agent needs a token: set DSW_AGENT_TOKEN_FILE to a file holding it")
    return token


def _registry_auth() -> tuple[str, str] | None:
    user = os.environ.get("DSW_AGENT_REGISTRY_USER", "")
    path = os.environ.get("DSW_AGENT_REGISTRY_PASSWORD_FILE", "")
    return (user, open(path).read().strip()) if user and path else None


def managed(cid: str, pid: int) -> bool:
    engine_url = os.environ.get("DSW_AGENT_ENGINE_URL", "")
    if engine_url:
        import docker
        from docker.errors import NotFound

        cli = docker.DockerClient(base_url=engine_url, timeout=30, version="1.41")  # no version round trip
        try:
            labels = cli.api.inspect_container(cid)["Config"].get("Labels") or {}
        except NotFound:
            return False
        finally:
            cli.close()
        return labels.get("dsw/managed") == "true"
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return False
    return any(e.startswith(b"JUPYTERHUB_SERVICE_PREFIX=") for e in env)


def create_app() -> FastAPI:
    token = _token()
    progress = Progress()
    insecure = os.environ.get("DSW_AGENT_REGISTRY_INSECURE", "0") == "1"
    workdir = os.environ.get("DSW_AGENT_WORKDIR") or None
    app = FastAPI(title="DSW image agent", docs_url=None, redoc_url=None)

    def authorised(request: Request) -> None:
        given = request.headers.get("Authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "the image agent answers the DSW service only (Authorization: Bearer <token>)")

    @app.get("/v1/health")
    def health() -> dict:
        return {"ok": True}

    @app.get("/v1/saves/{container_id}", dependencies=[Depends(authorised)])
    def status(container_id: str) -> dict:
        found = progress.get(container_id)
        if found is None:
            raise HTTPException(404, f"no save of container {container_id[:12]}")
        return found

    @app.post("/v1/saves", dependencies=[Depends(authorised)])
    def save(body: SaveBody) -> dict:
        cid = body.container_id
        try:
            found = locate.writable_layer(cid)
        except locate.NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        if not managed(cid, found.pid):
            raise HTTPException(403, f"container {cid[:12]} is not a managed DSW instance")
        progress.begin(cid)
        try:
            diff = packages.of_instance(found.root)
            with tempfile.TemporaryDirectory(prefix="dsw-layer-", dir=workdir) as tmp:
                try:
                    built = layers.build(found.upperdir, os.path.join(tmp, "layer.tar.gz"),
                                         excluded=[*found.mount_points, body.home, *TMP_PATHS],
                                         progress=lambda n: progress.set(cid, built=n), limit=body.max_layer_bytes)
                except layers.LayerTooLarge as exc:
                    raise HTTPException(413, str(exc)) from None
                progress.set(cid, built=built.size, state="uploading")
                try:
                    done = publish.publish(built, base=body.base, target=body.target, comment=body.comment,
                                           insecure=insecure, auth=_registry_auth(),
                                           progress=lambda n: progress.set(cid, uploaded=n))
                except publish.PublishError as exc:
                    raise HTTPException(502, str(exc)) from None
            progress.set(cid, state="done")
            return {"ref": done.ref, "digest": done.digest, "layer_size": built.size, "uploaded": done.uploaded, "layer_uploaded": done.layer_uploaded,
                    "diff_id": built.diff_id, "packages": diff}
        except BaseException:
            progress.set(cid, state="failed")
            raise

    return app


def main() -> None:
    import argparse

    import uvicorn

    p = argparse.ArgumentParser(description="DSW image agent")
    p.add_argument("--host", default=os.environ.get("DSW_AGENT_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("DSW_AGENT_PORT", "9731")))
    p.add_argument("--announce", metavar="STATE_DIR", default="",
                   help="one machine: write the agent's URL and token file into the hub's state folder "
                        "(image-agent.json), where the DSW service finds it; removed again on exit")
    args = p.parse_args()
    if started_by_hub():  # one machine: a hub-managed service, gone with its hub
        die_with_parent(os.getppid())
    app = create_app()
    announced = announce(args.announce, f"http://{args.host}:{args.port}") if args.announce else ""
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        if announced:
            with contextlib.suppress(OSError):
                os.unlink(announced)


def announce(state_dir: str, url: str) -> str:
    """Write {url, token_file} for the service (0600, replaced atomically); its path."""
    path = os.path.join(state_dir, "image-agent.json")
    tmp = f"{path}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token_file": os.path.abspath(os.environ["DSW_AGENT_TOKEN_FILE"])}, f)
    os.replace(tmp, path)
    return path
