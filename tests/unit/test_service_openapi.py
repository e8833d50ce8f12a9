"""The DSW API's OpenAPI document describes every body and every error status it answers,
and the API reads JSON bodies whatever Content-Type says (without a hub: auth is overridden
by a caller whose token carries no DSW scope, so every change is refused before it starts)."""

from fastapi.testclient import TestClient

from pathlib import Path

from spawner_ext.service import actions
from spawner_ext.service.app import app
from spawner_ext.service.auth import current_user

ROOT = Path(__file__).resolve().parents[2]
DOC = app.openapi()
OPS = [(method, path, op) for path, item in DOC["paths"].items() for method, op in item.items()]


def test_every_operation_declares_the_common_errors_and_no_422():
    assert OPS
    for method, path, op in OPS:
        assert {"400", "401", "403", "404"} <= set(op["responses"]), (method, path)
        assert "422" not in op["responses"], (method, path)
        for status, resp in op["responses"].items():
            if status[0] in "45":
                assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "HTTPValidationError" not in DOC["components"]["schemas"]


def test_every_body_is_a_typed_model():
    bodies = {(m, p): op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
              for m, p, op in OPS if "requestBody" in op}
    api = "/services/dsw/api/v1"
    assert bodies == {
        ("post", f"{api}/workspaces/{{ws}}/images"): "SaveImageBody",
        ("put", f"{api}/workspaces/{{ws}}/members/{{member}}"): "MemberBody",
        ("put", f"{api}/workspaces/{{ws}}/members/{{member}}/quotas/{{group}}"): "CapacityBody",
        ("put", f"{api}/allocations/{{group}}/{{ws}}"): "CapacityBody",
        ("put", f"{api}/workspaces/{{ws}}/policy"): "PolicyBody",
        ("put", f"{api}/workspaces/{{ws}}/instances/{{owner}}/schedule"): "ScheduleBody",
    }
    cap = DOC["components"]["schemas"]["CapacityBody"]
    assert cap["additionalProperties"] is False and set(cap["required"]) == {"cpu", "memory"}


def outsider():
    return {"name": "nobody", "scopes": []}


def test_json_body_whatever_the_content_type_and_a_clear_400_otherwise(tmp_path, monkeypatch):
    monkeypatch.setattr(actions.Settings, "db_url", f"sqlite:///{tmp_path}/dsw.sqlite")
    monkeypatch.setattr(actions.Settings, "catalog_path", str(ROOT / "hub_config" / "catalog.yaml"))
    app.dependency_overrides[current_user] = outsider
    try:
        c = TestClient(app)
        url = "/services/dsw/api/v1/allocations/g/ws"
        for ctype in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data"):
            # parsed as JSON and valid: the refusal is about the caller, not the body
            r = c.put(url, content=b'{"cpu": 1, "memory": "1Gi"}', headers={"Content-Type": ctype})
            assert r.status_code == 403, r.text
            r = c.put(url, content=b"cpu=1&memory=1Gi", headers={"Content-Type": ctype})
            assert r.status_code == 400 and "must be JSON" in r.json()["detail"], r.text
        r = c.put(url, content=b'{"cpu": 1, "memory": "1Gi", "tpu": 2}')
        assert r.status_code == 400 and "body.tpu" in r.json()["detail"]
        r = c.put(url, content=b'{"cpu": NaN, "memory": "1Gi"}')
        assert r.status_code == 400 and "body.cpu" in r.json()["detail"], r.text
    finally:
        app.dependency_overrides.clear()


def test_405_lists_every_method_of_the_path():
    r = TestClient(app).request("PATCH", "/services/dsw/api/v1/allocations/g/ws")
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, PUT"
