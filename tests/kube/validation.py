"""Offline schema validation of emitted manifests, pinned to one Kubernetes version."""

from __future__ import annotations

import kubernetes_validate
from kubernetes_asyncio.client import ApiClient

# The oldest release the DSW supports (issue 4: 1.30 or newer); the installed
# kubernetes-validate carries schemas for 1.25 .. 1.37.
KUBE_VERSION = "1.30.0"


def to_dict(obj) -> dict:
    """kubernetes_asyncio model -> the JSON the client would send (camelCase, no nulls)."""
    return obj if isinstance(obj, dict) else ApiClient().sanitize_for_serialization(obj)


def assert_valid(obj, version: str = KUBE_VERSION) -> dict:
    manifest = to_dict(obj)
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise AssertionError(f"{manifest.get('kind')} {manifest.get('metadata', {}).get('name')}: "
                             f"{where}: {exc.message}") from None
    return manifest
