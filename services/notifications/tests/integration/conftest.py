"""Fixtures the email integration modules share."""

import pytest

from backhaul_kit.testing import running
from notifications.bootstrap import bootstrap


@pytest.fixture
async def idle_worker(settings):
    """The service with no background dispatcher: the test drives dispatchers itself."""
    runtime = bootstrap(settings)
    async with running(runtime, worker=False):
        yield runtime
