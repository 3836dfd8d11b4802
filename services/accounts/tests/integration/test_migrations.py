"""The service's migrations with the kit's `messaging` branch, on SQLite and PostgreSQL."""

import pytest

from accounts.bootstrap import MIGRATIONS
from backhaul_kit.testing_migrations import (
    assert_legacy_database_upgrades_like_fresh,
    assert_round_trip,
)

pytestmark = pytest.mark.integration


def test_a_database_migrated_before_the_kit_owned_the_outbox_upgrades_to_the_fresh_schema(
    database_url, another_database_url
):
    assert_legacy_database_upgrades_like_fresh(MIGRATIONS, database_url, another_database_url)


def test_the_migrations_go_down_to_base_and_up_again(database_url):
    assert_round_trip(MIGRATIONS, database_url)
