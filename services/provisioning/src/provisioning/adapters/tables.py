"""The provisioning database, as SQLAlchemy 2 mapped classes.

The `rad*` tables are FreeRADIUS's own SQL schema (`rlm_sql`), so a FreeRADIUS server reads
them directly from this database; only this service writes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast
from uuid import UUID

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from backhaul_kit.db import UtcDateTime, partial_index
from provisioning.domain import ipam


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, list[str]: JSON}


def table_of(model: type[Base]) -> Table:
    """The Core table of a mapped class: for set-shaped statements that load no ORM objects."""
    return cast(Table, model.__table__)


# -- replicas of other services' data ---------------------------------------------------------


class AccountReplica(Base):
    """What provisioning knows of an account, built from accounts' and billing's events."""

    __tablename__ = "accounts"

    account_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status_id: Mapped[int | None] = mapped_column(Integer)
    status_name: Mapped[str | None] = mapped_column(String(100))
    activates: Mapped[bool | None] = mapped_column(Boolean)
    delinquent: Mapped[bool] = mapped_column(Boolean, default=False)
    disconnected_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AccountDataService(Base):
    """A data service on an account (from billing), with the speeds RADIUS groups use."""

    __tablename__ = "account_data_services"

    account_service_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    account_id: Mapped[int] = mapped_column(Integer, index=True)
    service_id: Mapped[int] = mapped_column(Integer)
    service_name: Mapped[str] = mapped_column(String(200))
    download_kbps: Mapped[int | None] = mapped_column(Integer)
    upload_kbps: Mapped[int | None] = mapped_column(Integer)
    added_at: Mapped[datetime] = mapped_column(UtcDateTime())


# -- IPAM -------------------------------------------------------------------------------------


# An address as `ipam.key` writes it. Compared bytewise on PostgreSQL whatever the database's
# collation (hex digits order the same in any sane collation, but the index should not depend
# on it); SQLite compares text bytewise anyway.
RANGE_KEY = String(ipam.KEY_DIGITS).with_variant(
    String(ipam.KEY_DIGITS, collation="C"), "postgresql"
)


class DhcpServer(Base):
    __tablename__ = "dhcp_servers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(String(400))


class PoolDhcpServer(Base):
    __tablename__ = "pool_dhcp_servers"

    pool_id: Mapped[int] = mapped_column(ForeignKey("ip_pools.id"), primary_key=True)
    dhcp_server_id: Mapped[int] = mapped_column(ForeignKey("dhcp_servers.id"), primary_key=True)


class IpPool(Base):
    """A block of addresses to assign from (IPv4 or IPv6); pools never overlap."""

    __tablename__ = "ip_pools"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    cidr: Mapped[str] = mapped_column(String(64), unique=True)
    version: Mapped[int] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # Where the search for the next free address starts (a key; empty: the pool's first
    # address): every usable address below it is taken but for assignments ended since
    # (`IpAssignment.pending_free`). See adapters/taken_blocks.py.
    search_from: Mapped[str | None] = mapped_column(RANGE_KEY)

    dhcp_servers: Mapped[list[DhcpServer]] = relationship(
        secondary="pool_dhcp_servers", lazy="selectin", order_by="DhcpServer.id"
    )


class IpAssignment(Base):
    """An address or subnet given to an assignee; ended assignments are the history.

    `range_first`, `range_last` and `range_after` (the address after the block) are the block
    as sortable keys, so the database finds overlaps and the next free address itself
    (adapters/taken_blocks.py).
    """

    __tablename__ = "ip_assignments"

    id: Mapped[UUID] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("ip_pools.id"))
    address: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    range_first: Mapped[str] = mapped_column(RANGE_KEY)
    range_last: Mapped[str] = mapped_column(RANGE_KEY)
    range_after: Mapped[str] = mapped_column(RANGE_KEY)
    account_id: Mapped[int] = mapped_column(Integer)
    assignee_kind: Mapped[str] = mapped_column(String(30))
    mac: Mapped[str | None] = mapped_column(String(17))
    inventory_item_id: Mapped[int | None] = mapped_column(Integer)
    radius_account_id: Mapped[int | None] = mapped_column(ForeignKey("radius_accounts.id"))
    soft: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(String(400))
    assigned_at: Mapped[datetime] = mapped_column(UtcDateTime())
    assigned_by: Mapped[str] = mapped_column(String(200))
    removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    removed_reason: Mapped[str | None] = mapped_column(String(40))
    moved_to: Mapped[UUID | None] = mapped_column()
    # Ended, and its block not yet folded into the pool's search start (taken_blocks.freed).
    pending_free: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        Index("ix_ip_assignments_account", "account_id", "removed_at"),
        Index("ix_ip_assignments_pool", "pool_id", "removed_at"),
        # The database's own guard that one address is never assigned twice at once.
        partial_index(
            "uq_ip_assignments_current_address",
            "pool_id",
            "address",
            where="removed_at IS NULL",
            unique=True,
        ),
        # The current blocks of a pool in address order: overlap checks and the next free
        # address are seeks on it. Unique, as blocks never overlap: a second guard, and it tells
        # SQLite's planner (which has no statistics) that a seek on it finds one row.
        partial_index(
            "ix_ip_assignments_current_range",
            "pool_id",
            "range_first",
            where="removed_at IS NULL",
            unique=True,
        ),
        # The few ended blocks a pool's next search must look below its search start for.
        Index(
            "ix_ip_assignments_pending_free",
            "pool_id",
            "range_first",
            sqlite_where=text("pending_free = 1"),
            postgresql_where=text("pending_free"),
        ),
    )


class DhcpReservation(Base):
    """A MAC's fixed address on one DHCP server; it exists while its assignment does."""

    __tablename__ = "dhcp_reservations"

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[UUID] = mapped_column(ForeignKey("ip_assignments.id"), index=True)
    dhcp_server_id: Mapped[int] = mapped_column(ForeignKey("dhcp_servers.id"))
    mac: Mapped[str] = mapped_column(String(17))
    address: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        UniqueConstraint("dhcp_server_id", "address", name="uq_dhcp_reservation_address"),
        UniqueConstraint("dhcp_server_id", "mac", "address", name="uq_dhcp_reservation_mac"),
    )


