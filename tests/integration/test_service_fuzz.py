"""Schema-driven fuzzing of the live DSW API (schemathesis + Hypothesis) as each workspace role.

For each caller (platform admin, workspace owner, developer, visitor) at least 300 generated
requests go to a real hub's DSW service, across every operation of its OpenAPI document,
positive and negative data, with path parameters often bent towards names that exist (the
fuzz workspaces, their members, the resource group) so requests get past "unknown workspace"
and reach the permission and validation code. Each answer must:

* not be a 5xx;
* have a status the document lists for that operation, a declared content type, and a body
  that matches the declared schema; data that breaks the document (negative) is refused;
* if it is a refusal (4xx) of a change (POST/PUT/PATCH/DELETE), leave the state as it was:
  workspaces and members, quotas, allocations, idle policies, instances, saved images (the
  service's own GET endpoints, read with the admin's token) and the hub's users, groups and
  servers (the hub's REST API). The state is read after every change request: the reading
  after a refusal must equal the one before it (the reading after an accepted change
  becomes the new reference). Refusals are audited on purpose, so the audit log is not part
  of the state.

No instance runs in this hub and the service has no spawn endpoint: restart only restarts a
running instance (refused with 404/409 here) and saving an image needs a running instance
(refused fast), so the run never starts a container and stays within a few minutes.
Callers run in the order visitor, developer, owner, admin: a change an owner or admin is
allowed to make (removing a member, say) cannot then take away a lesser role's rights
before that role was fuzzed. A full, unbounded run is
``schemathesis run <hub>/services/dsw/api/v1/openapi.json --url <hub> -H ... --checks all``.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (content_type_conformance, negative_data_rejection, not_a_server_error,
                                 response_schema_conformance, status_code_conformance)

from .conftest import make_catalog
from .hubproc import Hub

pytestmark = pytest.mark.integration

ADMIN, OWNER, DEV, VISITOR = "fz-root", "fz-alice", "fz-bob", "fz-vic"
WORKSPACES = ("fzvision", "fzother")
CALLERS = [VISITOR, DEV, OWNER, ADMIN]  # see the module docstring for the order
MIN_REQUESTS = 300
PER_STRATEGY = 10  # x 2 data modes x ~22 operations, less the few without parameters
CHANGES = {"POST", "PUT", "PATCH", "DELETE"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
# names that exist (or nearly), for path parameters of the same name
KNOWN = {
    "ws": ["fzvision", "fzvision", "fzother"],
    "owner": [ADMIN, OWNER, DEV, VISITOR, "fz-nobody"],
    "member": [ADMIN, OWNER, DEV, VISITOR, "fz-nobody"],
    "group": ["cpu"],
    "image_id": ["nope", "0" * 12],
}


@pytest.fixture(scope="module")
def fhub(tmp_path_factory, engine_url):
    tmp = tmp_path_factory.mktemp("fuzz")
    catalog = make_catalog(tmp, platform_admins=[ADMIN], workspaces=[
        {"id": "fzvision", "members": {OWNER: "owner", DEV: "developer", VISITOR: "visitor"},
         "resource_groups": ["cpu"]},
        {"id": "fzother", "members": {DEV: "visitor"}, "resource_groups": ["cpu"]}])
    h = Hub(tmp / "state", catalog, engine_url)
    h.start()
    h.wait_service()
    h.tokens = {u: h.user_token(u) for u in CALLERS}
    yield h
    h.stop()


class State:
    """What a refusal must not change, as the admin and the hub see it."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self.dsw = requests.Session()
        self.dsw.headers["Authorization"] = f"token {hub.tokens[ADMIN]}"
        self.hubapi = requests.Session()
        self.hubapi.headers["Authorization"] = f"token {hub.token}"
        self.pool = ThreadPoolExecutor(4)

    def _get(self, session, url):
        r = session.get(url, timeout=30)
        assert r.status_code in (200, 404), (url, r.status_code, r.text[:500])
        return r.status_code, r.json()

    def read(self) -> dict:
        """Every reading at once (a few threads): one reading per change request must stay cheap."""
        api = f"{self.hub.url}/services/dsw/api/v1"
        urls = {"workspaces": f"{api}/workspaces", "allocations": f"{api}/allocations",
                **{f"{ws}{part}": f"{api}/workspaces/{ws}{part}"
                   for ws in WORKSPACES for part in ("", "/policy", "/instances", "/images")}}
        hub_users = self.pool.submit(self._get, self.hubapi, f"{self.hub.url}/hub/api/users")
        hub_groups = self.pool.submit(self._get, self.hubapi, f"{self.hub.url}/hub/api/groups")
        out = dict(zip(urls, self.pool.map(lambda u: self._get(self.dsw, u), urls.values())))
        users = hub_users.result()[1]
        out["hub users"] = sorted(
            (u["name"], u["admin"], sorted(u["groups"]),
             sorted((name, bool(s.get("ready")), bool(s.get("pending"))) for name, s in u.get("servers", {}).items()))
            for u in users)
        out["hub groups"] = sorted((g["name"], sorted(g["users"])) for g in hub_groups.result()[1])
        return out


