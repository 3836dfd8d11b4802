"""SMTP reply classification, retry timing and email identities (pure rules)."""

from datetime import timedelta
from uuid import UUID

import pytest

from notifications.domain.delivery import (
    CLAIM_LOST,
    OUTCOME_UNKNOWN,
    RELAY_PROBLEM,
    Reply,
    UnknownOutcome,
    Verdict,
    address_problem,
    classify,
    email_id_for,
    idempotency_key,
    message_id_for,
    resend_unknown,
    retry_delay,
    should_retry,
)
from notifications.domain.sms import NoSmsGateway, SmsUnavailable


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        (Reply(250, "OK"), Verdict.SENT),
        (Reply(451, "4.7.1 try again later"), Verdict.TEMPORARY),
        (Reply(421, "service not available"), Verdict.TEMPORARY),
        (Reply(550, "5.1.1 user unknown"), Verdict.PERMANENT),
        (Reply(552, "5.2.2 mailbox full"), Verdict.PERMANENT),
        (Reply(553, "mailbox name not allowed"), Verdict.INVALID),
        (Reply(550, "5.1.3 bad destination mailbox address syntax"), Verdict.INVALID),
        (Reply(RELAY_PROBLEM, "relay problem: connection refused"), Verdict.RELAY_PROBLEM),
        (Reply(OUTCOME_UNKNOWN, "connection lost during DATA"), Verdict.OUTCOME_UNKNOWN),
        (Reply(CLAIM_LOST, "not sent: the claim was taken away"), Verdict.CLAIM_LOST),
    ],
)
def test_replies_are_classified(reply, verdict):
    assert classify(reply) is verdict


def test_backoff_doubles_up_to_its_cap_and_attempts_are_bounded():
    delays = [retry_delay(n, base_seconds=60, max_seconds=300) for n in range(1, 6)]
    assert delays == [timedelta(seconds=s) for s in (60, 120, 240, 300, 300)]
    assert should_retry(4, 5)
    assert not should_retry(5, 5)


def test_identity_follows_from_event_and_recipient():
    event_id = UUID("5c599bb3-9fbe-4788-b5b9-f32373def7e8")
    key = idempotency_key(event_id, "Ada@Example.com")
    assert key == f"{event_id}:ada@example.com"
    assert email_id_for(key) == email_id_for(idempotency_key(event_id, "ada@example.com"))
    email_id = email_id_for(key)
    assert message_id_for(email_id, "Backhaul <noreply@isp.example>") == (
        f"<{email_id}@isp.example>"
    )


def test_address_problems_are_reported():
    assert address_problem("ada@example.com") is None
    assert address_problem("not an address") is not None
    assert address_problem("a b@example.com") is not None
    assert address_problem("ada@exa mple.com") is not None
    # Site-local names are for the relay to judge: a private relay delivers them.
    assert address_problem("staff@backhaul.local") is None
    assert address_problem("noc@localhost") is None
    assert address_problem("no one@backhaul.local") is not None
    assert address_problem("x@-bad-.local") is not None


async def test_no_sms_gateway_refuses_instead_of_pretending():
    with pytest.raises(SmsUnavailable):
        await NoSmsGateway().send(to="+15550100", text="hi", idempotency_key="k")


def test_staff_email_setting_is_checked():
    from notifications.config import NotificationsSettings

    assert NotificationsSettings(staff_email="staff@backhaul.local").staff_email
    with pytest.raises(ValueError, match="STAFF_EMAIL"):
        NotificationsSettings(staff_email="staff at backhaul")
    with pytest.raises(ValueError, match="EMAIL_SEND_LEASE_SECONDS"):
        NotificationsSettings(smtp_timeout_seconds=60, email_send_lease_seconds=120)
    with pytest.raises(ValueError, match="not both"):
        NotificationsSettings(smtp_tls=True, smtp_starttls=True)


def test_the_pre_data_lease_follows_the_smtp_timeout_unless_set():
    from notifications.config import NotificationsSettings

    assert NotificationsSettings().pre_data_lease_seconds == 60
    assert NotificationsSettings(smtp_timeout_seconds=10).pre_data_lease_seconds == 20
    chosen = NotificationsSettings(email_pre_data_lease_seconds=45)
    assert chosen.pre_data_lease_seconds == 45
    with pytest.raises(ValueError, match="at least SMTP_TIMEOUT_SECONDS"):
        NotificationsSettings(email_pre_data_lease_seconds=10)
    with pytest.raises(ValueError, match="must not exceed EMAIL_SEND_LEASE_SECONDS"):
        NotificationsSettings(email_pre_data_lease_seconds=400)


def test_an_unknown_outcome_is_resent_only_in_resend_mode_and_within_the_attempts():
    assert not resend_unknown(UnknownOutcome.CLOSE, 1, 5)
    assert resend_unknown(UnknownOutcome.RESEND, 1, 5)
    assert resend_unknown(UnknownOutcome.RESEND, 4, 5)
    assert not resend_unknown(UnknownOutcome.RESEND, 5, 5)  # the last attempt: closed


def test_the_unknown_outcome_setting(monkeypatch):
    from notifications.config import NotificationsSettings

    assert NotificationsSettings().email_unknown_outcome is UnknownOutcome.CLOSE
    monkeypatch.setenv("EMAIL_UNKNOWN_OUTCOME", "resend")
    assert NotificationsSettings().email_unknown_outcome is UnknownOutcome.RESEND
    monkeypatch.setenv("EMAIL_UNKNOWN_OUTCOME", "twice")
    with pytest.raises(ValueError, match="email_unknown_outcome"):
        NotificationsSettings()
