"""The spawn form's and the workspace page's lifecycle and quota parts, in headless Chromium (Debian's, via Playwright)
against a real hub: what is free in each limit is shown where the choice is made, an instance
type that cannot fit is marked and cannot be chosen, and the idle limit, scheduled stop and
start-up script typed into the form reach the instance (its startup log, and the DSW
service's instance list the workspace page shows). On the workspace page the owner sets the
idle bound (the member's form follows), a developer cannot, and a member schedules and clears a
stop. Users start with ``sf-``."""

from __future__ import annotations

import datetime as dt

import pytest
import requests
from playwright.sync_api import expect

from tests.integration.conftest import cleanup_engine, engine, engine_url, make_catalog  # noqa: F401
from tests.integration.hubproc import Hub

from .conftest import chromium_page
from .test_browser import ARTIFACTS, login

pytestmark = pytest.mark.browser
WS = "sfws"


@pytest.fixture(scope="module")
def hub(tmp_path_factory, engine, engine_url):  # noqa: F811
    tmp = tmp_path_factory.mktemp("spawnform")
    cleanup_engine(engine, "sf-")
    catalog = make_catalog(tmp, platform_admins=["sf-root"], workspaces=[
        # the workspace may use 1 CPU of group cpu: a 2-CPU type can never fit, and once a
        # half-CPU instance runs, the 1-CPU type no longer fits either
        {"id": WS, "members": {"sf-ann": "developer", "sf-own": "owner"}, "resource_groups": ["cpu"],
         "quotas": {"cpu": {"cpu": 1, "memory": "4Gi"}}, "idle_max_minutes": 120}],
        instance_types=[{"id": "half", "cpu": "500m", "memory": "768Mi"}, {"id": "small", "cpu": 1, "memory": "1Gi"},
                        {"id": "big", "cpu": 2, "memory": "2Gi"}])
    h = Hub(tmp / "state", catalog, engine_url)
    h.start()
    h.wait_service()
    yield h
    h.stop()
    cleanup_engine(engine, "sf-")


@pytest.fixture(scope="module")
def page(hub):
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page(height=1000) as pg:
        yield pg


def type_options(page) -> dict[str, tuple[str, bool]]:
    """Instance type -> (its text, whether it can be chosen), as the member sees the list."""
    return {o.get_attribute("value"): (o.inner_text(), not o.is_disabled())
            for o in page.locator("#dsw-type option").all()}


def test_the_form_shows_what_is_free_and_marks_types_that_cannot_fit(page, hub):
    login(page, hub, "sf-ann")
    page.goto(f"{hub.url}/hub/spawn/sf-ann/one")
    free = page.locator(f".dsw-free[data-ws={WS}][data-group=cpu]")
    expect(free).to_be_visible()
    assert "resource group cpu: 8 CPU, 16Gi memory, 0 GPU free of 8 CPU, 16Gi memory, 0 GPU" in free.inner_text(), \
        free.inner_text()
    assert "workspace sfws: 1 CPU, 4Gi memory, 0 GPU free of 1 CPU, 4Gi memory, 0 GPU" in free.inner_text()
    options = type_options(page)
    assert options["half"][1] and options["small"][1]
    assert not options["big"][1] and "does not fit now (workspace sfws: 1 CPU, 4Gi memory, 0 GPU free)" in options["big"][0]
    assert page.locator("#dsw-type").input_value() == "half"  # the first type that fits is preselected
    hint = page.locator(f".dsw-idle-hint[data-ws={WS}]").inner_text()
    assert "At most 120 minutes" in hint, hint
    page.screenshot(path=str(ARTIFACTS / "spawn-form-quota.png"))


