"""Every bookings query. Reads of one booking take the caller's id, so nobody can load
someone else's booking by guessing its id."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    CursorResult,
    Select,
    Uuid,
    and_,
    bindparam,
    delete,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from smilingsteps.accounts.models import User
from smilingsteps.accounts.schemas import Contact
from smilingsteps.bookings.models import ACTIVE_VALUES, Booking, BookingReminder, BookingStatus, SessionNote
from smilingsteps.platform.db import advisory_xact_lock, execute_core, take_write_turn, takes_turns_by_advisory_lock
from smilingsteps.platform.i18n import Language
from smilingsteps.platform.models import UtcDateTime, table_of
from smilingsteps.therapists.models import LISTED, TherapistProfile, bookable_columns
from smilingsteps.therapists.schemas import Bookable

# The longest a booking can occupy: 180-minute sessions plus a 120-minute buffer (the
# profile's CHECK constraints). Lower bounds on starts_at use it so index scans stay short.
LONGEST_BOOKING = timedelta(minutes=300)


def _active() -> ColumnElement[bool]:
    """Status is held, pending payment or confirmed.

    One bound parameter per value: `in_(ACTIVE_VALUES)` would be an "expanding" parameter,
    which SQLAlchemy rewrites into the SQL string on every execution.
    """
    return Booking.status.in_([literal(value) for value in ACTIVE_VALUES])


def _live(now: datetime) -> ColumnElement[bool]:
    """Active and, for a hold, not yet expired (an expired hold frees its slot before the job marks it)."""
    return and_(
        _active(),
        or_(Booking.status != BookingStatus.HELD, Booking.hold_expires_at > now),
    )


async def take_write_lock(session: AsyncSession, therapist_id: uuid.UUID | None = None) -> None:
    """Serialise the writers that could clash, until this transaction ends.

    SQLite: become the single writer now, so the checks and the write are one step.
    PostgreSQL: a transaction-scoped advisory lock per therapist. The exclusion
    constraints alone would still refuse a double booking, but two transactions
    inserting clashing rows at the same moment wait on each other and one dies
    in a deadlock after a second; taking turns per therapist avoids that, and
    the checks then see the winner's row and answer 409 at once.
    """
    await take_write_turn(session, table="bookings", key=None if therapist_id is None else _lock_key(therapist_id))


def _lock_key(therapist_id: uuid.UUID) -> int:
    return int.from_bytes(therapist_id.bytes[:8], "big", signed=True)


async def busy_between(
    session: AsyncSession,
    therapist_id: uuid.UUID,
    start: datetime,
    end: datetime,
    *,
    now: datetime,
    excluding: uuid.UUID | None = None,
) -> list[tuple[datetime, datetime]]:
    """(starts_at, blocks_until) of the therapist's live bookings overlapping [start, end)."""
    statement = select(Booking.starts_at, Booking.blocks_until).where(
        Booking.therapist_id == therapist_id,
        Booking.starts_at > start - LONGEST_BOOKING,
        Booking.starts_at < end,
        Booking.blocks_until > start,
        _live(now),
    )
    if excluding is not None:
        statement = statement.where(Booking.id != excluding)
    return [(row.starts_at, row.blocks_until) for row in await session.execute(statement.order_by(Booking.starts_at))]


@dataclass(frozen=True)
class Surroundings:
    """What a new booking at [start, end) runs into, read in one round trip."""

    busy: list[tuple[datetime, datetime]]  # the therapist's live bookings nearby: (starts_at, blocks_until)
    client_clash: bool  # the client has a live booking overlapping [start, end)
    stale_hold_in_the_way: bool  # an expired hold, not yet marked, still occupies the slot


def _surroundings_statement(
    *, excluding: bool
) -> Select[uuid.UUID, uuid.UUID, datetime, datetime, datetime, str, datetime | None]:
    """See `surroundings`; the bounds are bound parameters so the statement is built once."""
    therapist_id, client_id = bindparam("therapist_id", type_=Uuid), bindparam("client_id", type_=Uuid)
    therapist_near = and_(
        Booking.therapist_id == therapist_id,
        Booking.starts_at > bindparam("therapist_from", type_=UtcDateTime),
        Booking.starts_at < bindparam("therapist_to", type_=UtcDateTime),
    )
    client_overlap = and_(
        Booking.client_id == client_id,
        Booking.starts_at > bindparam("client_from", type_=UtcDateTime),
        Booking.starts_at < bindparam("client_to", type_=UtcDateTime),
    )
    statement = select(
        Booking.therapist_id,
        Booking.client_id,
        Booking.starts_at,
        Booking.ends_at,
        Booking.blocks_until,
        Booking.status,
        Booking.hold_expires_at,
    ).where(or_(therapist_near, client_overlap), _active())
    if excluding:
        statement = statement.where(Booking.id != bindparam("excluding", type_=Uuid))
    return statement


