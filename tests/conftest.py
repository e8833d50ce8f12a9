"""Shared fixtures: a catalogue written to a temp file, so tests see real loading; and
*.localhost resolved to loopback for the whole test session.

Browsers (Chromium) and curl resolve every ``*.localhost`` name to loopback (RFC 6761), which
is how one machine serves each user's servers on their own host (<user>.localhost:8000).
glibc's resolver, and so Python's, does not; the override below makes Python do what the
browser does, for ``localhost`` and its subdomains only (IPv4 loopback, where the proxy listens).
"""

import socket
from pathlib import Path

import pytest
import yaml

_getaddrinfo = socket.getaddrinfo


def _localhost_getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    name = host.decode() if isinstance(host, bytes) else host
    if isinstance(name, str) and (name.lower() == "localhost" or name.lower().endswith(".localhost")) \
            and family in (0, socket.AF_INET, socket.AF_UNSPEC):
        return _getaddrinfo("127.0.0.1", port, socket.AF_INET, type, proto, flags)
    return _getaddrinfo(host, port, family, type, proto, flags)


socket.getaddrinfo = _localhost_getaddrinfo

BASE_CATALOG = {
    "platform_admins": ["root"],
    "workspaces": [
        {"id": "vision", "members": {"alice": "owner", "bob": "developer", "olga": "ops",
                                     "lara": "labeler", "vic": "visitor", "adam": "admin"},
         "resource_groups": ["public-cpu", "gpu-a10"], "registry_allowlist": ["registry.example.com/vision"]},
        {"id": "nlp", "members": {"bob": "admin", "nina": "developer"}, "resource_groups": ["public-cpu"]},
    ],
    "images": [
        {"id": "nb-cpu", "image": "localhost/dsw/notebook-cpu:test", "accelerator": "cpu"},
        {"id": "nb-gpu", "image": "localhost/dsw/notebook-gpu:test", "accelerator": "gpu", "workspaces": ["vision"]},
        {"id": "lab-only", "image": "localhost/dsw/lab:1", "kinds": ["notebook"], "workspaces": ["nlp"]},
    ],
    "instance_types": [
        {"id": "cpu-small", "cpu": 1, "memory": "2Gi"},
        {"id": "cpu-half", "cpu": "500m", "memory": "512Mi"},
        {"id": "gpu-1", "cpu": 8, "memory": "30Gi", "gpu": 1, "gpu_type": "nvidia-a10"},
    ],
    "resource_groups": [
        {"id": "public-cpu", "kind": "public", "capacity": {"cpu": 8, "memory": "16Gi"},
         "instance_types": ["cpu-small", "cpu-half"]},
        {"id": "gpu-a10", "kind": "dedicated", "capacity": {"cpu": 64, "memory": "240Gi", "gpu": 4},
         "node_selector": {"dsw/pool": "gpu-a10"},
         "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
         "priority_class": "dsw-gpu"},
    ],
}


@pytest.fixture
def write_catalog(tmp_path):
    def write(data, name="catalog.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
        return path
    return write
