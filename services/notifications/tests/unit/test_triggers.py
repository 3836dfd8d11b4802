"""Trigger matching, recipients and message categories (pure rules)."""

import pytest

from notifications.domain.triggers import (
    Audience,
    ContactView,
    TriggerProblem,
    check_conditions,
    conditions_hold,
    event_fields,
    recipients,
    triggerable_events,
)

STATUS_CHANGE = {
    "account_id": 7,
    "status": {"id": 9, "name": "Vacation", "activates_account": True},
    "previous_status": {"id": 2, "name": "Active", "activates_account": True},
}


def test_conditions_match_nested_paths_any_of_and_case_insensitively():
    assert conditions_hold({}, STATUS_CHANGE)
    assert conditions_hold({"status.name": "vacation"}, STATUS_CHANGE)
    assert conditions_hold({"status.name": ["Delinquent", "Vacation"]}, STATUS_CHANGE)
    assert not conditions_hold({"status.name": ["Delinquent", "Collections"]}, STATUS_CHANGE)
    assert not conditions_hold({"status.name": "Vacation", "account_id": 8}, STATUS_CHANGE)
    assert not conditions_hold({"status.colour": "red"}, STATUS_CHANGE)


def test_boolean_conditions_do_not_match_truthy_values():
    assert conditions_hold({"final": True}, {"final": True})
    assert not conditions_hold({"final": True}, {"final": 1})
    assert not conditions_hold({"final": True}, {"final": False})


def test_known_events_can_trigger_but_commands_and_email_events_cannot():
    events = triggerable_events()
    assert {"AccountDisconnected", "InvoiceIssued", "ScheduledEventFailed"} <= set(events)
    assert "DisconnectAccount" not in events  # a command, not a fact
    assert "EmailSent" not in events  # mail about mail would loop
    assert "CommandFailed" not in events
    assert "final" in event_fields("InvoiceIssued")


def test_unknown_event_type_and_condition_field_are_named():
    with pytest.raises(TriggerProblem, match="unknown event type 'AccountExploded'"):
        event_fields("AccountExploded")
    with pytest.raises(TriggerProblem, match="unknown field 'colour'"):
        check_conditions("AccountStatusChanged", {"colour": "red"})
    with pytest.raises(TriggerProblem, match="a value or a list"):
        check_conditions("AccountStatusChanged", {"status": {"name": "x"}})
    check_conditions("AccountStatusChanged", {"status.name": ["Vacation"]})


PRIMARY = ContactView(1, "Ada", "ada@example.com", is_primary=True, message_categories=[])
TECH = ContactView(2, "Tom", "tom@example.com", is_primary=False, message_categories=["Outages"])
NO_EMAIL = ContactView(3, "Nil", None, is_primary=False, message_categories=["outages"])


def test_contacts_receive_only_the_categories_they_chose():
    contacts = [PRIMARY, TECH, NO_EMAIL]
    assert recipients(Audience.PRIMARY_CONTACT, None, contacts) == [PRIMARY]
    assert recipients(Audience.PRIMARY_CONTACT, "outages", contacts) == []
    assert recipients(Audience.ALL_CONTACTS, "outages", contacts) == [TECH, NO_EMAIL]
    assert recipients(Audience.ALL_CONTACTS, None, contacts) == contacts
    assert recipients(Audience.STAFF, None, contacts) == []