def test_lifecycle_choices_in_the_form_reach_the_instance(page, hub, engine):
    page.goto(f"{hub.url}/hub/spawn/sf-ann/one")
    page.check("input[name=kind][value=terminal]")
    page.select_option("#dsw-type", "half")
    page.fill("#dsw-idle", "45")
    page.fill("#dsw-stop", "2")
    page.fill("#dsw-script", "echo \"typed in the form: $((40 + 2))\"")
    page.click("#spawn_form input[type=submit], #spawn_form button[type=submit]")
    page.wait_for_url("**/user/sf-ann/one/lab/**", timeout=120_000)
    # the start-up script ran inside the instance, its output where the form said
    (container,) = engine.containers.list(filters={"label": ["dsw/user=sf-ann", "dsw/server=one"]})
    code, out = container.exec_run(["cat", "/home/jovyan/.dsw/startup.log"], user="1000:100")
    assert code == 0 and out.decode() == "typed in the form: 42\n", out
    # the workspace page's data: this instance's idle limit and its scheduled stop
    token = hub.user_token("sf-ann")
    listing = requests.get(f"{hub.url}/services/dsw/api/v1/workspaces/{WS}/instances",
                           headers={"Authorization": f"token {token}"}, timeout=30).json()
    (mine,) = [i for i in listing if i["user"] == "sf-ann" and i["server"] == "one"]
    assert mine["idle_minutes"] == 45, mine
    when = dt.datetime.fromisoformat(mine["scheduled_stop"]["at"].replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    ahead = when - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(hours=1, minutes=50) < ahead <= dt.timedelta(hours=2), mine


def test_with_an_instance_running_the_next_types_are_marked(page, hub):
    """half (0.5 CPU) runs: 0.5 of the workspace's 1 CPU is left, so 1-CPU 'small' no longer fits."""
    page.goto(f"{hub.url}/hub/spawn/sf-ann/two")
    options = type_options(page)
    assert options["half"][1], options
    assert not options["small"][1] and "does not fit now (workspace sfws: 0.5 CPU" in options["small"][0], options
    assert "workspace sfws: 0.5 CPU, 3328Mi memory, 0 GPU free of 1 CPU" in page.locator(f".dsw-free[data-ws={WS}][data-group=cpu]").inner_text()


def test_a_bad_idle_choice_is_refused_with_the_field_named(page, hub):
    page.goto(f"{hub.url}/hub/spawn/sf-ann/three")
    page.select_option("#dsw-type", "half")
    page.fill("#dsw-idle", "500")
    page.click("#spawn_form input[type=submit], #spawn_form button[type=submit]")
    expect(page.locator("body")).to_contain_text("idle_minutes: at most 120 minutes (the workspace's idle limit)")
    assert "three" not in hub.api("GET", "/users/sf-ann").json().get("servers", {})


def service_page(page, hub, path: str = f"workspaces/{WS}"):
    page.goto(f"{hub.url}/services/dsw/{path}")
    expect(page.locator("#idle-policy")).to_be_visible()


def test_the_owner_sets_the_idle_bound_on_the_workspace_page_and_the_form_follows(page, hub):
    page.context.clear_cookies()
    login(page, hub, "sf-own")
    service_page(page, hub)
    page.fill("#policy-form input[name=idle_max_minutes]", "100000")
    page.click("#policy-form button")
    expect(page.locator("body")).to_contain_text("idle_max_minutes: at most 1440 minutes (the platform's bound)")
    expect(page.locator("#idle-policy")).to_contain_text("at most 120 minutes (this workspace's bound)")  # unchanged
    page.fill("#policy-form input[name=idle_max_minutes]", "30")
    page.click("#policy-form button")
    expect(page.locator("body")).to_contain_text(f"idle instances of {WS} stop after at most 30 minutes")
    expect(page.locator("#idle-policy")).to_contain_text("at most 30 minutes (this workspace's bound)")
    expect(page.locator("#idle-policy")).to_contain_text("Set by sf-own")
    # the member's spawn form now offers at most 30 minutes
    page.context.clear_cookies()
    login(page, hub, "sf-ann")
    page.goto(f"{hub.url}/hub/spawn/sf-ann/four")
    assert "At most 30 minutes" in page.locator(f".dsw-idle-hint[data-ws={WS}]").inner_text()


def test_a_developer_gets_no_policy_form_and_a_forged_post_changes_nothing(page, hub):
    """sf-ann (developer) sees the bound but no form; posting the owner's form by hand, with a
    valid CSRF token of her own page, is refused and the bound stays."""
    service_page(page, hub)
    assert page.locator("#policy-form").count() == 0
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    r = page.request.post(f"{hub.url}/services/dsw/workspaces/{WS}/policy",
                          form={"idle_max_minutes": "1", "csrf": csrf})
    assert r.ok and "30 minutes</strong> (this workspace's bound)" in r.text(), (r.status, r.text()[-1500:])
    assert ('<p class="err">sf-ann may not set the workspace&#39;s idle shutdown limit in workspace sfws</p>'
            in r.text()), r.text()[:3000]
    token = hub.user_token("sf-own")
    assert requests.get(f"{hub.url}/services/dsw/api/v1/workspaces/{WS}/policy",
                        headers={"Authorization": f"token {token}"}, timeout=30).json()["idle_max_minutes"] == 30


def test_the_member_schedules_and_clears_a_stop_on_the_workspace_page(page, hub):
    service_page(page, hub)
    row = page.locator("tr", has=page.locator("td", has_text="sf-ann")).filter(has_text="one")
    row.locator("input[name=stop_in_hours]").fill("3")
    row.locator("button", has_text="Schedule stop").click()
    expect(page.locator("body")).to_contain_text("sf-ann/one stops at ")
    row = page.locator("tr", has=page.locator("td", has_text="sf-ann")).filter(has_text="one")
    expect(row.locator("td.schedule")).to_contain_text("(set by sf-ann)")
    row.locator("button", has_text="Clear schedule").click()
    expect(page.locator("body")).to_contain_text("sf-ann/one: scheduled stop cleared")
    row = page.locator("tr", has=page.locator("td", has_text="sf-ann")).filter(has_text="one")
    expect(row.locator("td.schedule")).to_have_text("")
    page.screenshot(path=str(ARTIFACTS / "workspace-lifecycle.png"))
