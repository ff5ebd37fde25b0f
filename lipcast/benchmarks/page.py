"""The overlay page in a real headless Chromium, for the benchmarks that measure what is shown.

Chromium is driven through Playwright (the dev extra) and shows the page as OBS's browser
source does: a transparent background, sound allowed to play without a click. The page keeps a
log of what it did (``window.lipcastOverlay.log``: ``first-frame``, ``play``, ``ended``,
``idle``, each with the page's wall clock), which the benchmarks read.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from typing import Any

from pipeline.errors import LipcastError

CHROMIUM = "/usr/bin/chromium"  # Debian's package
CHROMIUM_ARGS = [
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_playwright(benchmark: str) -> None:
    """Raise a one-line error naming the fix when Playwright is not installed."""
    try:
        from playwright.async_api import async_playwright  # noqa: F401
    except ImportError as err:
        raise LipcastError(
            f'lipcast bench {benchmark} drives Chromium with Playwright: pip install -e ".[dev]"'
        ) from err


@contextlib.asynccontextmanager
async def overlay_page(url: str, *, size: int, chromium: str = CHROMIUM) -> AsyncIterator[Any]:
    """The overlay at ``url`` in headless Chromium, ``size`` pixels square, once the page has
    drawn the persona; closed on leaving."""
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="lipcast-bench-chromium-") as profile:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=chromium,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": size, "height": size},
            )
            try:
                page = browser.pages[0] if browser.pages else await browser.new_page()
                await page.goto(url)
                await page.wait_for_function(
                    "() => window.lipcastOverlay && window.lipcastOverlay.state().persona",
                    timeout=10_000,
                )
                yield page
            finally:
                await browser.close()


async def log_length(page: Any) -> int:
    """How many entries the page's log holds now (what comes after is the next reply's)."""
    length: int = await page.evaluate("() => window.lipcastOverlay.log.length")
    return length


async def wait_logged(page: Any, since: int, event: str, *, timeout_s: float) -> None:
    """Until the page logs ``event`` after its first ``since`` entries."""
    await page.wait_for_function(
        f"(n) => window.lipcastOverlay.log.slice(n).some(e => e.event === {event!r})",
        arg=since,
        timeout=timeout_s * 1000,
    )


async def reply_log(page: Any, since: int, *, timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """The page's log entries after its first ``since``, once it is idle again (a reply shown
    whole)."""
    await wait_logged(page, since, "idle", timeout_s=timeout_s)
    entries: list[dict[str, Any]] = await page.evaluate(
        "(n) => window.lipcastOverlay.log.slice(n)", since
    )
    return entries
