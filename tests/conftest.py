"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

ServeApp = Callable[[web.Application], Awaitable[str]]

# The Discord tests' local Discord and stand-in model, the queue tests' broker and vhost.
pytest_plugins = ["tests.discord_fixtures", "tests.queue_fixtures"]


@pytest.fixture
async def serve_app() -> AsyncIterator[ServeApp]:
    """Start aiohttp apps on 127.0.0.1, each on a free port; ``await serve_app(app)`` -> base URL.

    The servers run in the test's event loop and stop when the test ends.
    """
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def refused_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- the suite writes only to temporary folders -----------------------------------------------

_REPO = Path(__file__).resolve().parent.parent
_CACHES = ("__pycache__/", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/", ".venv/")
_before: set[str] | None = None
_data_home: str | None = None


def _checkout_state() -> set[str] | None:
    """Every changed, untracked or ignored path of the checkout (caches aside), or None when
    this is not a git checkout."""
    try:
        result = subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return {
        line
        for line in result.stdout.splitlines()
        if not any(cache in line or line.endswith(cache.rstrip("/")) for cache in _CACHES)
        and not line.endswith(".egg-info/")
    }


def pytest_configure(config: pytest.Config) -> None:
    global _before, _data_home
    # lipcast keeps its state in the user's data folder: the suite's goes to a temporary one.
    _data_home = tempfile.mkdtemp(prefix="lipcast-test-data-")
    os.environ["XDG_DATA_HOME"] = _data_home
    _before = _checkout_state()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _data_home is not None:
        shutil.rmtree(_data_home, ignore_errors=True)
    after = _checkout_state()
    if _before is None or after is None or after == _before:
        return
    written = sorted(after - _before)
    if written:
        session.config.get_terminal_writer().line(
            f"the test suite wrote into the checkout (tests write only to tmp_path): {written}",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
