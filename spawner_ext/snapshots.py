"""Save a running instance as an image: naming (pure) and the saving step (Docker Engine API).

``save`` commits the instance's container to
``<registry>/<ws>/<user>-<name>:<tag>`` (``registry`` = ``DSW_IMAGE_REGISTRY``, which
includes the namespace; default ``localhost/dsw-saved``: local only, nothing is pushed)
and pushes it when the registry is a real host. Nothing half-made: when the push fails
the committed tag is removed again and the caller writes no row.

A commit holds the container's own filesystem only: volumes are not in the image, so
files under /home/jovyan (the home volume) and storage mounts are not saved.

With a registry host configured and an image agent beside the engine (``DSW_AGENT_URL`` +
``DSW_AGENT_TOKEN_FILE``), saving goes through the agent instead (``save_with_agent``): only
the instance's own writable layer is pushed on top of its base image, the way Kubernetes
nodes save (spawner_ext/agent/). A managed image that is not in the registry yet is pushed
there once by the engine (``<prefix>/base/<name>:<tag>``); saved images of saved images are
already there. The saved image is then pulled into the engine so it launches at once.

Either way the package difference from the base image (``pip list`` of the image as built,
``/opt/dsw/base-packages.json``, against the environment at save time) is recorded.

Blocking (docker SDK); the service runs it in a thread. Every engine call is bounded by
the client's timeout (``DSW_SAVE_TIMEOUT`` seconds, default 600).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from .naming import container_name, image_repository, label_value, server_label
from .spec import MANAGED_LABEL

DEFAULT_REGISTRY = "localhost/dsw-saved"
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$"  # DNS-label-ish, at most 30 characters
NAME_RULE = "1-30 lower-case letters, digits or '-', starting and ending with a letter or digit"
ID_PREFIX = "saved-"


class SaveError(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


# --- naming (pure) ------------------------------------------------------------------
def registry_prefix(value: str | None = None) -> str:
    prefix = (value if value is not None else os.environ.get("DSW_IMAGE_REGISTRY", "")).strip().strip("/")
    return prefix or DEFAULT_REGISTRY


def registry_host(prefix: str) -> str | None:
    """The host to push to, or None for local-only prefixes (``localhost/...``, no dot/port)."""
    first, _, rest = prefix.partition("/")
    if not rest or first == "localhost" or not ("." in first or ":" in first):
        return None
    return first


def valid_name(name: str) -> bool:
    return isinstance(name, str) and re.fullmatch(NAME_PATTERN, name) is not None


def new_id() -> str:
    """``saved-<10 hex>``: a catalogue image id (ID_PATTERN) that cannot clash with YAML ids."""
    return ID_PREFIX + secrets.token_hex(5)


def image_ref(prefix: str, ws: str, user: str, name: str, tag: str) -> str:
    """``<prefix>/<ws>/<user slug>/<name>:<tag>``: one path component per part (naming.py), so
    two members' images never share a repository."""
    try:
        return f"{image_repository(prefix, ws, user, name)}:{tag}"
    except ValueError as exc:
        raise SaveError(400, f"image name {name!r}: {exc}") from None


def split_ref(ref: str) -> tuple[str, str]:
    repo, _, tag = ref.rpartition(":")
    return repo, tag


@dataclass(frozen=True)
class Saved:
    ref: str
    size: int
    base_image: str  # catalogue id of the image the instance ran (label dsw/image)
    kind: str
    pushed: bool
    packages: dict | None = None  # {"added", "changed", "removed"}; None: no baseline in the image
    layer_bytes: int = 0  # the new layer's bytes pushed by the agent (0: engine commit)
    uploaded: int = field(default=0, compare=False)  # bytes sent to the registry


# --- the saving step (blocking) ----------------------------------------------------------
def client(engine_url: str | None = None, timeout: int | None = None) -> docker.DockerClient:
    state = os.environ.get("DSW_STATE", "/var/lib/dsw-hub")
    url = engine_url or os.environ.get("DSW_ENGINE_URL") or f"unix://{state}/podman.sock"
    return docker.DockerClient(base_url=url, timeout=timeout or int(os.environ.get("DSW_SAVE_TIMEOUT", "600")))


