"""Where sent mail goes: an SMTP server (production) or `.eml` files (the embedded default).

A backend opens a `MailSession` per batch (one SMTP connection for many
messages) and raises `PermanentMailError` when the server refuses a message for
good (5xx to the recipient or the content), `TransientMailError` when trying
again later may work (4xx, a dropped connection, a timeout), and
`MailServerUnavailableError` when nothing can be sent right now (cannot
connect, TLS or login fails): then the sender stops the batch.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Protocol

import aiosmtplib

from smilingsteps.config import Settings
from smilingsteps.platform.logging import mask_text


class MailDeliveryError(Exception):
    """A message was not delivered; `str(error)` is short and safe to store."""

    permanent = False


class TransientMailError(MailDeliveryError):
    """Trying again later may work."""


class MailServerUnavailableError(TransientMailError):
    """No message can be sent now: the server cannot be reached, TLS or login failed."""


class PermanentMailError(MailDeliveryError):
    """The server refused this message for good."""

    permanent = True


class MailSession(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class MailBackend(Protocol):
    name: str

    def session(self) -> AbstractAsyncContextManager[MailSession]: ...


def sender_domain(settings: Settings) -> str:
    """The domain of EMAIL_FROM (`Name <user@domain>` or `user@domain`)."""
    return parseaddr(settings.EMAIL_FROM)[1].rpartition("@")[2] or "localhost"


def rfc_message_id(outbox_id: object, settings: Settings) -> str:
    """The Message-ID of an outbox message: the same on every attempt."""
    return f"<{outbox_id}@{sender_domain(settings)}>"


def compose(
    settings: Settings,
    *,
    to: str,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    date: datetime,
) -> EmailMessage:
    """An RFC 5322 message, multipart/alternative with the text part first."""
    message = EmailMessage()
    message["From"] = settings.EMAIL_FROM
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    # Tells mail servers and autoresponders this is machine-generated (RFC 3834).
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def _short(text: str, limit: int = 300) -> str:
    """Server replies can echo the recipient; mask addresses and keep it short."""
    return mask_text(" ".join(text.split()))[:limit]


# ---- SMTP -----------------------------------------------------------------


def smtp_tls_context(settings: Settings) -> ssl.SSLContext:
    """System CAs plus SMTP_CA_FILE; certificates and host names are always verified."""
    context = ssl.create_default_context()
    if settings.SMTP_CA_FILE is not None:
        context.load_verify_locations(cafile=str(settings.SMTP_CA_FILE))
    return context


def classify_smtp_error(exc: BaseException) -> MailDeliveryError:
    """Map what aiosmtplib raised while sending one message to permanent or transient."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refusal.code for refusal in exc.recipients]
        detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        if codes and all(500 <= code < 600 for code in codes):
            return PermanentMailError(_short(f"recipient refused: {detail}"))
        return TransientMailError(_short(f"recipient deferred: {detail}"))
    if isinstance(exc, aiosmtplib.SMTPSenderRefused | aiosmtplib.SMTPAuthenticationError | aiosmtplib.SMTPHeloError):
        # About our account or sender address, not this message: every message would fail.
        return MailServerUnavailableError(_short(f"{type(exc).__name__}: {exc.code} {exc.message}"))
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        error = f"{type(exc).__name__}: {exc.code} {exc.message}"
        if 500 <= exc.code < 600:
            return PermanentMailError(_short(error))
        return TransientMailError(_short(error))
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError | ConnectionError):
        return MailServerUnavailableError(_short(f"{type(exc).__name__}: {exc}"))
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError | OSError):
        return MailServerUnavailableError(_short(f"{type(exc).__name__}: {exc}"))
    return TransientMailError(_short(f"{type(exc).__name__}: {exc}"))


class SmtpSession:
    """One connection reused for a batch; reconnects after the server drops it."""

    def __init__(self, settings: Settings, tls_context: ssl.SSLContext) -> None:
        self.settings = settings
        self.tls_context = tls_context
        self.client: aiosmtplib.SMTP | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        settings = self.settings
        client = aiosmtplib.SMTP(
            hostname=settings.SMTP_HOST,
            port=settings.SMTP_PORT,
            username=settings.SMTP_USER,
            password=settings.SMTP_PASSWORD.get_secret_value() if settings.SMTP_PASSWORD else None,
            timeout=settings.SMTP_TIMEOUT,
            # True: STARTTLS is required (never an opportunistic fallback to clear text).
            start_tls=settings.SMTP_STARTTLS,
            validate_certs=True,
            tls_context=self.tls_context,
        )
        try:
            # Connects, says EHLO, upgrades with STARTTLS and logs in.
            await client.connect()
        except Exception as exc:
            client.close()
            raise MailServerUnavailableError(_short(f"cannot connect: {type(exc).__name__}: {exc}")) from exc
        return client

    async def send(self, message: EmailMessage) -> None:
        if self.client is None or not self.client.is_connected:
            self.client = await self._connect()
        try:
            await self.client.send_message(message)
        except Exception as exc:
            error = classify_smtp_error(exc)
            if isinstance(error, MailServerUnavailableError) or not self.client.is_connected:
                self.client.close()
                self.client = None
            raise error from exc

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is None or not client.is_connected:
            return
        try:
            await client.quit()
        except Exception:
            # The messages are already accepted; a failed goodbye changes nothing.
            client.close()


class SmtpBackend:
    name = "smtp"

    def __init__(self, settings: Settings) -> None:
        if not settings.SMTP_HOST:
            raise ValueError("the smtp email backend needs SMTP_HOST")
        self.settings = settings
        self.tls_context = smtp_tls_context(settings)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[MailSession]:
        session = SmtpSession(self.settings, self.tls_context)
        try:
            yield session
        finally:
            await session.close()


# ---- file outbox ----------------------------------------------------------


class FileSession:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: EmailMessage) -> None:
        try:
            await asyncio.to_thread(write_eml, self.directory, message)
        except OSError as exc:
            raise MailServerUnavailableError(_short(f"cannot write the mail file: {type(exc).__name__}")) from exc


def eml_name(message: EmailMessage) -> str:
    """`<outbox id@domain>` -> `outbox-id.eml`: a resend overwrites rather than duplicates."""
    local = str(message["Message-ID"]).strip("<>").split("@", 1)[0]
    safe = "".join(char for char in local if char.isalnum() or char in "-_")
    return f"{safe or 'message'}.eml"


def write_eml(directory: Path, message: EmailMessage) -> Path:
    """Write atomically (temporary file, fsync, rename), readable by the owner only: links are secrets."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = directory / eml_name(message)
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(message.as_bytes())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


class FileBackend:
    """The embedded default: each message becomes an `.eml` file (open it in any mail client)."""

    name = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @asynccontextmanager
    async def session(self) -> AsyncIterator[MailSession]:
        yield FileSession(self.directory)


def build_backend(settings: Settings) -> MailBackend:
    if settings.email_backend == "smtp":
        return SmtpBackend(settings)
    return FileBackend(settings.email_file_dir)
