"""Notifications' handlers: triggers (configuration) and reactions to events.

Reacting to an event only QUEUES email, in the event's own inbox transaction: the row is
committed as Queued before any SMTP traffic. Sending is the dispatcher's job
(service_layer/delivery.py), outside any database transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from pydantic import ValidationError
from sqlalchemy import event as orm_event
from sqlalchemy import func, select

from backhaul_contracts import Envelope, Event
from backhaul_contracts.events import accounts as account_events
from backhaul_contracts.events.notifications import EmailQueued, EmailRejected
from backhaul_kit.errors import Conflict, InvalidInput
from backhaul_kit.telemetry import current_trace_headers
from backhaul_kit.unit_of_work import UnitOfWork
from notifications.adapters.tables import Email, Trigger
from notifications.domain import templates
from notifications.domain.delivery import (
    EmailState,
    address_problem,
    email_id_for,
    idempotency_key,
    message_id_for,
)
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
from notifications.service_layer import replica

log = structlog.get_logger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


# -- triggers (configuration) ----------------------------------------------------------------


@dataclass(frozen=True)
class TriggerSpec:
    name: str
    event_type: str
    subject_template: str
    body_template: str
    audience: Audience = Audience.PRIMARY_CONTACT
    conditions: dict[str, Any] | None = None
    category: str | None = None
    enabled: bool = True
    address: str | None = None


def validate_trigger(spec: TriggerSpec) -> None:
    """Refuse, naming it, an unknown event type or field, or a template that cannot work."""
    if spec.address is not None:
        if spec.audience is not Audience.STAFF:
            raise InvalidInput(
                "address is only for the staff audience; contacts come from accounts"
            )
        if (problem := address_problem(spec.address)) is not None:
            raise InvalidInput(f"address {spec.address!r} is invalid: {problem}")
    try:
        fields = event_fields(spec.event_type)
        check_conditions(spec.event_type, spec.conditions or {})
        templates.check(spec.subject_template, event_fields=fields, what="subject_template")
        templates.check(spec.body_template, event_fields=fields, what="body_template")
    except (TriggerProblem, templates.TemplateProblem) as exc:
        raise InvalidInput(str(exc)) from None


@dataclass(frozen=True)
class Preview:
    subject: str
    body: str
    matches: bool


async def preview_trigger(
    uow: UnitOfWork,
    trigger_id: int,
    *,
    payload: dict[str, Any],
    account: dict[str, Any],
    contact: dict[str, Any],
) -> Preview:
    """Render a trigger for a sample event, as its recipient would read it; nothing is sent."""
    async with uow:
        trigger = await get_trigger(uow, trigger_id)
        subject_template, body_template = trigger.subject_template, trigger.body_template
        event_type, conditions = trigger.event_type, trigger.conditions or {}
    model = triggerable_events()[event_type][-1]
    try:
        event = model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"the sample is not a valid {event_type}: {problems}") from None
    event_json = event.model_dump(mode="json")
    variables = {
        "account": account,
        "contact": contact,
        "event": event_json,
        "event_type": event_type,
        "occurred_at": _now(),
    }
    try:
        rendered = templates.render(subject_template, body_template, variables)
    except templates.TemplateProblem as exc:
        raise InvalidInput(f"trigger {trigger_id}: {exc}") from None
    return Preview(
        subject=rendered.subject,
        body=rendered.body,
        matches=conditions_hold(conditions, event_json),
    )


async def get_trigger(uow: UnitOfWork, trigger_id: int) -> Trigger:
    return await uow.get(Trigger, trigger_id, not_found=f"trigger {trigger_id} not found")


async def _refuse_taken_name(uow: UnitOfWork, name: str, *, other_than: int | None = None) -> None:
    statement = select(func.count()).select_from(Trigger).where(Trigger.name == name)
    if other_than is not None:
        statement = statement.where(Trigger.id != other_than)
    if await uow.session.scalar(statement):
        raise Conflict(f"a trigger named {name!r} already exists")


async def create_trigger(uow: UnitOfWork, spec: TriggerSpec) -> Trigger:
    """Add a trigger after checking its event type, conditions and templates."""
    validate_trigger(spec)
    async with uow:
        await _refuse_taken_name(uow, spec.name)
        now = _now()
        trigger = Trigger(
            name=spec.name,
            event_type=spec.event_type,
            conditions=spec.conditions or {},
            audience=spec.audience.value,
            category=spec.category,
            subject_template=spec.subject_template,
            body_template=spec.body_template,
            enabled=spec.enabled,
            address=spec.address,
            shipped=False,
            created_at=now,
            updated_at=now,
        )
        uow.session.add(trigger)
        await uow.session.flush()
        return trigger


async def update_trigger(uow: UnitOfWork, trigger_id: int, changes: dict[str, Any]) -> Trigger:
    """Change some of a trigger's fields; the result is validated as a whole."""
    async with uow:
        trigger = await get_trigger(uow, trigger_id)
        merged = {
            "name": trigger.name,
            "event_type": trigger.event_type,
            "subject_template": trigger.subject_template,
            "body_template": trigger.body_template,
            "audience": Audience(trigger.audience),
            "conditions": trigger.conditions,
            "category": trigger.category,
            "enabled": trigger.enabled,
            "address": trigger.address,
        } | changes
        spec = TriggerSpec(**merged)
        validate_trigger(spec)
        await _refuse_taken_name(uow, spec.name, other_than=trigger_id)
        trigger.name = spec.name
        trigger.event_type = spec.event_type
        trigger.subject_template = spec.subject_template
        trigger.body_template = spec.body_template
        trigger.audience = spec.audience.value
        trigger.conditions = spec.conditions or {}
        trigger.category = spec.category
        trigger.enabled = spec.enabled
        trigger.address = spec.address
        trigger.updated_at = _now()
        await uow.session.flush()
        return trigger


