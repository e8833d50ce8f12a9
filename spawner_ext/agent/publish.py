"""Publish a layer on top of a base image in a registry with python-dxf (a kept client, no
hand-written registry protocol).

The new image is the base image's manifest and config with one layer appended: the config
gains the layer's ``diff_id`` and a history entry, and loses any hub token or hub URL from
its environment (the base config never had the instance's environment; this is defence in
depth). Base layers already in the target repository are skipped, those in the base's
repository are cross-mounted: never uploaded again. Blobs go first and the manifest last, by
tag: until the manifest is accepted the tag does not exist, afterwards it names a complete
image (the registry checks every blob the manifest refers to).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import requests
from dxf import DXF
from dxf.exceptions import DXFError, DXFMountFailed

from .layer import Layer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
LAYER_TYPE = {OCI_MANIFEST: "application/vnd.oci.image.layer.v1.tar+gzip",
              DOCKER_MANIFEST: "application/vnd.docker.image.rootfs.diff.tar.gzip"}
# environment variables of a hub instance that must never be baked into an image
SECRET_ENV = re.compile(r"^(JUPYTERHUB_[A-Z_]*|JPY_API_TOKEN|DSW_[A-Z_]*TOKEN[A-Z_]*|[A-Z_]*_(TOKEN|SECRET|PASSWORD))$")


class PublishError(Exception):
    pass


@dataclass(frozen=True)
class Ref:
    host: str
    repo: str
    tag: str

    @classmethod
    def parse(cls, ref: str) -> Ref:
        host, _, rest = ref.partition("/")
        repo, _, tag = rest.rpartition(":")
        if not host or not repo or not tag or "/" in tag:
            raise PublishError(f"not a registry reference host/repository:tag: {ref!r}")
        return cls(host, repo, tag)

    def __str__(self) -> str:
        return f"{self.host}/{self.repo}:{self.tag}"


@dataclass(frozen=True)
class Published:
    ref: str
    digest: str  # the manifest's digest
    uploaded: int  # bytes sent to the registry (the new layer + the config)
    layer_uploaded: int  # of which the layer (0 when the registry had it already)
    layer_size: int


def blank_env(env: list[str]) -> list[str]:
    return [f"{k}=" if SECRET_ENV.fullmatch(k) else f"{k}={v}" for k, _, v in (e.partition("=") for e in env)]


def new_config(base: dict, layer: Layer, comment: str, now: dt.datetime | None = None) -> dict:
    """The base config with ``layer`` appended (pure)."""
    cfg = json.loads(json.dumps(base))
    created = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(layer.diff_id)
    cfg.setdefault("history", []).append({"created": created, "created_by": "dsw image agent", "comment": comment})
    cfg["created"] = created
    if cfg.get("config", {}).get("Env"):
        cfg["config"]["Env"] = blank_env(cfg["config"]["Env"])
    return cfg


def new_manifest(base: dict, layer: Layer, config_digest: str, config_size: int) -> dict:
    """The base manifest with ``layer`` appended and the new config (pure)."""
    kind = base.get("mediaType") or OCI_MANIFEST
    if kind not in LAYER_TYPE:
        raise PublishError(f"base image manifest type {kind} is not supported (an image index? use a single platform)")
    man = json.loads(json.dumps(base))
    man["mediaType"] = kind
    man["config"] = {**man["config"], "digest": config_digest, "size": config_size}
    man["layers"].append({"mediaType": LAYER_TYPE[kind], "digest": layer.digest, "size": layer.size})
    man.pop("annotations", None)
    return man


def publish(layer: Layer, *, base: str, target: str, comment: str, insecure: bool = False,
            auth: tuple[str, str] | None = None, progress: Callable[[int], None] | None = None,
            timeout: float = 300) -> Published:
    base_ref, target_ref = Ref.parse(base), Ref.parse(target)
    if base_ref.host != target_ref.host:
        raise PublishError(f"the base image {base} is in another registry than {target}: push the base there first")
    authfn = None
    if auth:
        def authfn(dxf, response):
            dxf.authenticate(auth[0], auth[1], response=response)
    src = DXF(base_ref.host, base_ref.repo, auth=authfn, insecure=insecure, timeout=timeout)
    dst = DXF(target_ref.host, target_ref.repo, auth=authfn, insecure=insecure, timeout=timeout)
    uploaded = 0

    def counted(_digest, chunk, _total=None):
        nonlocal uploaded
        uploaded += len(chunk)
        if progress:
            progress(uploaded)
    try:
        manifest_json, response = src.get_manifest_and_response(base_ref.tag)
        base_manifest = json.loads(manifest_json)
        # OCI manifests may leave mediaType out: the registry's Content-Type says it then
        base_manifest.setdefault("mediaType", response.headers.get("Content-Type", "").split(";")[0])
        if base_manifest.get("mediaType") not in LAYER_TYPE:
            raise PublishError(f"base image {base}: manifest type {base_manifest.get('mediaType')} is not supported")
        base_config = json.loads(b"".join(src.pull_blob(base_manifest["config"]["digest"])))
        for blob in base_manifest["layers"]:
            if _present(dst, blob["digest"]):
                continue
            try:
                dst.mount_blob(base_ref.repo, blob["digest"])
            except DXFMountFailed:
                raise PublishError(f"base layer {blob['digest']} could not be mounted from {base_ref.repo}") from None
        dst.push_blob(layer.path, progress=counted, check_exists=True)
        layer_uploaded = uploaded
        config = json.dumps(new_config(base_config, layer, comment), separators=(",", ":")).encode()

        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        dst.push_blob(data=[config], digest=config_digest, progress=counted, check_exists=True)
        manifest = json.dumps(new_manifest(base_manifest, layer, config_digest, len(config)), separators=(",", ":"))
        dst.set_manifest(target_ref.tag, manifest)  # last: the tag appears complete or not at all
    except (DXFError, requests.RequestException, OSError, KeyError, ValueError) as exc:
        raise PublishError(f"push to {target_ref.host} failed: {type(exc).__name__}: {exc}") from None
    return Published(ref=str(target_ref), digest="sha256:" + hashlib.sha256(manifest.encode()).hexdigest(),
                     uploaded=uploaded, layer_uploaded=layer_uploaded, layer_size=layer.size)


def _present(dxf: DXF, digest: str) -> bool:
    try:
        dxf.blob_size(digest)
        return True
    except requests.HTTPError as exc:
        if exc.response is not None and exc.response.status_code == 404:
            return False
        raise
