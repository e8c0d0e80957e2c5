"""Booking rules: holds, confirmation, cancellation policy, rescheduling, outcomes, reminders and notes.

Cancellation policy (also in README; the money rules are pure, in `policy.py`):
- a client or a therapist may cancel a held, pending or confirmed booking at any time;
- only what the platform took (`paid_kes`, recorded when a confirmed M-Pesa payment confirms the
  booking) is ever refunded: all of it when the therapist cancels or the client cancels at least
  BOOKING_FREE_CANCELLATION_HOURS before the start, nothing later; a booking confirmed by an
  administrator (paid outside the platform) has nothing to refund here;
- paying: a held booking becomes `pending_payment` while its payment is open, its hold extended
  to the payment's deadline (`await_payment`); when the payment fails the hold goes back to what
  it was (`payment_failed`), so the client may try again within it, and a hold already past
  expires at once; a confirmed payment confirms the booking (`confirm(paid=…)`);
- the payments domain hears of cancellations through `on_cancellation` (it turns a refund into
  a payment that is due back) without bookings importing it;
- a client may reschedule a confirmed booking up to BOOKING_FREE_CANCELLATION_HOURS
  before its start, a therapist at any time; a booking is moved, never paid twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import structlog
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.accounts import service as accounts
from smilingsteps.accounts.models import Role
from smilingsteps.accounts.schemas import Contact
from smilingsteps.audit.service import AuditContext, record
from smilingsteps.bookings import repository
from smilingsteps.bookings.errors import BookingStateError, ClientOverlapError, SlotNotBookableError, SlotTakenError
from smilingsteps.bookings.models import Booking, BookingReminder, BookingStatus, ReminderKind
from smilingsteps.bookings.paying import Payment
from smilingsteps.bookings.policy import Cancellation, cancellation
from smilingsteps.bookings.schemas import BookingView
from smilingsteps.config import Settings
from smilingsteps.notifications.service import public_link, queue_email
from smilingsteps.platform import i18n
from smilingsteps.platform.errors import ForbiddenError, NotFoundError, ValidationFailedError
from smilingsteps.platform.i18n import N_, Language, gettext_in
from smilingsteps.therapists import service as therapists
from smilingsteps.therapists.schemas import Bookable, Therapist
from smilingsteps.therapists.slots import Busy, check_window, compute_slots, is_bookable

log = structlog.get_logger("smilingsteps.bookings")
DEADLOCK = "40P01"
REMINDERS = (
    (ReminderKind.DAY_BEFORE, timedelta(hours=24), N_("tomorrow")),
    (ReminderKind.HOUR_BEFORE, timedelta(hours=1), N_("in one hour")),
)
CANCELLED_BY = {True: N_("the therapist"), False: N_("the client")}
PAID_WITH_RECEIPT = N_("Paid: %(amount)s with M-Pesa, receipt %(receipt)s.")
PAID = N_("Paid: %(amount)s with M-Pesa.")
# What an email's context may hold per recipient: computed in their zone and language.
PerReader = Callable[[str, Language], object]
_PROBLEM_TEXT = {
    "past": "That time is in the past.",
    "too_soon": "Sessions must be booked further ahead (minimum notice).",
    "beyond_horizon": "That time is too far ahead to book yet.",
    "outside_availability": "The therapist is not available then.",
    "not_on_grid": "Sessions start at the times listed in the therapist's slots.",
}


# Called inside the cancelling transaction, after the booking changed (the payments domain's refund).
CancellationHook = Callable[[AsyncSession, Booking, Cancellation, datetime, AuditContext], Awaitable[None]]
_cancellation_hooks: list[CancellationHook] = []


def on_cancellation(hook: CancellationHook) -> None:
    """Run `hook` in every cancellation's transaction (registered once by a domain that depends on bookings)."""
    if hook not in _cancellation_hooks:
        _cancellation_hooks.append(hook)


@dataclass(frozen=True)
class Actor:
    """Who acts on a booking, and from where (for the audit log)."""

    user_id: uuid.UUID
    role: Role
    audit: AuditContext


def _words(message: str) -> PerReader:
    """A marked message, translated for each reader."""
    return lambda _zone, language: gettext_in(language)(message)


def _moment(moment: datetime) -> PerReader:
    """A moment in each reader's zone, written their way, the zone named."""
    return lambda zone, language: i18n.when(moment, zone, language)


async def _people(session: AsyncSession, booking: Booking) -> tuple[Contact, Contact]:
    client, therapist = await accounts.contacts(session, booking.client_id, booking.therapist_id)
    return client, therapist


