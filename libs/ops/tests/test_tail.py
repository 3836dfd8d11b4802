"""`tail` decodes a real topic's events with the contracts."""

from __future__ import annotations

import json

from backhaul_contracts.topics import ACCOUNTS_EVENTS

from .conftest import status_changed


def test_tail_prints_each_event_decoded(ops, publish):
    seven, eight = status_changed(7), status_changed(8)
    publish(
        ACCOUNTS_EVENTS,
        (b"7", seven.to_bytes()),
        (b"8", eight.to_bytes()),
        (b"9", b"not an envelope"),
    )

    result = ops("tail", ACCOUNTS_EVENTS, "--from-beginning", "--no-follow")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 3
    assert any(
        f"AccountStatusChanged v1 id={seven.event_id} subject=7 "
        f"correlation={seven.correlation_id} payload=" in line
        for line in lines
    )
    assert any("UNDECODABLE key=9" in line for line in lines)

    only_eight = ops(
        "tail", ACCOUNTS_EVENTS, "--from-beginning", "--account", "8", "--json", "--no-follow"
    )
    assert only_eight.exit_code == 0, only_eight.output
    (event,) = [json.loads(line) for line in only_eight.output.splitlines()]
    assert event["event_id"] == str(eight.event_id)
    assert event["payload"]["status"]["name"] == "Active"

    limited = ops("tail", ACCOUNTS_EVENTS, "--from-beginning", "--limit", "2")
    assert limited.exit_code == 0, limited.output
    assert len(limited.output.splitlines()) == 2


def test_tail_of_a_missing_topic_fails(ops):
    result = ops("tail", "nowhere.v1", "--no-follow")
    assert result.exit_code == 1
    assert "does not exist" in result.output
