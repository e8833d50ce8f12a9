"""A person in headless Chromium (Debian's package, driven by Playwright): log in,
fill the spawn form, reach JupyterLab; then open a VSCode instance and see the workbench."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from .conftest import chromium_page

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts"


@pytest.fixture(scope="module")
def page(hub, tmp_path_factory):
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page() as pg:
        yield pg


def login(page, hub, user: str) -> None:
    password = hub.password(user)  # the member's own (signed up, authorised by the first admin)
    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url("**/hub/**")


def test_login_spawn_form_jupyterlab(page, hub):
    login(page, hub, "t-alice")
    page.goto(f"{hub.url}/hub/spawn/t-alice/web-lab")
    # the form lists only the member's workspace offerings
    workspaces = page.locator("#dsw-workspace option").all_inner_texts()
    assert workspaces == ["tvision (owner)"]
    page.check("input[name=kind][value=notebook]")
    page.select_option("#dsw-type", "half")
    page.click("#spawn_form input[type=submit], #spawn_form button[type=submit]")
    page.wait_for_url("**/user/t-alice/web-lab/lab**", timeout=120_000)
    expect(page.locator(".jp-LabShell, #jp-main-dock-panel").first).to_be_visible(timeout=90_000)
    page.screenshot(path=str(ARTIFACTS / "jupyterlab.png"))


def test_vscode_workbench(page, hub):
    page.goto(f"{hub.url}/hub/spawn/t-alice/web-code")
    page.check("input[name=kind][value=vscode]")
    page.click("#spawn_form input[type=submit], #spawn_form button[type=submit]")
    page.wait_for_url("**/user/t-alice/web-code/vscode/**", timeout=120_000)
    expect(page.locator(".monaco-workbench")).to_be_visible(timeout=90_000)
    page.screenshot(path=str(ARTIFACTS / "vscode.png"))


def test_terminal_kind_opens_a_terminal(page, hub):
    page.goto(f"{hub.url}/hub/spawn/t-alice/web-term")
    page.check("input[name=kind][value=terminal]")
    page.click("#spawn_form input[type=submit], #spawn_form button[type=submit]")
    page.wait_for_url("**/user/t-alice/web-term/lab/workspaces/dsw-terminal**", timeout=120_000)
    terminal = page.locator(".jp-Terminal").first
    expect(terminal).to_be_visible(timeout=90_000)
    terminal.click()
    page.keyboard.type("echo browser-$((20+22)) > typed-in-terminal.txt\n")
    # xterm draws on a canvas, so read what the command wrote through the server's API
    url = f"{hub.url}/user/t-alice/web-term/api/contents/typed-in-terminal.txt"
    content = None
    for _ in range(60):
        r = page.request.get(url)
        if r.ok:
            content = r.json()["content"]
            break
        page.wait_for_timeout(500)
    assert content == "browser-42\n"
    page.screenshot(path=str(ARTIFACTS / "terminal.png"))


def test_visitor_is_refused_by_the_hub(page, hub, engine):
    """A visitor holds no servers!user scope: the hub refuses the spawn page itself."""
    page.context.clear_cookies()
    login(page, hub, "t-vic")
    response = page.goto(f"{hub.url}/hub/spawn/t-vic/x")
    assert response.status == 403
    expect(page.locator("body")).to_contain_text("403")
    assert not engine.containers.list(all=True, filters={"label": "dsw/user=t-vic"})
    page.screenshot(path=str(ARTIFACTS / "visitor.png"))