def diff(before: dict, after: dict) -> str:
    return "; ".join(f"{k}: {json.dumps(before.get(k))[:400]} -> {json.dumps(after.get(k))[:400]}"
                     for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k))


@pytest.fixture(scope="module")
def schema(fhub):
    return schemathesis.openapi.from_url(f"{fhub.url}/services/dsw/api/v1/openapi.json")


def cases(schema):
    """Every operation, positive and negative data: taken in turn (each gets its share of the
    requests); path parameters are often replaced by KNOWN names in the run."""
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 15, [o.label for o in ops]
    strategies = [op.as_strategy(generation_mode=mode) for op in ops
                  for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    return strategies, ops


def test_state_reading_is_stable_and_sees_a_change(fhub):
    """The reading must not drift by itself (the no-change check would fail for a wrong reason)
    and must see a change (else it could never fail): an accepted policy change shows."""
    state = State(fhub)
    before = state.read()
    assert state.read() == before
    api = f"{fhub.url}/services/dsw/api/v1/workspaces/fzother/policy"
    auth = {"Authorization": f"token {fhub.tokens[ADMIN]}"}
    r = requests.put(api, json={"idle_max_minutes": 70}, headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    assert "fzother/policy" in diff(before, state.read())
    r = requests.put(api, json={"idle_max_minutes": None}, headers=auth, timeout=30)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("caller", CALLERS)
def test_fuzzed_requests_are_documented_and_refusals_change_nothing(fhub, schema, caller):
    strategies, ops = cases(schema)
    state = State(fhub)
    headers = {"Authorization": f"token {fhub.tokens[caller]}"}
    session = requests.Session()
    reference = [state.read()]
    failures: list[str] = []
    count, statuses, per_op = Counter(), Counter(), Counter()

    def one(case, data):
        positive = case.meta is None or case.meta.generation.mode == GenerationMode.POSITIVE
        if positive:
            for name in list(case.path_parameters or {}):
                known = KNOWN.get(name)
                if known and data.draw(st.integers(0, 3)) > 0:
                    case.path_parameters[name] = data.draw(st.sampled_from(known))
        response = case.call(base_url=fhub.url, session=session, headers=headers, timeout=60)
        count["requests"] += 1
        statuses[response.status_code] += 1
        per_op[case.operation.label] += 1
        where = f"{case.method} {case.formatted_path} query={case.query} body={case.body!r:.300}"
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except Exception as exc:  # schemathesis' failure group: keep going, report all at the end
            failures.append(f"{where} -> {response.status_code} {response.text[:300]}: {str(exc)[:600]}")
        if case.method.upper() in CHANGES:
            now = state.read()
            if 400 <= response.status_code < 500 and now != reference[0]:
                failures.append(f"{where} -> refused {response.status_code} {response.text[:200]} "
                                f"but changed: {diff(reference[0], now)}")
            reference[0] = now

    # each operation and data mode in turn, a fixed number of examples each (fewer when its
    # space is smaller: an operation without parameters has one request, and no negative one)
    for i, strategy in enumerate(strategies):
        run = seed(1000 * CALLERS.index(caller) + i)(settings(
            max_examples=PER_STRATEGY, deadline=None, database=None, phases=[Phase.generate],
            suppress_health_check=list(HealthCheck))(given(case=strategy, data=st.data())(one)))
        try:
            run()
        except Unsatisfiable:
            pass
    summary = f"{caller}: {count['requests']} requests, statuses {dict(statuses)}, per operation {dict(per_op)}"
    print(summary)
    assert not failures, f"{len(failures)} failures ({summary}):\n" + "\n".join(failures[:25])
    assert count["requests"] >= MIN_REQUESTS, summary
    assert set(per_op) == {op.label for op in ops}, summary  # every operation was exercised
    assert any(400 <= s < 500 for s in statuses), summary  # refusals happened: the state check ran