async def _tell_both(
    session: AsyncSession,
    settings: Settings,
    booking: Booking,
    template: str,
    *,
    now: datetime,
    client_only: dict[str, PerReader] | None = None,
    **extra: PerReader,
) -> None:
    """The same message to the client and the therapist, each in their own time zone and language.

    `client_only` adds what only the client reads (their M-Pesa receipt, say).
    """
    client, therapist = await _people(session, booking)
    link = public_link(settings, f"/bookings/{booking.id}")
    for person, other, zone in (
        (client, therapist, booking.client_timezone),
        (therapist, client, booking.therapist_timezone),
    ):
        context: dict[str, object] = {"full_name": person.full_name, "other_name": other.full_name}
        context["when"] = i18n.when(booking.starts_at, zone, person.language)
        context.update({name: value(zone, person.language) for name, value in extra.items()})
        for name, value in (client_only or {}).items():
            context[name] = value(zone, person.language) if person is client else ""
        if template != "booking_cancelled":
            context["link"] = link
        await queue_email(
            session, to=person.email, template=template, context=context, now=now, language=person.language
        )


# ---- free times: a therapist's slots, and who is free by a day -----------------------------


async def _free_starts(
    session: AsyncSession, schedule: therapists.Schedule, start: datetime, end: datetime, now: datetime
) -> list[datetime]:
    busy = await repository.busy_between(session, schedule.therapist.id, start, end, now=now)
    return compute_slots(
        tz=schedule.tz,
        rules=schedule.rules,
        exceptions=schedule.exceptions,
        busy=[Busy(start=b[0], end=b[1]) for b in busy],
        policy=schedule.policy,
        window_start=start,
        window_end=end,
        now=now,
    )


async def free_slots(
    session: AsyncSession, settings: Settings, therapist_id: uuid.UUID, start: datetime, end: datetime, *, now: datetime
) -> tuple[therapists.Schedule, list[datetime]]:
    """Bookable slot starts in [start, end) for a listed therapist; 422 for a reversed or over-long window."""
    try:
        check_window(start, end)
    except ValueError as exc:
        raise ValidationFailedError(
            f"Invalid time window: {exc}.", errors=[{"field": "to", "location": "query", "message": str(exc)}]
        ) from None
    schedule = await therapists.schedule_of(session, settings, therapist_id)
    return schedule, await _free_starts(session, schedule, start, end, now)


async def _free_by(session: AsyncSession, settings: Settings, therapist: Therapist, day: date, now: datetime) -> bool:
    """A free slot between now and the end of `day` in the therapist's zone (within the booking horizon)."""
    schedule = await therapists.schedule_for(session, settings, Bookable.of(therapist))
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=schedule.tz)
    end = min(end.astimezone(now.tzinfo), now + schedule.policy.horizon + timedelta(minutes=1))
    if end <= now:
        return False
    return bool(await _free_starts(session, schedule, now, end, now))


async def directory(
    session: AsyncSession,
    settings: Settings,
    *,
    specialty: str | None,
    language: str | None,
    min_price: int | None,
    max_price: int | None,
    available_by: date | None,
    cursor: str | None,
    limit: int,
    now: datetime,
) -> tuple[list[Therapist], str | None]:
    """The therapists directory; `available_by` keeps those with a free slot from now to that day's end."""

    async def free_by_then(therapist: Therapist) -> bool:
        assert available_by is not None
        return await _free_by(session, settings, therapist, available_by, now)

    return await therapists.directory(
        session,
        specialty=specialty,
        language=language,
        min_price=min_price,
        max_price=max_price,
        cursor=cursor,
        limit=limit,
        keep=None if available_by is None else free_by_then,
    )


# ---- creating a hold --------------------------------------------------------------------


async def _check_slot(
    session: AsyncSession,
    schedule: therapists.Schedule,
    start: datetime,
    *,
    client_id: uuid.UUID,
    now: datetime,
    excluding: uuid.UUID | None = None,
) -> None:
    """422 unless `start` is one of the therapist's slots; 409 if it is taken or the client is busy then."""
    policy = schedule.policy
    end = start + timedelta(minutes=policy.session_minutes)
    around = await repository.surroundings(
        session,
        therapist_id=schedule.therapist.id,
        client_id=client_id,
        start=start,
        end=end,
        blocks_until=end + timedelta(minutes=policy.buffer_minutes),
        now=now,
        excluding=excluding,
    )
    if around.stale_hold_in_the_way:
        # Mark expired holds now: the exclusion constraints still count them until then.
        await repository.expire_stale_holds(session, now=now, therapist_id=schedule.therapist.id)
        await repository.expire_stale_holds(session, now=now, client_id=client_id)
    busy, clash = around.busy, around.client_clash
    problem = is_bookable(
        start,
        tz=schedule.tz,
        rules=schedule.rules,
        exceptions=schedule.exceptions,
        busy=[Busy(start=b[0], end=b[1]) for b in busy],
        policy=policy,
        now=now,
    )
    if problem == "taken":
        raise SlotTakenError()
    if problem is not None:
        raise SlotNotBookableError(str(problem), _PROBLEM_TEXT.get(str(problem), "This time cannot be booked."))
    if clash:
        raise ClientOverlapError()


