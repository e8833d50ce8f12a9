import contextlib
import shutil

from tests.integration.conftest import engine, engine_url, hub  # noqa: F401  (same real hub fixtures)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@contextlib.contextmanager
def chromium_page(width: int = 1280, height: int = 800):
    """One page of Debian's headless Chromium driven by Playwright (every browser test's)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--disable-quic"],
        )
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        page.set_default_timeout(90_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()
