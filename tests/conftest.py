"""Shared fixtures: a catalogue written to a temp file, so tests see real loading."""

from pathlib import Path

import pytest
import yaml

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