class UninventoriedMac(Base):
    """A MAC that is not an inventory item; one holding an IP goes when the IP goes."""

    __tablename__ = "uninventoried_macs"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(Integer, index=True)
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


# -- address lists ----------------------------------------------------------------------------


class AddressList(Base):
    __tablename__ = "address_lists"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(String(400))
    rule: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AddressListEntry(Base):
    """One address on one list for a span of time: current while `valid_to` is empty."""

    __tablename__ = "address_list_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    address_list_id: Mapped[int] = mapped_column(ForeignKey("address_lists.id"))
    assignment_id: Mapped[UUID] = mapped_column(ForeignKey("ip_assignments.id"))
    account_id: Mapped[int] = mapped_column(Integer)
    address: Mapped[str] = mapped_column(String(64))
    valid_from: Mapped[datetime] = mapped_column(UtcDateTime())
    valid_to: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (
        Index("ix_address_list_entries_list", "address_list_id", "valid_to"),
        Index("ix_address_list_entries_account", "account_id", "valid_to"),
        Index("ix_address_list_entries_address", "address", "valid_from"),
        partial_index(
            "uq_address_list_entries_current",
            "address_list_id",
            "assignment_id",
            where="valid_to IS NULL",
            unique=True,
        ),
    )


class AddressListChange(Base):
    """The changes feed routers follow. `seq` grows in commit order (see network.write_feed)."""

    __tablename__ = "address_list_changes"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    address_list_id: Mapped[int] = mapped_column(ForeignKey("address_lists.id"))
    action: Mapped[str] = mapped_column(String(10))
    address: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (Index("ix_address_list_changes_list", "address_list_id", "seq"),)


class FeedCounter(Base):
    """A counter whose row lock orders the feed: the next seq is taken under it."""

    __tablename__ = "feed_counters"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))


# -- RADIUS -----------------------------------------------------------------------------------


class RadiusAccount(Base):
    """A RADIUS login of an account; written into radcheck while the account is in service."""

    __tablename__ = "radius_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(Integer, index=True)
    username: Mapped[str] = mapped_column(String(64))
    password: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (
        # A deleted login keeps its name as history; the name may be taken again.
        partial_index(
            "uq_radius_accounts_current_username",
            "username",
            where="deleted_at IS NULL",
            unique=True,
        ),
    )


class RadiusGroup(Base):
    """A RADIUS group whose members follow a rule (a status, a data service)."""

    __tablename__ = "radius_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # status, data_service or custom
    service_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    rule: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    priority: Mapped[int] = mapped_column(Integer)
    fall_through: Mapped[bool] = mapped_column(Boolean, default=False)
    attributes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class RadCheck(Base):
    __tablename__ = "radcheck"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True, default="")
    attribute: Mapped[str] = mapped_column(String(64), default="")
    op: Mapped[str] = mapped_column(String(2), default="==")
    value: Mapped[str] = mapped_column(String(253), default="")


class RadReply(Base):
    __tablename__ = "radreply"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True, default="")
    attribute: Mapped[str] = mapped_column(String(64), default="")
    op: Mapped[str] = mapped_column(String(2), default="=")
    value: Mapped[str] = mapped_column(String(253), default="")


class RadGroupCheck(Base):
    __tablename__ = "radgroupcheck"

    id: Mapped[int] = mapped_column(primary_key=True)
    groupname: Mapped[str] = mapped_column(String(64), index=True, default="")
    attribute: Mapped[str] = mapped_column(String(64), default="")
    op: Mapped[str] = mapped_column(String(2), default="==")
    value: Mapped[str] = mapped_column(String(253), default="")


class RadGroupReply(Base):
    __tablename__ = "radgroupreply"

    id: Mapped[int] = mapped_column(primary_key=True)
    groupname: Mapped[str] = mapped_column(String(64), index=True, default="")
    attribute: Mapped[str] = mapped_column(String(64), default="")
    op: Mapped[str] = mapped_column(String(2), default="=")
    value: Mapped[str] = mapped_column(String(253), default="")


class RadUserGroup(Base):
    __tablename__ = "radusergroup"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True, default="")
    groupname: Mapped[str] = mapped_column(String(64), default="")
    priority: Mapped[int] = mapped_column(Integer, default=1)


# -- disconnects ------------------------------------------------------------------------------


class NetworkRelease(Base):
    """One row per disconnection released, so a repeated AccountDisconnected does nothing."""

    __tablename__ = "network_releases"

    disconnection_id: Mapped[UUID] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(Integer, index=True)
    released_at: Mapped[datetime] = mapped_column(UtcDateTime())
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
