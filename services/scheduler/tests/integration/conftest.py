"""Play the other services on the real broker: publish their events, answer commands."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from aiokafka import AIOKafkaProducer

from backhaul_contracts import Envelope, Event
from backhaul_contracts.common import ServiceKind, ServiceRef, StatusRef
from backhaul_contracts.events.accounts import (
    AccountCreated,
    AccountDisconnected,
    AccountStatusDefined,
)
from backhaul_contracts.events.billing import AccountServiceAdded, ServiceDefined
from backhaul_kit.testing import eventually
from scheduler.adapters.tables import KnownService, KnownStatus

ACTIVE = StatusRef(id=2, name="Active", activates_account=True)
INACTIVE = StatusRef(id=3, name="Inactive", activates_account=False)


class OtherServices:
    """Publishes what accounts and billing would, on the test's prefixed topics."""

    def __init__(self, producer: AIOKafkaProducer, prefix: str) -> None:
        self.producer = producer
        self.prefix = prefix

    async def publish(
        self,
        event: Event,
        subject: int | str,
        *,
        topic: str | None = None,
        causation_id: UUID | None = None,
        producer: str = "test",
    ) -> Envelope:
        """Publish under `subject`: an account id, or a catalogue entry's subject."""
        envelope = Envelope.wrap(
            event, producer=producer, subject=subject, causation_id=causation_id
        )
        await self.producer.send_and_wait(
            f"{self.prefix}{topic or event.topic}",
            envelope.to_bytes(),
            key=str(subject).encode(),
        )
        return envelope

    async def status_defined(self, status: StatusRef) -> None:
        """Accounts' catalogue: the status exists."""
        event = AccountStatusDefined(
            status_id=status.id,
            name=status.name,
            activates_account=status.activates_account,
            icon="circle",
            colour="#9E9E9E",
            defined_at=datetime.now(UTC),
        )
        await self.publish(event, event.subject)

    async def service_defined(self, service_id: int, kind: ServiceKind) -> None:
        """Billing's catalogue: the service exists."""
        event = ServiceDefined(
            service_id=service_id,
            name=f"Service {service_id}",
            kind=kind,
            price=Decimal("50.00"),
            currency="USD",
            download_kbps=10_000 if kind is ServiceKind.DATA else None,
            upload_kbps=10_000 if kind is ServiceKind.DATA else None,
            defined_at=datetime.now(UTC),
        )
        await self.publish(event, event.subject)

    async def account_created(
        self, account_id: int, status: StatusRef = ACTIVE, parent_account_id: int | None = None
    ) -> None:
        await self.publish(
            AccountCreated(
                account_id=account_id,
                name=f"Account {account_id}",
                status=status,
                parent_account_id=parent_account_id,
                created_at=datetime.now(UTC),
            ),
            account_id,
        )

    async def account_disconnected(self, account_id: int) -> None:
        await self.publish(
            AccountDisconnected(
                account_id=account_id,
                account_name=f"Account {account_id}",
                disconnection_id=uuid4(),
                disconnected_at=datetime.now(UTC),
                disconnected_by="staff",
                previous_status=ACTIVE,
                status=INACTIVE,
            ),
            account_id,
        )

    async def service_added(
        self, account_id: int, account_service_id: int, service_id: int, kind: ServiceKind
    ) -> None:
        await self.publish(
            AccountServiceAdded(
                account_id=account_id,
                account_service_id=account_service_id,
                service=ServiceRef(
                    service_id=service_id,
                    name=f"Service {service_id}",
                    kind=kind,
                    price=Decimal("50.00"),
                    currency="USD",
                ),
                quantity=1,
                price=Decimal("50.00"),
                added_at=datetime.now(UTC),
            ),
            account_id,
        )


@pytest.fixture
async def others(kafka_bootstrap, topic_prefix):
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        yield OtherServices(producer, topic_prefix)
    finally:
        await producer.stop()


class Owners:
    """Accounts and billing answering the scheduler's commands, as their handlers would."""

    def __init__(self, others: OtherServices, bootstrap: str) -> None:
        self.others = others
        self.bootstrap = bootstrap
        self.received: list[Envelope] = []
        # command type -> reason to refuse it with; anything else succeeds
        self.refuse: dict[str, str] = {}

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from backhaul_contracts import decode
        from backhaul_contracts.events.outcomes import CommandFailed, CommandSucceeded, FailureCode
        from backhaul_contracts.topics import (
            ACCOUNTS_COMMANDS,
            ACCOUNTS_EVENTS,
            BILLING_COMMANDS,
            BILLING_EVENTS,
        )

        answers_on = {ACCOUNTS_COMMANDS: ACCOUNTS_EVENTS, BILLING_COMMANDS: BILLING_EVENTS}
        prefix = self.others.prefix
        consumer = AIOKafkaConsumer(
            *[f"{prefix}{t}" for t in answers_on],
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            async for record in consumer:
                envelope, _command = decode(record.value)
                self.received.append(envelope)
                account_id = int(envelope.subject)
                outcome: Event
                if envelope.event_type in self.refuse:
                    outcome = CommandFailed(
                        account_id=account_id,
                        command_type=envelope.event_type,
                        reason=self.refuse[envelope.event_type],
                        code=FailureCode.CONFLICT,
                    )
                else:
                    outcome = CommandSucceeded(
                        account_id=account_id,
                        command_type=envelope.event_type,
                        result={"command": envelope.event_type, "echo": envelope.payload},
                    )
                topic = answers_on[record.topic.removeprefix(prefix)]
                await self.others.publish(
                    outcome, account_id, topic=topic, causation_id=envelope.event_id
                )
        finally:
            await consumer.stop()


@pytest.fixture
async def owners(others, kafka_bootstrap, service):
    import asyncio
    import contextlib

    owner = Owners(others, kafka_bootstrap)
    task = asyncio.create_task(owner.run())
    yield owner
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Catalogue:
    """Accounts' and billing's catalogues, published over Kafka and waited for until the
    scheduler's replica has them."""

    def __init__(self, runtime, others: OtherServices) -> None:
        self.runtime = runtime
        self.others = others

    async def _replicated(self, model: type, key: int) -> None:
        async def known() -> None:
            async with self.runtime.uow() as uow:
                assert await uow.session.get(model, key) is not None, f"{model.__name__} {key}"

        await eventually(known, timeout=60)

    async def status(self, status: StatusRef) -> None:
        await self.others.status_defined(status)
        await self._replicated(KnownStatus, status.id)

    async def service(self, service_id: int, kind: ServiceKind = ServiceKind.RECURRING) -> None:
        await self.others.service_defined(service_id, kind)
        await self._replicated(KnownService, service_id)


@pytest.fixture
async def catalogue(service, others):
    runtime, _client = service
    return Catalogue(runtime, others)
