"""Browser end-to-end tests (tests only): Debian's Chromium, driven by Playwright, against the live shop and the
real M-Pesa simulator. Skipped when no browser is installed, unless ``KULIPA_REQUIRE_BROWSER=1`` (CI)."""
