"""The dispatcher: sends queued email outside any transaction, each under its own claim.

A round takes up to `batch_size` due rows and sends them in `concurrency` lanes, each lane
one email at a time over one SMTP session it keeps. A lane takes its share of the round in
chunks of a few emails and (1) claims a chunk in one committed transaction, each row on its
own conditions (`sending_since`, a `claim_id`, `attempts + 1`: a row another replica holds is
simply not claimed), (2) talks SMTP with no transaction open, email by email, each behind
its own DATA fence (below), (3) records the outcomes in one transaction, emitting EmailSent /
EmailRejected, as soon as the chunk is done or an outcome has waited `RECORD_WITHIN`. Several
replicas may run this loop: the claim is a conditional UPDATE, so one wins. A lane that stops
(a graceful stop, or its chunk getting old) hands the emails it claimed but did not start
back at once, uncounted, as if never claimed.

Nothing can be delivered before SMTP DATA, so just before it the mailer calls back and the
dispatcher commits `data_started_at`, in one conditional UPDATE that matches only while its
claim still holds (same `claim_id`, still Queued, not yet marked). If it matches nothing the
claim was taken away and the mailer quits without DATA; if the database fails, the mailer
quits too and the email is retried. Recording an outcome is fenced the same way: it applies
only while the row is held by the claim that sent it.

A claim that outlives its lease belongs to a worker that died (or stalled) mid-send:
- without `data_started_at` (and past the short pre-DATA lease), nothing was delivered: the
  row is requeued, the attempt not counted, and sent again. The fence makes this safe even
  if the old worker is still alive: it can no longer mark DATA, so it never sends.
- with `data_started_at` (past the send lease), the message may have left: whether it did is
  unknown. So is the outcome of a send whose connection was lost during DATA, or that hit
  the hard time limit after DATA started.
A claim taken before the claim token existed (`claim_id` NULL) is treated as the latter.

What happens to an email of unknown outcome is the policy's `unknown_outcome`
(EMAIL_UNKNOWN_OUTCOME); SMTP itself offers no exactly-once:
- `close` (the default), at most once: the row is closed as Rejected, "delivery outcome
  unknown", and never sent again. A worker killed inside DATA may lose the mail.
- `resend`, at least once: the row is sent again, within `max_attempts` and then closed as
  above. An expired in-DATA claim is requeued (claim cleared, due now, the attempt counted);
  a lost connection or the time limit is retried like a temporary failure (with backoff).
  Each is logged as `email_resent_after_unknown_outcome`; nothing is emitted until the
  resend's outcome (one EmailSent). The resend carries the same Message-ID and
  `X-Backhaul-Idempotency-Key` (composed from the row), so it is exactly once only behind a
  relay or mailbox that drops a repeated Message-ID; elsewhere a recipient may get it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, cast
from uuid import UUID, uuid4

import structlog
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from sqlalchemy import CursorResult, or_, select, update

from backhaul_contracts.events.notifications import EmailRejected, EmailSent
from backhaul_kit.context import flow
from backhaul_kit.telemetry import context_from_headers, tracer
from backhaul_kit.unit_of_work import UnitOfWork
from notifications.adapters.smtp import Mailer, compose
from notifications.adapters.tables import Email
from notifications.domain.delivery import (
    OUTCOME_UNKNOWN,
    RELAY_PROBLEM,
    EmailState,
    Reply,
    UnknownOutcome,
    Verdict,
    classify,
    resend_unknown,
    retry_delay,
    should_retry,
)
from notifications.service_layer import claims
from notifications.service_layer.claims import Claimed

log = structlog.get_logger(__name__)

ABANDONED = (
    "delivery outcome unknown: the worker stopped while sending; "
    "not sent again so the recipient never gets it twice"
)
# `resend` mode: why a requeued row waits, and why it was closed once attempts ran out.
ABANDONED_GAVE_UP = "delivery outcome unknown: the worker stopped while sending"
ABANDONED_RESENT = f"{ABANDONED_GAVE_UP}; sent again with the same Message-ID"


RECORD_ATTEMPTS = 4
# A lane claims at most this many emails at once (fewer when the round is small, so that
# every lane gets some): one claim and one record transaction for them instead of one each.
CHUNK_MAX = 16
# An outcome waits at most this long (seconds) for its chunk's record transaction: a worker
# killed meanwhile leaves its sent emails' outcomes unknown, so the wait is kept short.
RECORD_WITHIN = 0.5


@dataclass(frozen=True)
class DeliveryPolicy:
    mail_from: str
    max_attempts: int = 5
    backoff_seconds: float = 60.0
    backoff_max_seconds: float = 3600.0
    # A claim whose send reached DATA and has no outcome after this long is closed as unknown.
    send_lease: timedelta = timedelta(minutes=5)
    # A claim that has not reached DATA after this long is requeued (see the module docstring).
    pre_data_lease: timedelta = timedelta(seconds=60)
    batch_size: int = 50
    # Emails of a round in flight at once; each is claimed, sent and recorded on its own.
    concurrency: int = 4
    # A send that may or may not have been delivered: closed, or sent again (module docstring).
    unknown_outcome: UnknownOutcome = UnknownOutcome.CLOSE


def _now() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        mailer: Mailer,
        policy: DeliveryPolicy,
        *,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.uow_factory = uow_factory
        self.mailer = mailer
        self.policy = policy
        self.clock = clock
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._wakeup.set()

    async def run(self, poll_interval: float) -> None:
        """The worker's loop: deliver what is due, then wait for a wake-up or the next poll."""
        while True:
            try:
                await self.deliver_due()
            except Exception as exc:  # a bad row or a database blip must not stop delivery
                log.exception("email_dispatch_failed", error=repr(exc))
            try:
                async with asyncio.timeout(poll_interval):  # not wait_for: see Database
                    await self._wakeup.wait()
            except TimeoutError:
                pass
            self._wakeup.clear()

    async def deliver_due(self) -> int:
        """Close abandoned sends, then attempt every due email once, in `concurrency`
        lanes; returns how many were attempted."""
        await self.close_abandoned()
        ids = await self._due()
        if not ids:
            return 0  # most polls: no lanes to start
        due = iter(ids)
        # Small rounds are spread over every lane (each sends one at a time).
        chunk = max(1, min(CHUNK_MAX, -(-len(ids) // self.policy.concurrency)))
        stopping = False

        async def lane() -> int:
            attempted = 0
            async with self._session() as via:
                while not stopping:
                    # One iterator shared by the lanes: each id taken once.
                    taken = list(islice(due, chunk))
                    if not taken:
                        break
                    attempted += await self._deliver_chunk(taken, via, lambda: stopping)
            return attempted

        lanes = [asyncio.ensure_future(lane()) for _ in range(self.policy.concurrency)]
        everything = asyncio.gather(*lanes, return_exceptions=True)
        try:
            outcomes = await asyncio.shield(everything)
        except asyncio.CancelledError:
            # The worker is stopping: the emails being sent are finished and their outcomes
            # recorded first (the stop waits, within its bound), so a graceful stop never
            # leaves a message whose delivery is unknown. No new one is started, and those
            # claimed but not started are handed back.
            stopping = True
            await everything
            raise
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            raise failures[0]
        return sum(o for o in outcomes if isinstance(o, int))

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[Mailer]:
        """The lane's mailer: one kept SMTP session if the mailer has them, else itself."""
        connection = getattr(self.mailer, "connection", None)
        if connection is None:
            yield self.mailer
            return
        async with connection() as via:
            yield via

    async def _deliver_chunk(
        self, ids: list[UUID], via: Mailer, stopping: Callable[[], bool]
    ) -> int:
        """Claim `ids` together, send each claimed one, record the outcomes together; hand
        back what was not started. Returns how many were attempted."""
        taken = await self.claim_many(ids)
        pending: list[tuple[Claimed, Reply, Span]] = []
        waiting_since = 0.0
        started = 0
        try:
            for claimed in taken:
                if stopping() or self._aging(claimed):
                    break  # the rest is handed back below
                started += 1
                span = tracer().start_span(
                    "email send",
                    context=context_from_headers(claimed.trace_headers),
                    kind=SpanKind.CLIENT,
                    attributes={
                        "backhaul.email_id": str(claimed.id),
                        "backhaul.attempt": claimed.attempts,
                    },
                )
                with trace.use_span(span, end_on_exit=False):
                    reply = await self.send(claimed, via=via)
                span.set_attribute("smtp.reply_code", reply.code)
                if not pending:
                    waiting_since = time.monotonic()
                pending.append((claimed, reply, span))
                if time.monotonic() - waiting_since >= RECORD_WITHIN:
                    recording, pending = pending, []
                    await self._record_persistently(recording)
            recording, pending = pending, []
            if recording:
                await self._record_persistently(recording)
        finally:
            if pending:  # something failed mid-chunk: the outcomes are still worth keeping
                with contextlib.suppress(Exception):
                    await self._record_persistently(pending)
            if started < len(taken):
                await self._release(taken[started:])
        return started

    def _aging(self, claimed: Claimed) -> bool:
        """Has the claim used up half its pre-DATA lease while waiting for its turn? Then it
        is handed back rather than sent late: another replica may requeue it soon, and the
        fence would stop it at DATA anyway."""
        if claimed.claimed_at is None:
            return False
        return self.clock() - claimed.claimed_at > self.policy.pre_data_lease / 2

    async def _due(self) -> list[UUID]:
        uow = self.uow_factory()
        async with uow:
            rows = await uow.session.scalars(
                select(Email.id)
                .where(
                    Email.state == EmailState.QUEUED.value,
                    Email.sending_since.is_(None),
                    Email.next_attempt_at <= self.clock(),
                )
                .order_by(Email.next_attempt_at)
                .limit(self.policy.batch_size)
            )
            return list(rows.all())

    async def claim(self, email_id: UUID) -> Claimed | None:
        """Mark the row as being sent, and commit that, before any SMTP traffic."""
        taken = await self.claim_many([email_id])
        return taken[0] if taken else None

    async def claim_many(self, email_ids: Sequence[UUID]) -> list[Claimed]:
        """Claim each of the rows still Queued and unclaimed, in one committed transaction,
        before any SMTP traffic; returns them in the order asked. Each row is claimed on its
        own conditions, so a row another replica holds is left out, never shared.

        The rows share a claim token: the fence is (row, token), and a new claim of any of
        them draws a new token, so a token still names one attempt of each row."""
        uow = self.uow_factory()
        async with uow:
            return await claims.claim(uow.session, email_ids, claim_id=uuid4(), now=self.clock())

    async def _release(self, taken: Sequence[Claimed]) -> None:
        """Hand back claims whose send never started: as if never claimed (the attempt is
        not counted), and only while each claim still holds its row before DATA. Should this
        fail, the pre-DATA lease requeues them the same way, later."""
        uow = self.uow_factory()
        async with uow:
            await claims.release(uow.session, taken)

    async def send(self, claimed: Claimed, *, via: Mailer | None = None) -> Reply:
        """The SMTP conversation (over `via`, a lane's session, if given); no database
        transaction is open here."""
        message = compose(
            mail_from=self.policy.mail_from,
            recipient=claimed.recipient,
            subject=claimed.subject,
            body=claimed.body,
            message_id=claimed.message_id,
            idempotency_key=claimed.idempotency_key,
            queued_at=claimed.queued_at,
        )
        data_may_start = False

        async def before_data() -> bool:
            nonlocal data_may_start
            data_may_start = await self.mark_data_started(claimed)
            return data_may_start

        # A hard bound well inside the lease, so no send outlives its claim.
        limit = self.policy.send_lease.total_seconds() / 2
        mailer = via or self.mailer
        try:
            return await asyncio.wait_for(
                mailer.send(message, claimed.recipient, before_data=before_data), limit
            )
        except TimeoutError:
            if not data_may_start:  # cut off before DATA: nothing was handed over
                return Reply(RELAY_PROBLEM, f"relay problem: no DATA within {limit:.0f}s")
            return Reply(OUTCOME_UNKNOWN, f"the SMTP conversation took longer than {limit:.0f}s")

    async def mark_data_started(self, claimed: Claimed) -> bool:
        """The fence before DATA: commit `data_started_at` if this claim still holds the row.

        False if it does not (the claim expired and the row was requeued or closed): the
        mailer must then not send. Raises if the database cannot be reached.
        """
        uow = self.uow_factory()
        async with uow:
            result = await uow.session.execute(
                update(Email)
                .where(
                    Email.id == claimed.id,
                    Email.claim_id == claimed.claim_id,
                    Email.state == EmailState.QUEUED.value,
                    Email.data_started_at.is_(None),
                )
                .values(data_started_at=self.clock())
            )
            # An UPDATE's result is a CursorResult (it has rowcount); mypy sees a Result.
            return bool(cast(CursorResult[Any], result).rowcount == 1)

    async def _record_persistently(self, sent: list[tuple[Claimed, Reply, Span]]) -> None:
        """The messages may be out: losing their outcomes to a database blip would close
        them as unknown later, so recording is retried a few times before giving up. Each
        outcome is recorded (and its events emitted) inside its own send's span."""
        try:
            for attempt in range(1, RECORD_ATTEMPTS + 1):
                try:
                    await self.record_many(
                        [(c, r) for c, r, _ in sent], spans=[s for *_, s in sent]
                    )
                    return
                except Exception as exc:
                    if attempt == RECORD_ATTEMPTS:
                        raise
                    log.warning("email_outcome_not_recorded", attempt=attempt, error=repr(exc))
                    await asyncio.sleep(0.5 * 2 ** (attempt - 1))
        finally:
            for *_, span in sent:
                span.end()

    async def record(self, claimed: Claimed, reply: Reply) -> EmailState:
        """Store the attempt's outcome and emit its event; returns the row's state."""
        [state] = await self.record_many([(claimed, reply)])
        return state

    async def record_many(
        self, outcomes: Sequence[tuple[Claimed, Reply]], *, spans: Sequence[Span] = ()
    ) -> list[EmailState]:
        """Store the attempts' outcomes and emit their events, in one transaction; returns
        each row's state. Each outcome applies only while its claim holds its row."""
        uow = self.uow_factory()
        async with uow:
            # Locked (PostgreSQL; SQLite transactions are serial anyway), so close_abandoned
            # cannot take a claim away between this check and the commit.
            emails = {
                email.id: email
                for email in await uow.session.scalars(
                    select(Email)
                    .where(Email.id.in_([c.id for c, _ in outcomes]))
                    .with_for_update()
                    .execution_options(populate_existing=True)
                )
            }
            states = []
            for n, (claimed, reply) in enumerate(outcomes):
                span = spans[n] if n < len(spans) else None
                with (
                    trace.use_span(span, end_on_exit=False)
                    if span is not None
                    else contextlib.nullcontext(),
                    flow(claimed.correlation_id, claimed.trigger_event_id),
                ):
                    states.append(await self._record(uow, emails[claimed.id], claimed, reply))
            return states

    async def _record(
        self, uow: UnitOfWork, email: Email, claimed: Claimed, reply: Reply
    ) -> EmailState:
        if email.state != EmailState.QUEUED.value or email.claim_id != claimed.claim_id:
            # Its lease ran out meanwhile: the row was closed (that outcome stands) or
            # requeued (another claim sends it). Emit nothing more.
            log.warning("email_outcome_too_late", email_id=str(email.id), reply=str(reply))
            return EmailState(email.state)
        now = self.clock()
        _release(email)
        verdict = classify(reply)
        if verdict in (Verdict.RELAY_PROBLEM, Verdict.CLAIM_LOST):
            # Nothing was handed over (the relay failed, not the recipient; or the mailer
            # stopped before DATA): this attempt does not count.
            email.attempts = max(email.attempts - 1, 0)
            email.reject_reason = str(reply)
            email.next_attempt_at = now + retry_delay(
                1,
                base_seconds=self.policy.backoff_seconds,
                max_seconds=self.policy.backoff_max_seconds,
            )
            return EmailState.QUEUED
        if verdict is Verdict.SENT:
            email.state = EmailState.SENT.value
            email.sent_at = now
            email.next_attempt_at = None
            await uow.emit(
                EmailSent(**_common(email), sent_at=now, message_id=email.message_id),
                subject=email.account_id,
            )
            log.info("email_sent", email_id=str(email.id), attempts=email.attempts)
            return EmailState.SENT
        if verdict is Verdict.OUTCOME_UNKNOWN and self._resends(email):
            # Retried like a temporary failure; this attempt counts.
            email.reject_reason = str(reply)
            email.next_attempt_at = now + retry_delay(
                email.attempts,
                base_seconds=self.policy.backoff_seconds,
                max_seconds=self.policy.backoff_max_seconds,
            )
            _log_resend(email, str(reply))
            return EmailState.QUEUED
        if verdict is Verdict.TEMPORARY and should_retry(email.attempts, self.policy.max_attempts):
            email.reject_reason = str(reply)
            email.next_attempt_at = now + retry_delay(
                email.attempts,
                base_seconds=self.policy.backoff_seconds,
                max_seconds=self.policy.backoff_max_seconds,
            )
            log.info(
                "email_deferred",
                email_id=str(email.id),
                attempts=email.attempts,
                reply=str(reply),
                next_attempt_at=email.next_attempt_at.isoformat(),
            )
            return EmailState.QUEUED
        state = EmailState.INVALID if verdict is Verdict.INVALID else EmailState.REJECTED
        reason = str(reply)
        if verdict is Verdict.TEMPORARY:
            reason = f"{reason} (gave up after {email.attempts} attempts)"
        elif verdict is Verdict.OUTCOME_UNKNOWN:
            reason = f"delivery outcome unknown ({reply}); {self._not_resent(email)}"
        await self._reject(uow, email, state, reason, permanent=verdict is not Verdict.TEMPORARY)
        return state

    def _resends(self, email: Email) -> bool:
        """Is this email, whose last attempt has an unknown outcome, sent again?"""
        return resend_unknown(self.policy.unknown_outcome, email.attempts, self.policy.max_attempts)

    def _not_resent(self, email: Email) -> str:
        """Why an email of unknown outcome is closed, for its reject reason."""
        if self.policy.unknown_outcome is UnknownOutcome.CLOSE:
            return "not sent again"
        return f"gave up after {email.attempts} attempts"

    async def close_abandoned(self) -> int:
        """Expired claims: requeue those that never reached DATA; the others' outcome is
        unknown: close them (`close`) or requeue them while attempts remain (`resend`).
        Returns how many rows were requeued or closed."""
        uow = self.uow_factory()
        async with uow:
            now = self.clock()
            # Locked and skipped if locked (PostgreSQL): a row whose outcome is being recorded
            # right now, or that another replica is closing, is left to them.
            before_data = list(
                await uow.session.scalars(
                    select(Email)
                    .where(
                        Email.state == EmailState.QUEUED.value,
                        Email.claim_id.is_not(None),
                        Email.data_started_at.is_(None),
                        Email.sending_since < now - self.policy.pre_data_lease,
                    )
                    .with_for_update(skip_locked=True)
                )
            )
            for email in before_data:
                claimed_since = email.sending_since
                _release(email)
                # Never handed over: sent again at once, and the attempt does not count.
                email.attempts = max(email.attempts - 1, 0)
                email.next_attempt_at = now
                with flow(email.correlation_id, email.trigger_event_id):
                    log.warning(
                        "email_send_requeued",
                        email_id=str(email.id),
                        claimed_since=claimed_since.isoformat() if claimed_since else None,
                        reason="the claim expired before DATA: nothing was delivered",
                    )
            in_data = list(
                await uow.session.scalars(
                    select(Email)
                    .where(
                        Email.state == EmailState.QUEUED.value,
                        Email.sending_since < now - self.policy.send_lease,
                        or_(Email.data_started_at.is_not(None), Email.claim_id.is_(None)),
                    )
                    .with_for_update(skip_locked=True)
                )
            )
            for email in in_data:
                _release(email)
                with flow(email.correlation_id, email.trigger_event_id):
                    if self._resends(email):
                        # Sent again at once; the cut-off attempt counts. Emits nothing.
                        email.reject_reason = ABANDONED_RESENT
                        email.next_attempt_at = now
                        _log_resend(
                            email, "the send lease ran out: the worker stopped while sending"
                        )
                        continue
                    reason = ABANDONED
                    if self.policy.unknown_outcome is UnknownOutcome.RESEND:
                        reason = f"{ABANDONED_GAVE_UP} ({self._not_resent(email)})"
                    await self._reject(uow, email, EmailState.REJECTED, reason, permanent=True)
            return len(before_data) + len(in_data)

    async def _reject(
        self, uow: UnitOfWork, email: Email, state: EmailState, reason: str, *, permanent: bool
    ) -> None:
        now = self.clock()
        email.state = state.value
        email.reject_reason = reason
        email.rejected_at = now
        email.next_attempt_at = None
        await uow.emit(
            EmailRejected(
                **_common(email),
                rejected_at=now,
                reason=reason,
                permanent=permanent,
                invalid=state is EmailState.INVALID,
            ),
            subject=email.account_id,
        )
        log.warning("email_rejected", email_id=str(email.id), state=state.value, reason=reason)


def _log_resend(email: Email, reason: str) -> None:
    log.warning(
        "email_resent_after_unknown_outcome",
        email_id=str(email.id),
        message_id=email.message_id,
        attempts=email.attempts,
        reason=reason,
        next_attempt_at=email.next_attempt_at.isoformat() if email.next_attempt_at else None,
    )


def _release(email: Email) -> None:
    """End the row's current attempt: no claim, no DATA marker."""
    email.sending_since = None
    email.claim_id = None
    email.data_started_at = None


def _common(email: Email) -> dict[str, object]:
    return {
        "account_id": email.account_id,
        "email_id": email.id,
        "recipient": email.recipient,
        "subject": email.subject,
        "trigger_event_type": email.trigger_event_type,
        "trigger_event_id": email.trigger_event_id,
        "disconnection_id": email.disconnection_id,
    }