async def _schedule_taking_turn(
    session: AsyncSession, settings: Settings, therapist_id: uuid.UUID, client_id: uuid.UUID
) -> tuple[therapists.Schedule, Contact]:
    """The therapist's schedule and the client's contact, with the therapist's write turn taken; 404 if not listed."""
    parties = await repository.parties_taking_turn(session, therapist_id, client_id)
    if parties is None:
        raise NotFoundError("No such therapist.")
    return await therapists.schedule_for(session, settings, parties.therapist), parties.client


async def create_hold(
    session: AsyncSession,
    settings: Settings,
    actor: Actor,
    therapist_id: uuid.UUID,
    starts_at: datetime,
    *,
    client_timezone: str,
    now: datetime,
) -> BookingView:
    """Hold a free slot for BOOKING_HOLD_MINUTES; 409 when it was just taken, 422 when it is not a slot.

    The answer carries both names, read with the therapist's terms: the hot path reads no account again.
    """
    if actor.role is not Role.CLIENT:
        raise ForbiddenError("Only client accounts book sessions.")
    schedule, client = await _schedule_taking_turn(session, settings, therapist_id, actor.user_id)
    policy = schedule.policy
    await _check_slot(session, schedule, starts_at, client_id=actor.user_id, now=now)
    ends_at = starts_at + timedelta(minutes=policy.session_minutes)
    booking = Booking(
        id=uuid.uuid4(),
        therapist_id=therapist_id,
        client_id=actor.user_id,
        starts_at=starts_at,
        ends_at=ends_at,
        blocks_until=ends_at + timedelta(minutes=policy.buffer_minutes),
        status=BookingStatus.HELD,
        hold_expires_at=now + timedelta(minutes=settings.BOOKING_HOLD_MINUTES),
        price_kes=schedule.therapist.price_kes,
        client_timezone=client_timezone,
        therapist_timezone=schedule.therapist.timezone,
        refund_due_kes=0,
        paid_kes=0,
        reschedule_count=0,
        created_at=now,
        updated_at=now,
    )
    await _conflict_to_409(repository.insert_booking(session, booking))
    await queue_email(
        session,
        to=client.email,
        language=client.language,
        template="booking_received",
        context={
            "full_name": client.full_name,
            "other_name": schedule.therapist.full_name,
            "when": i18n.when(starts_at, client_timezone, client.language),
            "hold_minutes": settings.BOOKING_HOLD_MINUTES,
            "link": public_link(settings, f"/bookings/{booking.id}"),
        },
        now=now,
    )
    return BookingView(booking, therapist_name=schedule.therapist.full_name, client_name=client.full_name)


async def _flush_or_conflict(session: AsyncSession) -> None:
    """Flush; an exclusion-constraint refusal (a race another transaction won) becomes a 409."""
    await _conflict_to_409(session.flush())


async def _conflict_to_409(write: Awaitable[None]) -> None:
    """Await a write; an exclusion-constraint refusal (a race another transaction won) becomes a 409.

    No savepoint: the request's whole transaction is rolled back with the error anyway.
    """
    try:
        await write
    except IntegrityError as exc:
        raise (ClientOverlapError() if "client_overlap" in str(exc.orig) else SlotTakenError()) from None
    except DBAPIError as exc:
        # Two bookings of one client with two therapists at once can still wait on each other.
        if getattr(exc.orig, "sqlstate", None) == DEADLOCK or "deadlock detected" in str(exc.orig):
            raise ClientOverlapError() from None
        raise


# ---- reading -------------------------------------------------------------------------------


async def booking_of(session: AsyncSession, user_id: uuid.UUID, booking_id: uuid.UUID) -> Booking:
    """The caller's own booking (as client or therapist); anyone else's is 'not found'."""
    booking = await repository.booking_for(session, booking_id, user_id)
    if booking is None:
        raise NotFoundError("No such booking.")
    return booking


# ---- confirmation and reminders -------------------------------------------------------------------