def find_container(cli: docker.DockerClient, user: str, server: str, ws: str) -> dict:
    """The instance's container (labels first, then the spawner's name), in workspace ``ws``."""
    filters = {"label": [f"{MANAGED_LABEL}=true", f"dsw/user={label_value(user)}",
                         f"dsw/server={server_label(server or '')}"]}
    found = cli.api.containers(filters=filters)
    if found:
        info = cli.api.inspect_container(found[0]["Id"])
    else:
        try:
            info = cli.api.inspect_container(container_name(user, server))
        except NotFound:
            info = None
    labels = (info or {}).get("Config", {}).get("Labels") or {}
    if not info or labels.get("dsw/workspace") != ws or not info.get("State", {}).get("Running"):
        raise SaveError(404, f"no running instance {user}/{server or 'default'} in workspace {ws}")
    return info


def _scrub_env(cli: docker.DockerClient, info: dict) -> list[str]:
    """``ENV K=`` for every variable the spawner set (tokens, hub URLs): the image keeps the
    base image's environment, never the instance's credentials."""
    try:
        base = set(cli.api.inspect_image(info["Image"])["Config"].get("Env") or [])
    except (ImageNotFound, APIError, KeyError):
        base = set()
    keys = sorted({e.partition("=")[0] for e in info["Config"].get("Env") or [] if e not in base})
    return [f"ENV {k}=" for k in keys if re.fullmatch(r"^[A-Za-z_][A-Za-z0-9_]*$", k)]


PACKAGES_MARK = "--- dsw: pip list ---"
PACKAGES_SCRIPT = f"cat /opt/dsw/base-packages.json 2>/dev/null || echo null; echo '{PACKAGES_MARK}'; pip list --format=json"


def packages_in_container(cli: docker.DockerClient, info: dict) -> dict | None:
    """The package difference read inside the instance: baseline file, then ``pip list``."""
    from .agent.packages import canonical, difference

    try:
        res = cli.api.exec_create(info["Id"], ["sh", "-c", PACKAGES_SCRIPT], user="1000:100", stderr=False)
        out = cli.api.exec_start(res["Id"]).decode(errors="replace")
        base_text, _, now_text = out.partition(PACKAGES_MARK)
        base, now = json.loads(base_text), json.loads(now_text)
    except (APIError, DockerException, ValueError):
        return None
    if not isinstance(base, list) or not isinstance(now, list):
        return None
    norm = lambda rows: {canonical(r["name"]): r["version"] for r in rows}  # noqa: E731
    return difference(norm(base), norm(now))


def push(cli: docker.DockerClient, ref: str, *, tls_verify: bool = True) -> None:
    """Push ``ref``; raise SaveError from the stream's ``{"error": ...}`` lines (the engine
    answers 200 and reports failures inside the stream). ``tlsVerify=false`` is podman's
    compat query for plain-HTTP registries (Docker ignores it)."""
    repo, tag = split_ref(ref)
    params = {"tag": tag}
    if not tls_verify:
        params["tlsVerify"] = "false"
    api = cli.api
    try:
        resp = api._post(api._url("/images/{0}/push", repo), params=params, stream=True,
                         headers={"X-Registry-Auth": "e30="})  # base64 "{}": no credentials
        api._raise_for_status(resp)
        errors = []
        for line in api._stream_helper(resp, decode=True):
            if isinstance(line, dict) and line.get("error"):
                errors.append(str(line.get("error")))
    except (APIError, DockerException, OSError) as exc:
        errors = [getattr(exc, "explanation", None) or str(exc)]
    if errors:
        raise SaveError(502, f"push of {ref} failed: {errors[-1]}")


def remove_tag(cli: docker.DockerClient, ref: str) -> None:
    try:
        cli.api.remove_image(ref, noprune=False)
    except NotFound:
        pass


