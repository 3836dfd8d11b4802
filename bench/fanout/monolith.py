"""The monolith ceiling: one process applies a disconnect and its effects in one transaction.

Per disconnect, in one transaction on the same kind of database as the services (the kit's
engine settings: WAL and BEGIN IMMEDIATE on SQLite, asyncpg on PostgreSQL): the account
moves to the disconnect status with a disconnection log row; the final invoice is written
and the account's uninvoiced debits point at it; its IP assignment ends (history kept);
its address-list entry ends and a change row goes to the routers' feed; the two emails the
shipped triggers send (the notice and the final invoice) are recorded. No Kafka, no HTTP,
no SMTP: what is left when the distribution is taken away.

    python -m bench.fanout.monolith --url sqlite+aiosqlite:////tmp/m.db --accounts 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    Uuid,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from backhaul_kit.db import create_engine, is_sqlite

metadata = MetaData()
accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200)),
    Column("status_id", Integer),
    Column("serviceable_address", JSON, nullable=True),
    Column("disconnected_at", DateTime(timezone=True), nullable=True),
)
contacts = Table(
    "contacts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", ForeignKey("accounts.id"), index=True),
    Column("name", String(200)),
    Column("email", String(320)),
    Column("primary", Boolean),
)
disconnections = Table(
    "disconnections",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("account_id", ForeignKey("accounts.id"), index=True),
    Column("disconnected_at", DateTime(timezone=True)),
    Column("disconnected_by", String(200)),
    Column("address", JSON, nullable=True),
    Column("previous_status_id", Integer),
    Column("status_id", Integer),
)
invoices = Table(
    "invoices",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", ForeignKey("accounts.id"), index=True),
    Column("number", String(40)),
    Column("total", Numeric(14, 2)),
    Column("currency", String(3)),
    Column("final", Boolean),
    Column("disconnection_id", Uuid, nullable=True),
    Column("issued_at", DateTime(timezone=True)),
)
debits = Table(
    "debits",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", ForeignKey("accounts.id"), index=True),
    Column("amount", Numeric(14, 2)),
    Column("invoice_id", ForeignKey("invoices.id"), nullable=True, index=True),
)
ip_assignments = Table(
    "ip_assignments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, index=True),
    Column("address", String(64)),
    Column("assigned_at", DateTime(timezone=True)),
    Column("removed_at", DateTime(timezone=True), nullable=True),
)
list_entries = Table(
    "address_list_entries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("address_list_id", Integer),
    Column("account_id", Integer, index=True),
    Column("address", String(64)),
    Column("valid_from", DateTime(timezone=True)),
    Column("valid_to", DateTime(timezone=True), nullable=True),
)
list_changes = Table(
    "address_list_changes",
    metadata,
    Column("seq", Integer, primary_key=True),
    Column("address_list_id", Integer),
    Column("action", String(10)),
    Column("address", String(64)),
    Column("account_id", Integer),
    Column("at", DateTime(timezone=True)),
)
emails = Table(
    "emails",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("account_id", Integer, index=True),
    Column("recipient", String(320)),
    Column("subject", String(400)),
    Column("body", Text),
    Column("state", String(20)),
    Column("created_at", DateTime(timezone=True)),
)

DISCONNECTED_STATUS = 3


async def populate(connection: AsyncConnection, count: int) -> None:
    now = datetime.now(UTC)
    ids = list(range(1, count + 1))
    address = {"line1": "1 Bench Street", "city": "Springfield", "country": "US"}
    await connection.execute(
        insert(accounts),
        [
            {"id": i, "name": f"Customer {i}", "status_id": 2, "serviceable_address": address}
            for i in ids
        ],
    )
    await connection.execute(
        insert(contacts),
        [
            {
                "account_id": i,
                "name": f"Customer {i}",
                "email": f"c{i}@bench.example",
                "primary": True,
            }
            for i in ids
        ],
    )
    await connection.execute(
        insert(debits), [{"account_id": i, "amount": Decimal("49.99")} for i in ids]
    )
    await connection.execute(
        insert(ip_assignments),
        [
            {"account_id": i, "address": f"100.64.{i // 256}.{i % 256}", "assigned_at": now}
            for i in ids
        ],
    )
    await connection.execute(
        insert(list_entries),
        [
            {
                "address_list_id": 1,
                "account_id": i,
                "address": f"100.64.{i // 256}.{i % 256}",
                "valid_from": now,
            }
            for i in ids
        ],
    )


async def disconnect(connection: AsyncConnection, account_id: int) -> None:
    now = datetime.now(UTC)
    account = (await connection.execute(select(accounts).where(accounts.c.id == account_id))).one()
    contact = (
        await connection.execute(
            select(contacts.c.name, contacts.c.email).where(
                contacts.c.account_id == account_id, contacts.c.primary.is_(True)
            )
        )
    ).one()
    disconnection_id = uuid.uuid4()
    await connection.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(status_id=DISCONNECTED_STATUS, serviceable_address=None, disconnected_at=now)
    )
    await connection.execute(
        insert(disconnections).values(
            id=disconnection_id,
            account_id=account_id,
            disconnected_at=now,
            disconnected_by="bench",
            address=account.serviceable_address,
            previous_status_id=account.status_id,
            status_id=DISCONNECTED_STATUS,
        )
    )
    # 1. the final invoice for every uninvoiced debit
    open_debits = (
        await connection.execute(
            select(debits.c.id, debits.c.amount).where(
                debits.c.account_id == account_id, debits.c.invoice_id.is_(None)
            )
        )
    ).all()
    total = sum((d.amount for d in open_debits), Decimal("0"))
    invoice_id = (
        await connection.execute(
            insert(invoices)
            .values(
                account_id=account_id,
                number=f"F-{account_id}",
                total=total,
                currency="USD",
                final=True,
                disconnection_id=disconnection_id,
                issued_at=now,
            )
            .returning(invoices.c.id)
        )
    ).scalar_one()
    await connection.execute(
        update(debits)
        .where(debits.c.id.in_([d.id for d in open_debits]))
        .values(invoice_id=invoice_id)
    )
    # 2. the IP released, history kept
    released = (
        (
            await connection.execute(
                update(ip_assignments)
                .where(
                    ip_assignments.c.account_id == account_id, ip_assignments.c.removed_at.is_(None)
                )
                .values(removed_at=now)
                .returning(ip_assignments.c.address)
            )
        )
        .scalars()
        .all()
    )
    # 3. the address-list entries ended, each change in the routers' feed
    ended = (
        await connection.execute(
            update(list_entries)
            .where(list_entries.c.account_id == account_id, list_entries.c.valid_to.is_(None))
            .values(valid_to=now)
            .returning(list_entries.c.address_list_id, list_entries.c.address)
        )
    ).all()
    if ended:
        await connection.execute(
            insert(list_changes),
            [
                {
                    "address_list_id": e.address_list_id,
                    "action": "remove",
                    "address": e.address,
                    "account_id": account_id,
                    "at": now,
                }
                for e in ended
            ],
        )
    # 4. the two emails the shipped triggers send
    await connection.execute(
        insert(emails),
        [
            {
                "id": uuid.uuid4(),
                "account_id": account_id,
                "recipient": contact.email,
                "subject": subject,
                "body": f"Hello {contact.name}, {subject.lower()} ({', '.join(released)}).",
                "state": "queued",
                "created_at": now,
            }
            for subject in (
                f"Your account {account.name} has been disconnected",
                f"Your final invoice F-{account_id}",
            )
        ],
    )


async def run(url: str, count: int, concurrency: int) -> dict[str, float]:
    if is_sqlite(url):
        concurrency = 1  # one writer; more connections only queue on the lock
    engine = create_engine(url, pool_size=concurrency)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    async with engine.begin() as connection:
        await populate(connection, count)
    ids = iter(range(1, count + 1))

    async def worker() -> None:
        for account_id in ids:
            async with engine.begin() as connection:
                await disconnect(connection, account_id)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    await engine.dispose()
    return {
        "disconnects": count,
        "seconds": round(seconds, 3),
        "disconnects_per_s": round(count / seconds, 1),
        "concurrency": concurrency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.accounts, args.concurrency))))


if __name__ == "__main__":
    main()
