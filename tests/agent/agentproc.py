"""The image agent as a real process (``python -m spawner_ext.agent``) for tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from tests.integration.hubproc import free_port

ROOT = Path(__file__).resolve().parents[2]


class Agent:
    def __init__(self, tmp: Path, engine_url: str | None, announce: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = uuid.uuid4().hex
        (tmp / "token").write_text(self.token + "\n")
        self.env = {**os.environ, "DSW_AGENT_TOKEN_FILE": str(tmp / "token"), "DSW_AGENT_REGISTRY_INSECURE": "1",
                    "DSW_AGENT_WORKDIR": str(tmp)}
        if engine_url:
            self.env["DSW_AGENT_ENGINE_URL"] = engine_url
        self.log = tmp / "agent.log"
        self.announce = announce
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "spawner_ext.agent", "--port", str(self.port),
                                      *(["--announce", str(self.announce)] if self.announce else [])],
                                     env=self.env, cwd=ROOT, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        for _ in range(150):
            try:
                if requests.get(f"{self.url}/v1/health", timeout=1).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"agent did not start: {self.log.read_text()[-2000:]}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def save(self, token: str | None = "", **body):
        token = self.token if token == "" else token
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return requests.post(f"{self.url}/v1/saves", json=body, headers=headers, timeout=300)
