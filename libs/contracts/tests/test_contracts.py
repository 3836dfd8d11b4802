from datetime import UTC, datetime
from uuid import uuid4

import pytest

from backhaul_contracts import Envelope, InvalidEventError, UnknownEventError, decode, registry
from backhaul_contracts.common import Proration, StatusRef
from backhaul_contracts.events.accounts import AccountDisconnected
from backhaul_contracts.schemas import check, incompatibilities
from backhaul_contracts.topics import ACCOUNTS_EVENTS, dead_letter_topic

ACTIVE = StatusRef(id=2, name="Active", activates_account=True)
INACTIVE = StatusRef(id=3, name="Inactive", activates_account=False)


def _disconnected() -> AccountDisconnected:
    return AccountDisconnected(
        account_id=7,
        account_name="Ada",
        disconnection_id=uuid4(),
        disconnected_at=datetime.now(UTC),
        disconnected_by="staff@isp",
        previous_status=ACTIVE,
        status=INACTIVE,
        proration=Proration.CREDIT_UNUSED,
    )


def test_envelope_round_trips_to_the_typed_event():
    event = _disconnected()
    envelope = Envelope.wrap(event, producer="accounts", subject=7)

    parsed_envelope, parsed = decode(envelope.to_bytes())

    assert parsed == event
    assert parsed_envelope.event_type == "AccountDisconnected"
    assert parsed_envelope.subject == "7"
    assert parsed_envelope.correlation_id == envelope.event_id  # a new flow
    assert AccountDisconnected.topic == ACCOUNTS_EVENTS


def test_envelope_keeps_the_flow_ids_it_is_given():
    correlation, cause = uuid4(), uuid4()
    envelope = Envelope.wrap(
        _disconnected(),
        producer="accounts",
        subject=7,
        correlation_id=correlation,
        causation_id=cause,
    )
    assert (envelope.correlation_id, envelope.causation_id) == (correlation, cause)


def test_decode_names_what_is_wrong():
    with pytest.raises(InvalidEventError, match="not a valid envelope"):
        decode(b"{not json")
    good = Envelope.wrap(_disconnected(), producer="accounts", subject=7)
    unknown = good.model_copy(update={"event_type": "NoSuchEvent"})
    with pytest.raises(UnknownEventError, match="NoSuchEvent v1"):
        decode(unknown.to_bytes())
    broken = good.model_copy(update={"payload": {"account_id": "x"}})
    with pytest.raises(InvalidEventError, match="AccountDisconnected v1 is invalid"):
        decode(broken.to_bytes())


def test_every_starting_event_of_the_architecture_is_registered():
    names = {event_type for event_type, _ in registry()}
    assert {
        "AccountCreated",
        "AccountUpdated",
        "AccountStatusChanged",
        "AccountDisconnected",
        "ContactChanged",
        "AccountServiceAdded",
        "AccountServiceRemoved",
        "InvoiceIssued",
        "InvoiceVoided",
        "PaymentReceived",
        "AccountDelinquencyChanged",
        "ScheduledEventCreated",
        "ScheduledEventCompleted",
        "ScheduledEventFailed",
        "IpAssigned",
        "IpReleased",
        "AddressListEntryAdded",
        "AddressListEntryRemoved",
        "AccountNetworkReleased",
        "EmailQueued",
        "EmailSent",
        "EmailRejected",
        "ChangeAccountStatus",
        "DisconnectAccount",
        "AddAccountService",
        "RemoveAccountService",
    } <= names


def test_catalogue_events_travel_under_their_entry_not_an_account():
    from decimal import Decimal

    from backhaul_contracts.common import ServiceKind
    from backhaul_contracts.events.accounts import AccountStatusDefined, AccountStatusDeleted
    from backhaul_contracts.events.billing import ServiceDefined
    from backhaul_contracts.topics import BILLING_EVENTS

    now = datetime.now(UTC)
    defined = AccountStatusDefined(
        status_id=9,
        name="Vacation",
        activates_account=True,
        icon="sun",
        colour="#00BCD4",
        defined_at=now,
    )
    deleted = AccountStatusDeleted(status_id=9, name="Vacation", deleted_at=now)
    service = ServiceDefined(
        service_id=12,
        name="Fibre 100",
        kind=ServiceKind.DATA,
        price=Decimal("60.00"),
        currency="USD",
        download_kbps=100_000,
        upload_kbps=20_000,
        defined_at=now,
    )
    assert defined.subject == deleted.subject == "account-status:9"
    assert service.subject == "service:12"
    assert (defined.topic, service.topic) == (ACCOUNTS_EVENTS, BILLING_EVENTS)
    for event in (defined, deleted, service):
        envelope = Envelope.wrap(event, producer="test", subject=event.subject)
        parsed_envelope, parsed = decode(envelope.to_bytes())
        assert parsed == event
        assert parsed_envelope.subject == event.subject
    assert "subject" not in defined.model_dump()  # a routing detail, not part of the payload


def test_dead_letter_topic_name():
    assert dead_letter_topic("accounts.events.v1", "billing") == "accounts.events.v1.billing.dlq"


def test_checked_in_schemas_are_current_and_compatible():
    assert check() == []


OLD = {
    "type": "object",
    "properties": {
        "account_id": {"type": "integer"},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "status": {"$ref": "#/$defs/StatusRef"},
    },
    "required": ["account_id", "status"],
    "$defs": {
        "StatusRef": {
            "type": "object",
            "title": "StatusRef",
            "properties": {"id": {"type": "integer"}, "name": {"type": "string"}},
            "required": ["id", "name"],
        }
    },
}


def _with(**changes):
    import copy

    schema = copy.deepcopy(OLD)
    for key, value in changes.items():
        schema[key] = value
    return schema


def test_an_added_optional_field_is_compatible():
    new = _with(properties={**OLD["properties"], "extra": {"type": "string"}})
    assert incompatibilities(OLD, new) == []


def test_removing_retyping_or_requiring_a_field_is_incompatible():
    props = dict(OLD["properties"])
    del props["note"]
    assert incompatibilities(OLD, _with(properties=props)) == ["note: field removed"]

    retyped = {**OLD["properties"], "account_id": {"type": "string"}}
    assert incompatibilities(OLD, _with(properties=retyped)) == [
        "account_id: no longer accepts ['integer']"
    ]

    narrowed = {**OLD["properties"], "note": {"type": "string"}}
    assert incompatibilities(OLD, _with(properties=narrowed)) == [
        "note: no longer accepts ['null']"
    ]

    required = _with(required=["account_id", "status", "note"])
    assert incompatibilities(OLD, required) == ["note: new required field"]


def test_nested_definitions_are_compared_too():
    import copy

    new = copy.deepcopy(OLD)
    new["$defs"]["StatusRef"]["properties"]["id"] = {"type": "string"}
    assert incompatibilities(OLD, new) == ["status.id: no longer accepts ['integer']"]