async def delete_trigger(uow: UnitOfWork, trigger_id: int) -> None:
    """Remove a trigger; emails it already queued or sent stay in the log."""
    async with uow:
        await uow.session.delete(await get_trigger(uow, trigger_id))


# -- reactions to events -----------------------------------------------------------------------


@dataclass(frozen=True)
class Mailing:
    """What the handlers need to know about where mail goes."""

    staff_email: str | None
    mail_from: str
    on_queued: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class TriggerView:
    """An enabled trigger as the handlers use it: a snapshot, no session attached."""

    id: int
    name: str
    event_type: str
    conditions: dict[str, Any]
    audience: Audience
    category: str | None
    address: str | None
    subject_template: str
    body_template: str


_TRIGGERS = "notifications.enabled_triggers"
_WAKE_REGISTERED = "notifications.wake_registered"


async def _enabled_triggers(uow: UnitOfWork, event_type: str) -> list[TriggerView]:
    """The enabled triggers for `event_type`, in id order, read once per transaction.

    The consumer handles a polled batch in one transaction, so every event of the batch
    sees the same set of triggers (read by the first event that asks), and a batch of 500
    costs one query instead of 500. Triggers change only through the API, in transactions
    of their own; the next batch sees the change. The cache lives in the session's `info`,
    which ends with the transaction's session."""
    info = uow.session.info
    cached: dict[str, list[TriggerView]] | None = info.get(_TRIGGERS)
    if cached is None:
        cached = {}
        rows = await uow.session.execute(
            select(Trigger.__table__).where(Trigger.enabled.is_(True)).order_by(Trigger.id)
        )
        for row in rows:
            cached.setdefault(row.event_type, []).append(
                TriggerView(
                    id=row.id,
                    name=row.name,
                    event_type=row.event_type,
                    conditions=dict(row.conditions or {}),
                    audience=Audience(row.audience),
                    category=row.category,
                    address=row.address,
                    subject_template=row.subject_template,
                    body_template=row.body_template,
                )
            )
        info[_TRIGGERS] = cached
    return cached.get(event_type, [])


@dataclass(frozen=True)
class _Replicated:
    """What keeping the replica current learnt, so that queueing need not read it again."""

    account: replica.AccountView | None = None
    contacts: list[ContactView] | None = None  # of `account`, after the change


