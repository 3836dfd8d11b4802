"""`dlq list`, `dlq show` and `dlq replay` against a real broker."""

from __future__ import annotations

import json

import pytest

from backhaul_contracts.topics import ACCOUNTS_EVENTS
from backhaul_ops.dead_letters import ReplayLedger, split_dead_letter_topic
from backhaul_ops.errors import OpsError

from .conftest import DLQ, GROUP, status_changed

TRACE = ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


def test_show_prints_each_dead_letter_with_its_error_and_decoded_event(ops, dead_letter):
    envelope = status_changed(7)
    dead_letter(envelope.to_bytes(), key=b"7", error=ValueError("account 7 is cursed"))
    dead_letter(b"{garbage", offset=43, error=ValueError("not json"))

    result = ops("dlq", "show", DLQ)

    assert result.exit_code == 0, result.output
    assert "ValueError: account 7 is cursed" in result.output
    assert f"AccountStatusChanged v1 id={envelope.event_id} subject=7" in result.output
    assert "not an envelope" in result.output
    assert "raw:       {garbage" in result.output
    assert "attempts: 5" in result.output
    assert "(not replayed)" in result.output

    shown = json.loads(ops("dlq", "show", DLQ, "--json", "--limit", "1").output)
    assert len(shown) == 1
    (letter,) = shown
    assert letter["error"] == "ValueError: account 7 is cursed"
    assert letter["original_topic"].endswith(ACCOUNTS_EVENTS)
    assert (letter["original_partition"], letter["original_offset"]) == (1, 42)
    assert (letter["group"], letter["attempts"]) == (GROUP, 5)
    assert letter["failed_at"]
    assert letter["message"]["event_id"] == str(envelope.event_id)
    assert letter["message"]["decode_error"] is None


def test_list_counts_messages_and_those_not_replayed(ops, dead_letter, settings):
    dead_letter(status_changed(7).to_bytes(), key=b"7")
    dead_letter(status_changed(8).to_bytes(), key=b"8")

    result = ops("dlq", "list", "--group", GROUP, "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {
            "topic": settings.topic(DLQ),
            "original_topic": settings.topic(ACCOUNTS_EVENTS),
            "group": GROUP,
            "messages": 2,
            "not_replayed": 2,
        }
    ]
    assert ops("dlq", "list", "--group", "nobody", "--json").output.strip() == "[]"
    text = ops("dlq", "list").output
    assert settings.topic(DLQ) in text


def test_replay_puts_the_original_back_exactly_once_across_two_runs(
    ops, dead_letter, read_topic, settings
):
    envelope = status_changed(7)
    dead_letter(envelope.to_bytes(), key=b"7", headers=(TRACE,))
    assert read_topic(ACCOUNTS_EVENTS) == []

    dry = ops("dlq", "replay", DLQ, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would_replay" in dry.output
    assert read_topic(ACCOUNTS_EVENTS) == []

    first = ops("dlq", "replay", DLQ)
    assert first.exit_code == 0, first.output
    assert "replayed 1, failed 0" in first.output

    second = ops("dlq", "replay", DLQ)
    assert second.exit_code == 0, second.output
    assert "replayed 0, failed 0" in second.output

    (record,) = read_topic(ACCOUNTS_EVENTS)
    assert record.value == envelope.to_bytes()
    assert record.key == b"7"
    assert list(record.headers) == [TRACE]  # the original headers, none of the dlq.* ones

    listed = json.loads(ops("dlq", "list", "--group", GROUP, "--json").output)
    assert (listed[0]["messages"], listed[0]["not_replayed"]) == (1, 0)
    assert "(replayed)" in ops("dlq", "show", DLQ).output
    assert ops("dlq", "show", DLQ, "--not-replayed").output.startswith("no dead letters")


def test_replay_of_one_event_is_remembered_by_the_full_replay(ops, dead_letter, read_topic):
    older, newer = status_changed(7), status_changed(7)
    dead_letter(older.to_bytes(), key=b"7", offset=1)
    dead_letter(newer.to_bytes(), key=b"7", offset=2)

    one = ops("dlq", "replay", DLQ, "--event-id", str(newer.event_id))
    assert one.exit_code == 0, one.output
    assert [r.value for r in read_topic(ACCOUNTS_EVENTS)] == [newer.to_bytes()]

    again = ops("dlq", "replay", DLQ, "--event-id", str(newer.event_id), "--json")
    assert again.exit_code == 0, again.output
    assert [o["action"] for o in json.loads(again.output)] == ["already_replayed"]

    rest = ops("dlq", "replay", DLQ, "--json")
    assert rest.exit_code == 0, rest.output
    assert [(o["action"], o["event_id"]) for o in json.loads(rest.output)] == [
        ("replayed", str(older.event_id))
    ]
    assert "replayed 0," in ops("dlq", "replay", DLQ).output
    assert sorted(r.value for r in read_topic(ACCOUNTS_EVENTS)) == sorted(
        [older.to_bytes(), newer.to_bytes()]
    )

    unknown = ops("dlq", "replay", DLQ, "--event-id", "00000000-0000-0000-0000-000000000000")
    assert unknown.exit_code == 1
    assert "no dead letter of event" in unknown.output


def test_a_message_that_is_not_a_dead_letter_is_not_replayed(ops, publish, read_topic):
    publish(DLQ, (b"7", status_changed(7).to_bytes()))

    result = ops("dlq", "replay", DLQ)

    assert result.exit_code == 1
    assert "no dlq.original_topic header" in result.output
    assert read_topic(ACCOUNTS_EVENTS) == []


def test_unknown_or_misnamed_topics_fail_with_a_reason(ops):
    missing = ops("dlq", "show", "nowhere.v1.billing.dlq")
    assert missing.exit_code == 1
    assert "does not exist" in missing.output

    not_a_dlq = ops("dlq", "replay", ACCOUNTS_EVENTS)
    assert not_a_dlq.exit_code == 1
    assert "is not a dead-letter topic" in not_a_dlq.output

    assert ops("dlq", "replay", DLQ, "--event-id", "not-a-uuid").exit_code == 2


def test_split_dead_letter_topic():
    assert split_dead_letter_topic("t1.accounts.events.v1.billing.dlq") == (
        "t1.accounts.events.v1",
        "billing",
    )
    with pytest.raises(OpsError):
        split_dead_letter_topic("accounts.events.v1")
    with pytest.raises(OpsError):
        split_dead_letter_topic("billing.dlq")


def test_replay_ledger_remembers_offsets_replayed_ahead():
    ledger = ReplayLedger.from_commit(None, beginning=3)
    assert not ledger.replayed(3)
    ledger.mark(5)
    assert (ledger.next_offset, ledger.ahead, ledger.not_replayed(7)) == (3, {5}, 3)
    restored = ReplayLedger.from_commit(ledger.commit_point(), beginning=0)
    assert restored == ledger
    restored.mark(3)
    restored.mark(4)
    assert (restored.next_offset, restored.ahead, restored.metadata()) == (6, set(), "")
    assert restored.replayed(5) and not restored.replayed(6)
