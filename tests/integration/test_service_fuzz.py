"""Schema-driven fuzzing of the live DSW API (schemathesis): every status the service answers
is declared in its OpenAPI document, no request gets a 5xx, bodies and content types match
the document. Bounded (a few examples per operation, fixed seed) to fit the suite; a full run
is `schemathesis run <hub>/services/dsw/api/v1/openapi.json --url <hub> -H ... --checks all`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import make_catalog
from .hubproc import Hub

pytestmark = pytest.mark.integration
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture(scope="module")
def fhub(tmp_path_factory, engine_url):
    tmp = tmp_path_factory.mktemp("fuzz")
    catalog = make_catalog(tmp, platform_admins=["fz-root"], workspaces=[
        {"id": "fzvision", "members": {"fz-alice": "owner", "fz-bob": "developer"}, "resource_groups": ["cpu"]}])
    h = Hub(tmp / "state", catalog, engine_url)
    h.start()
    h.wait_service()
    yield h
    h.stop()


@pytest.mark.parametrize("caller", ["fz-root", "fz-bob"])  # platform admin, developer
def test_every_answer_is_documented_and_none_is_a_server_error(fhub, caller, tmp_path):
    cli = Path(sys.executable).parent / "schemathesis"
    run = subprocess.run(
        [str(cli), "run", f"{fhub.url}/services/dsw/api/v1/openapi.json", "--url", fhub.url,
         "-H", f"Authorization: token {fhub.user_token(caller)}", "--checks", CHECKS,
         "--max-examples", "8", "--seed", "1", "--no-color"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)  # its .schemathesis cache
    summary = run.stdout[-4000:]
    assert run.returncode == 0, summary + run.stderr[-2000:]
    assert "passed" in summary and "failures" not in summary.split("SUMMARY")[-1].lower(), summary