async def _update_replica(event: Event, uow: UnitOfWork) -> _Replicated:
    if isinstance(event, account_events.AccountCreated | account_events.AccountDisconnected):
        name = (
            event.name if isinstance(event, account_events.AccountCreated) else event.account_name
        )
        account = await replica.upsert_account(
            uow, event.account_id, name=name, parent_account_id=event.parent_account_id
        )
        if event.primary_contact is None:
            return _Replicated(account)
        contacts = await replica.upsert_contact(uow, event.account_id, event.primary_contact)
        return _Replicated(account, contacts)
    if isinstance(event, account_events.AccountUpdated):
        account = await replica.upsert_account(
            uow, event.account_id, name=event.name, parent_account_id=event.parent_account_id
        )
        return _Replicated(account)
    if isinstance(event, account_events.ContactChanged):
        account = await replica.upsert_account(
            uow,
            event.account_id,
            name=event.account_name,
            parent_account_id=event.parent_account_id,
        )
        if event.removed:
            await replica.remove_contact(uow, event.contact.contact_id)
            return _Replicated(account)
        contacts = await replica.upsert_contact(uow, event.account_id, event.contact)
        return _Replicated(account, contacts)
    if isinstance(event, account_events.AccountStatusChanged):
        # No name in the event: the known one stays (a new account gets the default).
        account = await replica.upsert_account(
            uow, event.account_id, name=None, parent_account_id=event.parent_account_id
        )
        return _Replicated(account)
    return _Replicated()


def _account_id(event: Event, envelope: Envelope) -> int | None:
    value = getattr(event, "account_id", None)
    if isinstance(value, int):
        return value
    try:
        return int(envelope.subject)
    except ValueError:
        return None


async def on_event(event: Event, envelope: Envelope, uow: UnitOfWork, *, mailing: Mailing) -> None:
    """Keep the replica current, then queue what the enabled triggers for this event say."""
    replicated = await _update_replica(event, uow)
    account_id = _account_id(event, envelope)
    if account_id is None:
        # Catalogue events (a status or service defined) concern no account: nobody to mail.
        log.debug("event_not_about_an_account", event_type=envelope.event_type)
        return
    matching = [
        t
        for t in await _enabled_triggers(uow, envelope.event_type)
        if conditions_hold(t.conditions, envelope.payload)
    ]
    if not matching:
        return
    account = replicated.account
    if account is None or account.id != account_id:
        account = await replica.get_account(uow, account_id)
    payload_name = getattr(event, "account_name", None) or getattr(event, "name", None)
    parent_id = account.parent_account_id if account else getattr(event, "parent_account_id", None)
    account_vars = {
        "id": account_id,
        "name": account.name if account else (payload_name or f"Account {account_id}"),
        "parent_account_id": parent_id,
    }
    # Child accounts get no triggered messages of their own: their parent's contacts do.
    mail_account_id = parent_id if parent_id is not None else account_id
    if replicated.contacts is not None and mail_account_id == account_id:
        contacts = replicated.contacts  # just written: the replica holds exactly these
    else:
        contacts = await replica.contacts_of(uow, mail_account_id)
    done: set[str] = set()  # one message per event and recipient, the first trigger wins
    outgoing: list[_Outgoing] = []
    for trigger in matching:
        audience = trigger.audience
        if audience is Audience.STAFF:
            staff_address = trigger.address or mailing.staff_email
            if staff_address is None:
                log.info("staff_email_not_configured", trigger=trigger.name)
                continue
            targets = [ContactView(0, "Staff", staff_address, is_primary=False)]
        else:
            targets = recipients(audience, trigger.category, contacts)
        if not any(t.email for t in targets):
            log.info(
                "no_recipient",
                trigger=trigger.name,
                account_id=account_id,
                event_type=envelope.event_type,
                event_id=str(envelope.event_id),
            )
            continue
        # Staff mail is about the account itself, so it stays in that account's log.
        log_account_id = account_id if audience is Audience.STAFF else mail_account_id
        for contact in targets:
            if not contact.email or contact.email.lower() in done:
                continue
            done.add(contact.email.lower())
            outgoing.append(
                _compose(
                    trigger,
                    envelope,
                    event,
                    contact,
                    account_vars,
                    account_id=log_account_id,
                    mailing=mailing,
                )
            )
    if outgoing:
        await _queue(uow, outgoing, mailing=mailing)


@dataclass(frozen=True)
class _Outgoing:
    """One email of an event, built and ready to be inserted."""

    row: dict[str, Any]
    trigger_name: str
    problem: str | None


