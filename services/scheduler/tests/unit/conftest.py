import pytest

from backhaul_kit.testing import Handlers

from .replica_events import OtherServices


@pytest.fixture
def others(handlers: Handlers) -> OtherServices:
    """Accounts and billing, telling the scheduler's replica handlers what happened."""
    return OtherServices(handlers)
