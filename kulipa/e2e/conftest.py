"""Fixtures for the browser tests: one Chromium for the package (the system's, never a downloaded one), a fresh
mobile-sized browser context per test, and the live shop talking to the in-process simulator.

The simulator fixtures come from ``kulipa.payments.tests.conftest``: the session ``sandbox`` and the per-test
``sim`` (reset simulator, the shop pointed at it, huey immediate, waits for the push engine afterwards).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from kulipa.payments.tests.conftest import Simulator, sandbox, shop_mpesa_settings, sim

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize

__all__ = ["sandbox", "sim"]  # re-exported fixtures

CHROMIUM = os.environ.get("KULIPA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
MOBILE: ViewportSize = {"width": 390, "height": 844}
ANSWER_DELAY = 1.0  # the simulator answers after 1 s, so "pending" is on screen before "paid"
PUSH_WINDOW = 15.0  # time to answer on the phone page (numbers ending in 00)
TIMEOUT_MS = 15_000  # any single wait in the browser


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (make install)"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set KULIPA_CHROMIUM)"
    return None


def _browser_required() -> bool:
    return os.environ.get("KULIPA_REQUIRE_BROWSER", "").strip().lower() in {"1", "true", "yes", "on"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """No browser: skip the e2e tests, saying why (unless ``KULIPA_REQUIRE_BROWSER=1``: then ``browser`` fails)."""
    reason = _browser_missing()
    if reason is None or _browser_required():
        return
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.skip(reason=f"browser tests skipped: {reason}"))


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Chromium for the tests of this package, closed after them.

    Playwright's sync API keeps an asyncio loop marked as running in this thread while it is started, which
    trips Django's guard against ORM calls from async code; no coroutine ever runs alongside the test's ORM
    calls, so the guard is lifted for exactly as long as Playwright runs (and Playwright is stopped before
    the rest of the suite)."""
    reason = _browser_missing()
    if reason is not None:
        pytest.fail(f"KULIPA_REQUIRE_BROWSER=1 but the browser tests cannot run: {reason}", pytrace=False)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def shop(sim: Simulator, live_server: Any, settings: Any) -> str:
    """The live shop's base URL; the simulator answers after ``ANSWER_DELAY`` and holds 00 prompts for
    ``PUSH_WINDOW`` (``sim`` restores both when it resets after the test)."""
    sim.configure(answer_delay=ANSWER_DELAY, push_window=PUSH_WINDOW)
    settings.MPESA = shop_mpesa_settings(sim.sandbox, PUSH_WINDOW_SECONDS=PUSH_WINDOW)
    return str(live_server.url)


@pytest.fixture
def context(browser: Browser, shop: str) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) with a phone-sized screen; closed before the simulator resets."""
    ctx = browser.new_context(viewport=MOBILE, is_mobile=True, has_touch=True, base_url=shop, locale="pt-PT")
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()