# Built once (a statement object keeps its cache key): creating a booking runs this every time.
_SURROUNDINGS = _surroundings_statement(excluding=False)
_SURROUNDINGS_EXCLUDING = _surroundings_statement(excluding=True)


async def surroundings(
    session: AsyncSession,
    *,
    therapist_id: uuid.UUID,
    client_id: uuid.UUID,
    start: datetime,
    end: datetime,
    blocks_until: datetime,
    now: datetime,
    excluding: uuid.UUID | None = None,
) -> Surroundings:
    """The therapist's bookings near [start, blocks_until) and the client's overlapping [start, end), in one query.

    Both sides are bounded on `starts_at` (no booking is longer than LONGEST_BOOKING), so the
    (therapist, starts_at) and (client, starts_at) indexes keep it cheap however long the history.
    """
    reach = blocks_until - start
    parameters: dict[str, object] = {
        "therapist_id": therapist_id,
        "therapist_from": start - LONGEST_BOOKING - reach,
        "therapist_to": blocks_until + reach,
        "client_id": client_id,
        "client_from": start - LONGEST_BOOKING,
        "client_to": end,
    }
    statement = _SURROUNDINGS
    if excluding is not None:
        statement, parameters["excluding"] = _SURROUNDINGS_EXCLUDING, excluding
    busy: list[tuple[datetime, datetime]] = []
    clash = stale_in_the_way = False
    for row in await execute_core(session, statement, parameters):
        stale = row.status == BookingStatus.HELD and row.hold_expires_at is not None and row.hold_expires_at <= now
        mine = row.therapist_id == therapist_id
        overlaps_slot = mine and row.starts_at < blocks_until and row.blocks_until > start
        overlaps_client = row.client_id == client_id and row.starts_at < end and row.ends_at > start
        if stale:
            stale_in_the_way = stale_in_the_way or overlaps_slot or overlaps_client
            continue
        if mine:
            busy.append((row.starts_at, row.blocks_until))
        clash = clash or overlaps_client
    return Surroundings(sorted(busy), clash, stale_in_the_way)


_INSERT_BOOKING = insert(table_of(Booking))
_BOOKING_COLUMNS = tuple(column.key for column in table_of(Booking).columns)


async def insert_booking(session: AsyncSession, booking: Booking) -> None:
    """Write a new (transient) booking with one Core INSERT, not through the unit of work.

    The object stays detached: the caller answers from it, and nothing else in the
    request loads it again. A clash raises IntegrityError like a flush would.
    """
    values = {key: getattr(booking, key) for key in _BOOKING_COLUMNS}
    await execute_core(session, _INSERT_BOOKING, values)


@dataclass(frozen=True)
class Parties:
    therapist: Bookable
    client: Contact


def _parties_statement(*, lock: bool) -> Select[Any]:
    client = aliased(User, name="client")
    columns: list[Any] = [
        *bookable_columns(),
        client.email.label("client_email"),
        client.full_name.label("client_name"),
        client.language.label("client_language"),
    ]
    if lock:
        # Evaluated for the one row found, after the join: the therapist's turn starts here,
        # and the statements that follow (busy times) take their snapshots after it.
        columns.append(advisory_xact_lock(bindparam("lock_key", type_=BigInteger)).label("turn_taken"))
    return (
        select(*columns)
        .select_from(User)
        .join(TherapistProfile, TherapistProfile.user_id == User.id)
        .join(client, client.id == bindparam("client_id", type_=Uuid))
        .where(User.id == bindparam("therapist_id", type_=Uuid), *LISTED)
    )


_PARTIES = _parties_statement(lock=False)
_PARTIES_TAKING_TURN = _parties_statement(lock=True)


async def parties_taking_turn(session: AsyncSession, therapist_id: uuid.UUID, client_id: uuid.UUID) -> Parties | None:
    """Take the therapist's write turn (`take_write_lock`) and read the listed therapist's booking
    terms and the client's contact, in one round trip on PostgreSQL. None if the therapist is not listed.

    Creating a hold runs this on every request, so the lock rides on the read instead of
    costing a statement of its own; SQLite's turn is a separate no-op write (no round trips there).
    """
    parameters: dict[str, object] = {"therapist_id": therapist_id, "client_id": client_id}
    if takes_turns_by_advisory_lock(session):
        statement, parameters["lock_key"] = _PARTIES_TAKING_TURN, _lock_key(therapist_id)
    else:
        await take_write_lock(session, therapist_id)
        statement = _PARTIES
    row = (await execute_core(session, statement, parameters)).first()
    if row is None:
        return None
    values = row._mapping
    return Parties(
        Bookable.from_row(values),
        Contact(
            email=values["client_email"],
            full_name=values["client_name"],
            language=Language(values["client_language"]),
        ),
    )