def _compose(
    trigger: TriggerView,
    envelope: Envelope,
    event: Event,
    contact: ContactView,
    account_vars: dict[str, Any],
    *,
    account_id: int,
    mailing: Mailing,
) -> _Outgoing:
    assert contact.email is not None
    recipient = contact.email
    key = idempotency_key(envelope.event_id, recipient)
    variables = {
        "account": account_vars,
        "contact": {"name": contact.name, "email": recipient},
        "event": envelope.payload,
        "event_type": envelope.event_type,
        "occurred_at": envelope.occurred_at,
    }
    # An email that cannot be built (a template that does not fit this event's data, an
    # address no server can take) is recorded as Invalid rather than dropped or crashing
    # the worker, so it shows in the account's log with the reason.
    problem: str | None = None
    try:
        rendered = templates.render(trigger.subject_template, trigger.body_template, variables)
    except templates.TemplateProblem as exc:
        log.error("trigger_render_failed", trigger=trigger.name, error=str(exc))
        rendered = templates.Rendered(subject=trigger.name, body="")
        problem = f"template of trigger {trigger.name!r} could not be rendered: {exc}"
    if problem is None and (bad_address := address_problem(recipient)) is not None:
        problem = f"invalid address: {bad_address}"
    now = _now()
    email_id = email_id_for(key)
    disconnection_id: UUID | None = getattr(event, "disconnection_id", None)
    if not isinstance(event, account_events.AccountDisconnected):
        # Only the disconnect email is a step of the disconnect (accounts tracks it by id).
        disconnection_id = None
    row: dict[str, Any] = {
        "id": email_id,
        "idempotency_key": key,
        "message_id": message_id_for(email_id, mailing.mail_from),
        "account_id": account_id,
        "contact_id": contact.contact_id or None,
        "trigger_id": trigger.id,
        "trigger_event_id": envelope.event_id,
        "trigger_event_type": envelope.event_type,
        "correlation_id": envelope.correlation_id,
        "trace_headers": current_trace_headers(),
        "disconnection_id": disconnection_id,
        "category": trigger.category,
        "recipient": recipient,
        "subject": rendered.subject,
        "body": rendered.body,
        "attempts": 0,
        "queued_at": now,
        "state": EmailState.QUEUED.value,
        "next_attempt_at": now,
        "reject_reason": None,
        "rejected_at": None,
    }
    if problem is not None:
        row |= {
            "state": EmailState.INVALID.value,
            "reject_reason": problem,
            "next_attempt_at": None,
            "rejected_at": now,
        }
    return _Outgoing(row, trigger.name, problem)


async def _queue(uow: UnitOfWork, outgoing: list[_Outgoing], *, mailing: Mailing) -> None:
    """Insert an event's emails in one statement, each unless its idempotency key is taken,
    and emit EmailQueued (or EmailRejected, for an Invalid one) for those inserted.

    ON CONFLICT DO NOTHING on the unique key is the existence check and the insert in one:
    a row already there (the same event and recipient, queued before) is left as it is and
    nothing is emitted for it, exactly as when it was looked up first."""
    table = Email.__table__
    statement = (
        replica.dialect_insert(uow, table)
        .on_conflict_do_nothing(index_elements=[table.c.idempotency_key])
        .returning(table.c.id)
    )
    # The rows as parameters, not in the statement: it is compiled once and cached (a
    # statement carrying its values is compiled again for every event).
    rows = [o.row for o in outgoing]
    inserted = set(
        (await uow.session.execute(statement, rows[0] if len(rows) == 1 else rows)).scalars()
    )
    queued = False
    for email in outgoing:
        row = email.row
        email_id = row["id"]
        if email_id not in inserted:
            log.info(
                "email_already_queued",
                email_id=str(email_id),
                idempotency_key=row["idempotency_key"],
            )
            continue
        common = {
            "account_id": row["account_id"],
            "email_id": email_id,
            "recipient": row["recipient"],
            "subject": row["subject"],
            "trigger_event_type": row["trigger_event_type"],
            "trigger_event_id": row["trigger_event_id"],
            "disconnection_id": row["disconnection_id"],
        }
        if email.problem is not None:
            log.warning("email_invalid", email_id=str(email_id), reason=email.problem)
            await uow.emit(
                EmailRejected(
                    **common,
                    rejected_at=row["rejected_at"],
                    reason=email.problem,
                    permanent=True,
                    invalid=True,
                ),
                subject=row["account_id"],
            )
            continue
        await uow.emit(EmailQueued(**common, queued_at=row["queued_at"]), subject=row["account_id"])
        log.info("email_queued", email_id=str(email_id), trigger=email.trigger_name)
        queued = True
    if queued and not uow.session.info.get(_WAKE_REGISTERED):
        # Wake the dispatcher once this transaction has committed (not before: it would not
        # see it); one listener per transaction, however many emails it queues.
        uow.session.info[_WAKE_REGISTERED] = True
        orm_event.listen(
            uow.session.sync_session, "after_commit", lambda _s: mailing.on_queued(), once=True
        )
