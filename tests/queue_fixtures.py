"""Fixtures for the RabbitMQ fault tests: the broker, and a virtual host of a test's own.

Loaded for the whole suite by ``pytest_plugins`` in ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.queue_support.harness import own_vhost, require_broker


@pytest.fixture
def broker() -> str:
    """The broker URL; skips outside CI when it is unreachable, fails under CI=true."""
    return require_broker()


@pytest.fixture
async def vhost_url(broker: str) -> AsyncIterator[tuple[str, str]]:
    """A virtual host of this test's own, so closing its connections touches nobody else's."""
    async with own_vhost(broker) as vhost:
        yield vhost