def save(cli: docker.DockerClient, *, ws: str, user: str, server: str, name: str, tag: str,
         prefix: str | None = None, tls_verify: bool | None = None, cap: int | None = None,
         progress: Callable[[dict], None] | None = None) -> Saved:
    """Through the image agent when there is one and a registry host (``cap``: the workspace's
    largest new layer), else commit the instance and push it when the registry is a real
    host. Raises SaveError."""
    if not valid_name(name):
        raise SaveError(400, f"image name {name!r}: {NAME_RULE}")
    prefix = registry_prefix(prefix)
    if tls_verify is None:
        tls_verify = os.environ.get("DSW_IMAGE_REGISTRY_TLS_VERIFY", "1") != "0"
    ref = image_ref(prefix, ws, user, name, tag)
    info = find_container(cli, user, server, ws)
    labels = info["Config"].get("Labels") or {}
    if registry_host(prefix) and agent_settings():
        return save_with_agent(cli, info, ref=ref, prefix=prefix, tls_verify=tls_verify, cap=cap, progress=progress,
                               comment=f"DSW: {user}/{server or 'default'} in {ws} saved as {name}")
    packages = packages_in_container(cli, info)
    repo, rtag = split_ref(ref)
    try:
        cli.api.commit(info["Id"], repository=repo, tag=rtag, changes=_scrub_env(cli, info),
                       message=f"DSW: {user}/{server or 'default'} in {ws} saved as {name}")
    except (APIError, DockerException) as exc:
        raise SaveError(500, f"the engine could not commit {user}/{server or 'default'}: "
                             f"{getattr(exc, 'explanation', None) or exc}") from None
    try:
        size = int(cli.api.inspect_image(ref).get("Size") or 0)
        host = registry_host(prefix)
        if host:
            push(cli, ref, tls_verify=tls_verify)
    except BaseException:
        remove_tag(cli, ref)  # nothing half-made
        raise
    return Saved(ref=ref, size=size, base_image=labels.get("dsw/image", ""), kind=labels.get("dsw/kind", ""),
                 pushed=bool(host), packages=packages)


# --- through the image agent --------------------------------------------------------------
ANNOUNCE_FILE = "image-agent.json"


