"""The therapist's private session notes: encrypted at rest, theirs alone, every read and write audited."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.audit.service import record
from smilingsteps.bookings import repository
from smilingsteps.bookings.models import Booking, SessionNote
from smilingsteps.bookings.service import Actor
from smilingsteps.platform.crypto import Encryptor
from smilingsteps.platform.errors import NotFoundError


async def _own_session(session: AsyncSession, actor: Actor, booking_id: uuid.UUID) -> Booking:
    """Notes belong to the booking's therapist alone: the client and admins get 'not found'."""
    booking = await repository.booking_for(session, booking_id, actor.user_id)
    if booking is None or booking.therapist_id != actor.user_id:
        raise NotFoundError("No such booking.")
    return booking


async def write_note(
    session: AsyncSession, encryptor: Encryptor, actor: Actor, booking_id: uuid.UUID, text: str, *, now: datetime
) -> None:
    booking = await _own_session(session, actor, booking_id)
    note = await repository.note_for(session, booking.id, actor.user_id)
    if note is None:
        note = SessionNote(booking_id=booking.id, therapist_id=actor.user_id, created_at=now)
        session.add(note)
    note.ciphertext = encryptor.encrypt(text)
    note.updated_at = now
    await record(
        session, action="note.written", context=actor.audit, now=now, target_type="booking", target_id=str(booking.id)
    )


async def read_note(
    session: AsyncSession, encryptor: Encryptor, actor: Actor, booking_id: uuid.UUID, *, now: datetime
) -> tuple[str, datetime | None]:
    """The note's text (empty when none yet); every read is in the audit log."""
    booking = await _own_session(session, actor, booking_id)
    note = await repository.note_for(session, booking.id, actor.user_id)
    await record(
        session, action="note.read", context=actor.audit, now=now, target_type="booking", target_id=str(booking.id)
    )
    if note is None:
        return "", None
    return encryptor.decrypt(note.ciphertext), note.updated_at