def _reminders(booking: Booking, now: datetime) -> list[BookingReminder]:
    return [
        BookingReminder(booking_id=booking.id, kind=kind.value, due_at=booking.starts_at - lead)
        for kind, lead, _ in REMINDERS
        if booking.starts_at - lead > now
    ]


def _receipt_line(payment: Payment | None) -> PerReader:
    """What the client paid, for their confirmation email; empty when nothing was paid through the platform."""

    def line(_zone: str, language: Language) -> str:
        if payment is None:
            return ""
        amount = i18n.kes(payment.amount_kes, language)
        if payment.receipt:
            return gettext_in(language)(PAID_WITH_RECEIPT) % {"amount": amount, "receipt": payment.receipt}
        return gettext_in(language)(PAID) % {"amount": amount}

    return line


async def confirm(
    session: AsyncSession,
    settings: Settings,
    booking_id: uuid.UUID,
    *,
    now: datetime,
    audit: AuditContext,
    paid: Payment | None = None,
) -> Booking:
    """Held (unexpired) or pending payment → confirmed; reminders scheduled, both told.

    The payments domain passes the confirmed payment (`paid`): its amount becomes what a
    cancellation can refund, and the client's email states it with the M-Pesa receipt.
    Without it (an administrator), nothing counts as paid through the platform.
    """
    booking = await repository.lock_booking(session, booking_id)
    if booking is None:
        raise NotFoundError("No such booking.")
    if booking.status == BookingStatus.CONFIRMED:
        return booking
    live_hold = booking.status == BookingStatus.HELD and (booking.hold_expires_at or now) > now
    if not (live_hold or booking.status == BookingStatus.PENDING_PAYMENT):
        raise BookingStateError(f"A {booking.status.replace('_', ' ')} booking cannot be confirmed.")
    booking.status = BookingStatus.CONFIRMED
    booking.hold_expires_at = None
    booking.paid_kes = paid.amount_kes if paid is not None else 0
    booking.updated_at = now
    await repository.replace_reminders(session, booking.id, _reminders(booking, now))
    await _tell_both(
        session,
        settings,
        booking,
        "booking_confirmed",
        now=now,
        client_only={"receipt_line": _receipt_line(paid)},
    )
    await record(
        session,
        action="booking.confirmed",
        context=audit,
        now=now,
        target_type="booking",
        target_id=str(booking.id),
        details={"paid_kes": booking.paid_kes},
    )
    return booking


async def send_due_reminders(session: AsyncSession, settings: Settings, *, now: datetime, limit: int = 50) -> int:
    """Queue the reminder emails that are due (in the worker; safe with several workers)."""
    await repository.take_write_lock(session)
    sent = 0
    for reminder, booking in await repository.claim_due_reminders(session, now=now, limit=limit):
        reminder.sent_at = now
        if booking.status != BookingStatus.CONFIRMED or booking.starts_at <= now:
            continue  # a stale reminder is spent, never sent
        lead = next(text for kind, _, text in REMINDERS if kind.value == reminder.kind)
        await _tell_both(session, settings, booking, "booking_reminder", now=now, lead=_words(lead))
        sent += 1
    return sent


# ---- cancel, reschedule, outcome ------------------------------------------------------------------


def paid_kes(booking: Booking) -> int:
    """What the client actually paid for `booking` through the platform, in KES: the most a cancellation refunds.

    Written by `confirm` from the confirmed payment; 0 for a booking an administrator confirmed
    (paid, and settled, outside the platform). Never derived from the status: that promised
    M-Pesa refunds of money nobody had paid.
    """
    return booking.paid_kes


def _cancellation(settings: Settings, booking: Booking, *, by_therapist: bool, now: datetime) -> Cancellation:
    return cancellation(
        paid_kes=paid_kes(booking),
        by_therapist=by_therapist,
        notice=booking.starts_at - now,
        free_hours=settings.BOOKING_FREE_CANCELLATION_HOURS,
    )


async def _cancellable(session: AsyncSession, actor: Actor, booking_id: uuid.UUID, *, lock: bool = False) -> Booking:
    booking = await booking_of(session, actor.user_id, booking_id)
    if lock:
        # A payment may be confirming it at this moment: cancel what is committed, not a stale copy.
        booking = await repository.lock_booking(session, booking.id) or booking
    if not booking.active:
        raise BookingStateError(f"A {booking.status.replace('_', ' ')} booking cannot be cancelled.")
    return booking


async def cancellation_terms(
    session: AsyncSession, settings: Settings, actor: Actor, booking_id: uuid.UUID, *, now: datetime
) -> Cancellation:
    """What cancelling the caller's booking now would refund, and how it would be worded, changing nothing.

    For a page that states the terms before the person confirms: the same rule `cancel` applies.
    """
    booking = await _cancellable(session, actor, booking_id)
    return _cancellation(settings, booking, by_therapist=booking.therapist_id == actor.user_id, now=now)