def agent_settings() -> tuple[str, str] | None:
    """(agent URL, token) when an image agent runs beside this engine, else None: from
    ``DSW_AGENT_URL`` + ``DSW_AGENT_TOKEN_FILE``, else from the file an agent started with
    ``--announce <state dir>`` wrote into the hub's state folder (one machine)."""
    url = os.environ.get("DSW_AGENT_URL", "").rstrip("/")
    path = os.environ.get("DSW_AGENT_TOKEN_FILE", "")
    if not url or not path:
        announced = os.path.join(os.environ.get("DSW_STATE", "/var/lib/dsw-hub"), ANNOUNCE_FILE)
        try:
            with open(announced) as f:
                found = json.load(f)
            url, path = str(found["url"]).rstrip("/"), str(found["token_file"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    try:
        token = open(path).read().strip()
    except OSError as exc:
        raise SaveError(500, f"the image agent's token file cannot be read: {exc.strerror}") from None
    return (url, token) if token else None


def manifest_exists(ref: str, *, tls_verify: bool) -> bool:
    import requests

    host, _, rest = ref.partition("/")
    repo, tag = split_ref(rest)
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    url = f"{'https' if tls_verify else 'http'}://{host}/v2/{repo}/manifests/{tag}"
    try:
        return requests.head(url, headers={"Accept": accept}, timeout=30).status_code == 200
    except requests.RequestException as exc:
        raise SaveError(502, f"push to {host} failed: the registry cannot be reached ({type(exc).__name__})") from None


def base_in_registry(cli: docker.DockerClient, info: dict, prefix: str, *, tls_verify: bool) -> str:
    """The reference of the instance's image in the registry, pushing a managed image there
    once (its layers are then mounted by every save, never uploaded again)."""
    image = info["Config"]["Image"]
    host = registry_host(prefix)
    if image.startswith(f"{host}/"):
        return image
    last = image.rsplit("/", 1)[-1]
    ref = f"{prefix}/base/{last if ':' in last else last + ':latest'}"
    if not manifest_exists(ref, tls_verify=tls_verify):
        repo, tag = split_ref(ref)
        try:
            cli.api.tag(info["Image"], repo, tag)
            push(cli, ref, tls_verify=tls_verify)
        finally:
            remove_tag(cli, ref)
    return ref


def pull(cli: docker.DockerClient, ref: str, *, tls_verify: bool) -> None:
    """Pull ``ref`` into the engine. A plain-HTTP registry needs podman's own pull endpoint
    (``/libpod/images/pull?tlsVerify=false``: the compat endpoint has no such switch); Docker
    itself decides by its ``insecure-registries`` setting."""
    repo, tag = split_ref(ref)
    api = cli.api
    path, params = "/images/create", {"fromImage": repo, "tag": tag}
    if not tls_verify:
        path, params = "/libpod/images/pull", {"reference": ref, "tlsVerify": "false", "quiet": "true"}
    try:
        resp = api._post(api._url(path), params=params, stream=True)
        api._raise_for_status(resp)
        errors = [str(line["error"]) for line in api._stream_helper(resp, decode=True)
                  if isinstance(line, dict) and line.get("error")]
    except (APIError, DockerException, OSError) as exc:
        errors = [getattr(exc, "explanation", None) or str(exc)]
    if errors:
        raise SaveError(502, f"pull of {ref} failed: {errors[-1]}")


def save_with_agent(cli: docker.DockerClient, info: dict, *, ref: str, prefix: str, tls_verify: bool,
                    cap: int | None, comment: str, progress: Callable[[dict], None] | None = None) -> Saved:
    """Ask the agent to push the instance's own layer onto its base image as ``ref``; then
    pull ``ref`` into the engine. A failure after the push deletes the manifest again."""
    import requests

    url, token = agent_settings()
    labels = info["Config"].get("Labels") or {}
    base = base_in_registry(cli, info, prefix, tls_verify=tls_verify)
    home = next((e.partition("=")[2] for e in info["Config"].get("Env") or [] if e.startswith("HOME=")),
                "/home/jovyan")
    body = {"container_id": info["Id"], "base": base, "target": ref, "max_layer_bytes": cap, "home": home,
            "comment": comment[:500]}
    try:
        r = post_save(url, token, body, progress)
    except requests.RequestException as exc:
        raise SaveError(502, f"the image agent at {url} cannot be reached ({type(exc).__name__}): is it running?") from None
    return finish_agent_save(cli, r, ref=ref, labels=labels, tls_verify=tls_verify)


def post_save(url: str, token: str, body: dict, progress: Callable[[dict], None] | None = None):
    """POST the save to the agent; meanwhile a thread reads the agent's progress for this
    container (``GET /v1/saves/<id>``: state, bytes built, bytes uploaded) into ``progress``."""
    import threading

    import requests

    headers = {"Authorization": f"Bearer {token}"}
    done = threading.Event()

    def watch():
        while not done.wait(0.5):
            try:
                r = requests.get(f"{url}/v1/saves/{body['container_id']}", headers=headers, timeout=5)
                if r.status_code == 200:
                    progress(r.json())
            except (requests.RequestException, ValueError):
                continue
    watcher = threading.Thread(target=watch, daemon=True) if progress else None
    if watcher:
        watcher.start()
    try:
        return requests.post(f"{url}/v1/saves", json=body, headers=headers,
                             timeout=int(os.environ.get("DSW_SAVE_TIMEOUT", "600")))
    finally:
        done.set()


def agent_error(r) -> SaveError:
    try:
        detail = r.json().get("detail")
    except ValueError:
        detail = None
    detail = detail if isinstance(detail, str) else (r.text[:300] or r.reason)
    status = {413: 409, 409: 409, 404: 404}.get(r.status_code, 502)  # a cap is a quota: 409
    return SaveError(status, f"the image agent refused the save ({r.status_code}): {detail}")


def finish_agent_save(cli: docker.DockerClient | None, r, *, ref: str, labels: dict, tls_verify: bool) -> Saved:
    """Saved from the agent's answer; pull into ``cli`` when given (one machine)."""
    if r.status_code != 200:
        raise agent_error(r)
    done = r.json()
    if cli is not None:
        try:
            pull(cli, ref, tls_verify=tls_verify)
        except BaseException:
            delete_from_registry(ref)
            raise
    return Saved(ref=ref, size=int(done["layer_size"]), base_image=labels.get("dsw/image", ""),
                 kind=labels.get("dsw/kind", ""), pushed=True, packages=done.get("packages"),
                 layer_bytes=int(done["layer_size"]), uploaded=int(done["uploaded"]))


def in_use(cli: docker.DockerClient, image_id: str) -> list[str]:
    """Names of instances (containers) started from the saved image ``image_id``."""
    found = cli.api.containers(all=True, filters={"label": [f"{MANAGED_LABEL}=true", f"dsw/image={image_id}"]})
    return [n.lstrip("/") for c in found for n in (c.get("Names") or [])[:1]]


def delete_from_registry(ref: str, *, timeout: float = 30) -> str:
    """Best effort: delete the manifest from the registry (needs ``delete.enabled``).
    Returns "" when deleted or nothing to do, else why not."""
    import requests

    prefix = registry_prefix()
    host = registry_host(prefix)
    if not host or not ref.startswith(host + "/"):
        return ""
    repo, tag = split_ref(ref[len(host) + 1:])
    scheme = "http" if os.environ.get("DSW_IMAGE_REGISTRY_TLS_VERIFY", "1") == "0" else "https"
    base = f"{scheme}://{host}/v2/{repo}/manifests"
    accept = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.v2+json"])
    try:
        head = requests.head(f"{base}/{tag}", headers={"Accept": accept}, timeout=timeout)
        digest = head.headers.get("Docker-Content-Digest")
        if head.status_code == 404:
            return ""
        if not digest:
            return f"registry answered {head.status_code} without a digest"
        r = requests.delete(f"{base}/{digest}", timeout=timeout)
        return "" if r.status_code in (202, 404) else f"registry answered {r.status_code}: {r.text[:200]}"
    except requests.RequestException as exc:
        return str(exc)


# --- on Kubernetes: the agent on the instance's node ----------------------------------------
@dataclass(frozen=True)
class KubeSettings:
    """Where the service looks (``DSW_KUBE_*`` from the hub's settings on Kubernetes)."""

    namespace_template: str = "dsw-{workspace}"
    agent_namespace: str = ""
    agent_selector: str = "app.kubernetes.io/component=image-agent"

    @classmethod
    def from_environ(cls) -> KubeSettings | None:
        agent_ns = os.environ.get("DSW_KUBE_AGENT_NAMESPACE", "")
        if not agent_ns:
            return None
        return cls(namespace_template=os.environ.get("DSW_KUBE_NAMESPACE_TEMPLATE", cls.namespace_template),
                   agent_namespace=agent_ns,
                   agent_selector=os.environ.get("DSW_KUBE_AGENT_SELECTOR", cls.agent_selector))


@dataclass(frozen=True)
class Placement:
    """The instance's pod, its node and container, and the agent that can save it."""

    pod: str
    node: str
    container_id: str
    image: str
    labels: dict
    agent_url: str


def instance_pod(pods: list[dict], user: str, server: str) -> dict | None:
    """The running pod of ``user``'s server ``server`` among a workspace's pods (pure):
    kubespawner annotates pods with the hub's user and server names, unescaped."""
    for pod in pods:
        ann = (pod.get("metadata") or {}).get("annotations") or {}
        if ann.get("hub.jupyter.org/username") == user and ann.get("hub.jupyter.org/servername", "") == server \
                and (pod.get("status") or {}).get("phase") == "Running":
            return pod
    return None


def agent_on(pods: list[dict], node: str) -> str | None:
    """The URL of a ready agent pod on ``node`` (pure); its port is the pod's first port."""
    for pod in pods:
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        if spec.get("nodeName") == node and status.get("phase") == "Running" and ready and status.get("podIP"):
            ports = (spec.get("containers") or [{}])[0].get("ports") or [{}]
            ip = status["podIP"]
            return f"http://{'[' + ip + ']' if ':' in ip else ip}:{ports[0].get('containerPort', 9731)}"
    return None


def place(pods: list[dict], agents: list[dict], *, user: str, server: str, ws: str) -> Placement:
    """Pure: refusals name what is missing."""
    pod = instance_pod(pods, user, server)
    if pod is None:
        raise SaveError(404, f"no running instance {user}/{server or 'default'} in workspace {ws}")
    node = (pod.get("spec") or {}).get("nodeName") or ""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    main = next((c for c in statuses if c.get("name") == "notebook"), statuses[0] if statuses else {})
    container_id = (main.get("containerID") or "").partition("://")[2]
    if not node or not container_id:
        raise SaveError(409, f"instance {user}/{server or 'default'} has no node or container yet; try again")
    url = agent_on(agents, node)
    if url is None:
        raise SaveError(503, f"no image agent runs on node {node}: saving needs the chart's imageAgent "
                             "(imageAgent.enabled, scheduled on the nodes that run instances)")
    spec_containers = (pod.get("spec") or {}).get("containers") or [{}]
    image = next((c.get("image") for c in spec_containers if c.get("name") == main.get("name")),
                 spec_containers[0].get("image", ""))
    return Placement(pod=pod["metadata"]["name"], node=node, container_id=container_id, image=image,
                     labels=pod["metadata"].get("labels") or {}, agent_url=url)


def kube_pods(settings: KubeSettings, ws: str) -> tuple[list[dict], list[dict]]:
    """The workspace's instance pods and the agent pods (kubernetes_asyncio, run to completion
    in this worker thread)."""
    from .kube.objects import namespace_name

    pods, agents = _list_pods([(namespace_name(settings.namespace_template, ws), f"dsw/workspace={ws}"),
                               (settings.agent_namespace, settings.agent_selector)])
    return pods, agents


def kube_in_use(settings: KubeSettings, ws: str, image_id: str) -> list[str]:
    """Names of the workspace's pods started from the saved image ``image_id`` (label
    ``dsw/image``, as ``in_use`` asks the engine), finished pods left out."""
    from .kube.objects import namespace_name

    (pods,) = _list_pods([(namespace_name(settings.namespace_template, ws),
                           f"dsw/workspace={ws},dsw/image={image_id}")])
    return [p["metadata"]["name"] for p in pods
            if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]


def _list_pods(queries: list[tuple[str, str]]) -> list[list[dict]]:
    """Pods per (namespace, label selector), as raw JSON (kubernetes_asyncio, run to completion
    in this worker thread; in-cluster config, or KUBECONFIG)."""
    import asyncio

    from kubernetes_asyncio import client as kclient
    from kubernetes_asyncio import config as kconfig
    from kubernetes_asyncio.config.config_exception import ConfigException

    async def fetch():
        cfg = kclient.Configuration()
        try:
            if os.environ.get("KUBECONFIG"):
                await kconfig.load_kube_config(config_file=os.environ["KUBECONFIG"], client_configuration=cfg)
            else:
                kconfig.load_incluster_config(client_configuration=cfg)
        except ConfigException as exc:
            raise SaveError(500, f"the service cannot reach the Kubernetes API: {exc}") from None
        async with kclient.ApiClient(configuration=cfg) as api:
            core = kclient.CoreV1Api(api)
            out = []
            for ns, selector in queries:
                # raw JSON (no models): only a few fields are read, and nothing is re-validated
                r = await core.list_namespaced_pod(ns, label_selector=selector, _preload_content=False)
                out.append(json.loads(await r.read()).get("items") or [])
            return out
    try:
        return asyncio.run(fetch())
    except kclient.ApiException as exc:
        raise SaveError(502, f"the Kubernetes API answered {exc.status}: {exc.reason}") from None


def save_on_kube(settings: KubeSettings, *, ws: str, user: str, server: str, name: str, tag: str,
                 prefix: str | None = None, cap: int | None = None,
                 progress: Callable[[dict], None] | None = None) -> Saved:
    """Find the instance's pod, node and container; ask the agent on that node to push the
    instance's own layer onto the pod's image. The pod's image must be in the registry."""
    import requests

    if not valid_name(name):
        raise SaveError(400, f"image name {name!r}: {NAME_RULE}")
    prefix = registry_prefix(prefix)
    host = registry_host(prefix)
    if not host:
        raise SaveError(409, "saving on Kubernetes needs a registry: set DSW_IMAGE_REGISTRY to host/namespace")
    pods, agents = kube_pods(settings, ws)
    where = place(pods, agents, user=user, server=server, ws=ws)
    if not where.image.startswith(f"{host}/"):
        raise SaveError(409, f"the instance's image {where.image} is not in the registry {host}: "
                             "saved images are pushed onto their base there")
    settings_ = agent_settings_token()
    ref = image_ref(prefix, ws, user, name, tag)
    body = {"container_id": where.container_id, "base": where.image, "target": ref, "max_layer_bytes": cap,
            "comment": f"DSW: {user}/{server or 'default'} in {ws} saved as {name}"}
    try:
        r = post_save(where.agent_url, settings_, body, progress)
    except requests.RequestException as exc:
        raise SaveError(502, f"the image agent on node {where.node} cannot be reached ({type(exc).__name__})") from None
    return finish_agent_save(None, r, ref=ref, labels=where.labels, tls_verify=True)


def agent_settings_token() -> str:
    path = os.environ.get("DSW_AGENT_TOKEN_FILE", "")
    try:
        token = open(path).read().strip() if path else ""
    except OSError as exc:
        raise SaveError(500, f"the image agent's token file cannot be read: {exc.strerror}") from None
    if not token:
        raise SaveError(500, "the image agent's token is not configured (DSW_AGENT_TOKEN_FILE)")
    return token


__all__ = ["Saved", "SaveError", "save", "push", "remove_tag", "in_use", "image_ref", "registry_prefix",
           "registry_host", "valid_name", "new_id", "find_container", "client", "delete_from_registry",
           "save_on_kube", "kube_in_use", "KubeSettings", "place"]