async def expire_stale_holds(
    session: AsyncSession,
    *,
    now: datetime,
    therapist_id: uuid.UUID | None = None,
    client_id: uuid.UUID | None = None,
) -> int:
    """Holds past their expiry become `expired` (all of them, or one therapist's or client's)."""
    statement = update(Booking).where(Booking.status == BookingStatus.HELD, Booking.hold_expires_at <= now)
    if therapist_id is not None:
        statement = statement.where(Booking.therapist_id == therapist_id)
    if client_id is not None:
        statement = statement.where(Booking.client_id == client_id)
    result = await session.execute(
        statement.values(status=BookingStatus.EXPIRED, updated_at=now).execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


async def booking_for(session: AsyncSession, booking_id: uuid.UUID, user_id: uuid.UUID) -> Booking | None:
    """The booking if `user_id` is its client or its therapist; None otherwise (callers answer 404)."""
    return (
        await session.execute(
            select(Booking).where(
                Booking.id == booking_id, or_(Booking.client_id == user_id, Booking.therapist_id == user_id)
            )
        )
    ).scalar_one_or_none()


async def booking_by_id(session: AsyncSession, booking_id: uuid.UUID) -> Booking | None:
    """Any booking, for administrators and the payment flow only."""
    return await session.get(Booking, booking_id)


async def lock_booking(session: AsyncSession, booking_id: uuid.UUID) -> Booking | None:
    """Any booking, locked until this transaction ends (its payment changes it from several places).

    PostgreSQL: the row lock (FOR UPDATE). SQLite: this transaction becomes the single writer first.
    The row is read again even if the session had it, so the caller sees the committed state.
    """
    await take_write_turn(session, table="bookings", key=None)
    statement = (
        select(Booking).where(Booking.id == booking_id).with_for_update().execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def bookings_of(
    session: AsyncSession, user_id: uuid.UUID, *, status: BookingStatus | None, limit: int, offset: int
) -> Sequence[Booking]:
    statement = select(Booking).where(or_(Booking.client_id == user_id, Booking.therapist_id == user_id))
    if status is not None:
        statement = statement.where(Booking.status == status)
    rows = await session.execute(statement.order_by(Booking.starts_at.desc(), Booking.id).limit(limit).offset(offset))
    return rows.scalars().all()


async def search(
    session: AsyncSession,
    *,
    status: BookingStatus | None,
    therapist_id: uuid.UUID | None,
    client_id: uuid.UUID | None,
    starts_from: datetime | None,
    starts_before: datetime | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Sequence[Booking]:
    """Any bookings matching every given filter, for administrators: by start then id, both descending,
    after the (starts_at, id) position of the previous page."""
    statement = select(Booking)
    if status is not None:
        statement = statement.where(Booking.status == status)
    if therapist_id is not None:
        statement = statement.where(Booking.therapist_id == therapist_id)
    if client_id is not None:
        statement = statement.where(Booking.client_id == client_id)
    if starts_from is not None:
        statement = statement.where(Booking.starts_at >= starts_from)
    if starts_before is not None:
        statement = statement.where(Booking.starts_at < starts_before)
    if after is not None:
        start, last_id = after
        statement = statement.where(
            or_(Booking.starts_at < start, and_(Booking.starts_at == start, Booking.id < last_id))
        )
    rows = await session.execute(statement.order_by(Booking.starts_at.desc(), Booking.id.desc()).limit(limit))
    return rows.scalars().all()


async def replace_reminders(session: AsyncSession, booking_id: uuid.UUID, reminders: Sequence[BookingReminder]) -> None:
    """Unsent reminders go; the new ones (possibly none) take their place."""
    await session.execute(
        delete(BookingReminder).where(BookingReminder.booking_id == booking_id, BookingReminder.sent_at.is_(None))
    )
    session.add_all(reminders)


async def claim_due_reminders(
    session: AsyncSession, *, now: datetime, limit: int
) -> list[tuple[BookingReminder, Booking]]:
    """Due, unsent reminders with their bookings, locked so a second worker skips them."""
    statement = (
        select(BookingReminder, Booking)
        .join(Booking, Booking.id == BookingReminder.booking_id)
        .where(BookingReminder.sent_at.is_(None), BookingReminder.due_at <= now)
        .order_by(BookingReminder.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=BookingReminder)
    )
    return [(row.BookingReminder, row.Booking) for row in await session.execute(statement)]


async def note_for(session: AsyncSession, booking_id: uuid.UUID, therapist_id: uuid.UUID) -> SessionNote | None:
    return (
        await session.execute(
            select(SessionNote).where(SessionNote.booking_id == booking_id, SessionNote.therapist_id == therapist_id)
        )
    ).scalar_one_or_none()