async def cancel(
    session: AsyncSession,
    settings: Settings,
    actor: Actor,
    booking_id: uuid.UUID,
    *,
    reason: str | None,
    now: datetime,
) -> Booking:
    """Cancel by the client or the therapist following the policy above; both are told."""
    booking = await _cancellable(session, actor, booking_id, lock=True)
    by_therapist = booking.therapist_id == actor.user_id
    outcome = _cancellation(settings, booking, by_therapist=by_therapist, now=now)
    booking.status = BookingStatus.CANCELLED
    booking.cancelled_at = now
    booking.cancelled_by = actor.user_id
    booking.cancel_reason = reason
    booking.refund_due_kes = outcome.refund_kes
    booking.hold_expires_at = None
    booking.updated_at = now
    await repository.replace_reminders(session, booking.id, [])
    await _tell_both(
        session,
        settings,
        booking,
        "booking_cancelled",
        now=now,
        cancelled_by=_words(CANCELLED_BY[by_therapist]),
        refund_note=lambda _zone, language: outcome.note(language),
    )
    # After the emails: a hook may write to the audit log, which serialises writers until the commit.
    for hook in _cancellation_hooks:
        await hook(session, booking, outcome, now, actor.audit)
    await record(
        session,
        action="booking.cancelled",
        context=actor.audit,
        now=now,
        target_type="booking",
        target_id=str(booking.id),
        details={
            "by": "therapist" if by_therapist else "client",
            "paid_kes": outcome.paid_kes,
            "refund_due_kes": outcome.refund_kes,
        },
    )
    return booking


async def reschedule(
    session: AsyncSession,
    settings: Settings,
    actor: Actor,
    booking_id: uuid.UUID,
    starts_at: datetime,
    *,
    now: datetime,
) -> Booking:
    """Move a confirmed booking to another free slot in one step: the old time is freed only if the new one is taken."""
    booking = await booking_of(session, actor.user_id, booking_id)
    if booking.status != BookingStatus.CONFIRMED:
        raise BookingStateError(f"A {booking.status.replace('_', ' ')} booking cannot be rescheduled.")
    by_client = booking.client_id == actor.user_id
    if by_client and booking.starts_at - now < timedelta(hours=settings.BOOKING_FREE_CANCELLATION_HOURS):
        raise BookingStateError(
            f"Sessions can be moved up to {settings.BOOKING_FREE_CANCELLATION_HOURS} hours before they start."
        )
    schedule, _ = await _schedule_taking_turn(session, settings, booking.therapist_id, booking.client_id)
    await _check_slot(session, schedule, starts_at, client_id=booking.client_id, now=now, excluding=booking.id)
    ends_at = starts_at + timedelta(minutes=schedule.policy.session_minutes)
    previous = booking.starts_at
    booking.starts_at = starts_at
    booking.ends_at = ends_at
    booking.blocks_until = ends_at + timedelta(minutes=schedule.policy.buffer_minutes)
    booking.reschedule_count += 1
    booking.updated_at = now
    # One UPDATE: if it loses a race the transaction rolls back, so the old time stays booked.
    await _flush_or_conflict(session)
    await repository.replace_reminders(session, booking.id, _reminders(booking, now))
    await _tell_both(session, settings, booking, "booking_rescheduled", now=now, previous_when=_moment(previous))
    await record(
        session,
        action="booking.rescheduled",
        context=actor.audit,
        now=now,
        target_type="booking",
        target_id=str(booking.id),
        details={"from": previous.isoformat(), "to": starts_at.isoformat()},
    )
    return booking


async def record_outcome(
    session: AsyncSession, actor: Actor, booking_id: uuid.UUID, outcome: BookingStatus, *, now: datetime
) -> Booking:
    """The therapist marks a confirmed session completed or a no-show, once it has ended."""
    booking = await booking_of(session, actor.user_id, booking_id)
    if booking.therapist_id != actor.user_id:
        raise ForbiddenError("Only the session's therapist records how it went.")
    if booking.status != BookingStatus.CONFIRMED:
        raise BookingStateError(f"A {booking.status.replace('_', ' ')} booking has no outcome to record.")
    if now < booking.ends_at:
        raise BookingStateError("Record the outcome after the session's end time.")
    booking.status = outcome
    booking.updated_at = now
    await record(
        session,
        action=f"booking.{outcome.value}",
        context=actor.audit,
        now=now,
        target_type="booking",
        target_id=str(booking.id),
    )
    return booking
