"""The email outbox against a real SMTP server (STARTTLS, verified certificate)
on SQLite and PostgreSQL: written with the transaction, sent once after commit,
retried with backoff, failed when it must, recovered after a sender dies, and
never sent twice by concurrent senders."""

from __future__ import annotations

import asyncio
import json
import stat
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from smilingsteps.app import create_app
from smilingsteps.config import Settings
from smilingsteps.notifications.models import OutboxStatus
from smilingsteps.notifications.repository import OutboxRepository
from smilingsteps.notifications.sender import NO_ATTEMPTS_LEFT, OutboxSender
from smilingsteps.notifications.service import public_link, queue_email
from smilingsteps.notifications.templates import EmailTemplateError
from smilingsteps.platform.clock import utc_from
from smilingsteps.platform.db import Database
from smilingsteps.platform.logging import captured_events
from tests.conftest import SettingsFactory, running
from tests.support.clock import FakeClock
from tests.support.outbox import one_row, outbox_rows
from tests.support.smtp import SmtpServer, running_smtp_server

PUBLIC = "https://app.smilingsteps.example"
FROM_DOMAIN = "smilingsteps.example"
BASE_DELAY = 60.0
MAX_DELAY = 3600.0


@pytest.fixture
def mail_settings(make_settings: SettingsFactory, outbox_url: str, smtp_server: SmtpServer) -> SettingsFactory:
    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "DATABASE_URL": outbox_url,
            "PUBLIC_BASE_URL": PUBLIC,
            "EMAIL_FROM": f"Smiling Steps <no-reply@{FROM_DOMAIN}>",
            "SMTP_HOST": smtp_server.host,
            "SMTP_PORT": smtp_server.port,
            "SMTP_CA_FILE": smtp_server.ca_file,
            "SMTP_USER": smtp_server.username,
            "SMTP_PASSWORD": smtp_server.password,
            "SMTP_TIMEOUT": 10,
            "EMAIL_RETRY_BASE_DELAY": BASE_DELAY,
            "EMAIL_RETRY_MAX_DELAY": MAX_DELAY,
        }
        values.update(overrides)
        return make_settings(**values)

    return factory


@pytest.fixture
def settings(mail_settings: SettingsFactory) -> Settings:
    return mail_settings()


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings)
    assert await database.connect_with_retry(max_retries=0)
    yield database
    await database.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def address(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


async def queue(db: Database, clock: FakeClock, to: str, template: str = "verify_email", **context: Any) -> uuid.UUID:
    values: dict[str, Any] = {
        "full_name": "Amani Wanjiru",
        "link": f"{PUBLIC}/verify-email?token=t0k3n",
        "expires_hours": 48,
    }
    values.update(context)
    async with db.session() as session:
        return await queue_email(session, to=to, template=template, context=values, now=utc_from(clock))


def events_named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [event for event in events if event["event"] == name]


def body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    assert part is not None, f"no text/{subtype} part"
    content = part.get_content()
    assert isinstance(content, str)
    return content


# ---- transactions -----------------------------------------------------------


async def test_a_rolled_back_change_sends_nothing_and_a_committed_one_is_sent_once(
    settings: Settings, db: Database, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    kept, lost = address("kept"), address("lost")

    async def a_change_that_fails() -> None:
        async with db.session() as session:
            await queue_email(
                session, to=lost, template="password_changed", context={"full_name": "Lost"}, now=utc_from(clock)
            )
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError, match="the change failed"):
        await a_change_that_fails()
    outbox_id = await queue(db, clock, kept, full_name="<script>alert('hi')</script> & Co")

    sender = OutboxSender(settings, db, clock=clock)
    with captured_events() as events:
        assert await sender.run_once() == 1
        assert await sender.run_once() == 0

    assert await outbox_rows(db, to=lost) == []
    assert smtp_server.deliveries_to(lost) == []
    [delivery] = smtp_server.deliveries_to(kept)
    assert delivery.tls, "sent in clear text"
    assert delivery.authenticated_as == smtp_server.username
    assert delivery.mail_from == f"no-reply@{FROM_DOMAIN}"
    message = delivery.message
    assert message["Message-ID"] == f"<{outbox_id}@{FROM_DOMAIN}>"
    assert message["Subject"] == "Confirm your email address for Smiling Steps"
    assert message["To"] == kept
    assert message.get_content_type() == "multipart/alternative"
    text, html = body(message, "plain"), body(message, "html")
    assert f"{PUBLIC}/verify-email?token=t0k3n" in text and "48 hours" in text
    assert "<script>alert('hi')</script> & Co" in text
    assert "&lt;script&gt;alert(&#39;hi&#39;)&lt;/script&gt; &amp; Co" in html and "<script" not in html
    assert f'href="{PUBLIC}/verify-email?token=t0k3n"' in html

    row = await one_row(db, kept)
    assert row.status == OutboxStatus.SENT and row.attempts == 1
    assert row.sent_at == utc_from(clock) and row.message_id == message["Message-ID"]
    assert row.body_text is None and row.body_html is None, "single-use links must not stay in the database"
    assert row.subject == message["Subject"]

    [sent] = events_named(events, "email_sent")
    assert sent["outbox_id"] == str(outbox_id) and sent["template"] == "verify_email" and sent["backend"] == "smtp"
    assert kept not in json.dumps(events, default=str)


async def test_a_template_error_raises_when_queued_and_writes_nothing(db: Database, clock: FakeClock) -> None:
    to = address()
    with pytest.raises(EmailTemplateError, match="expires_hours"):
        async with db.session() as session:
            await queue_email(
                session, to=to, template="verify_email", context={"full_name": "A", "link": "x"}, now=utc_from(clock)
            )
    with pytest.raises(EmailTemplateError, match="unknown"):
        async with db.session() as session:
            await queue_email(session, to=to, template="no_such_template", context={}, now=utc_from(clock))
    with pytest.raises(ValueError, match="not an email address"):
        async with db.session() as session:
            await queue_email(
                session, to="a@b.example\r\nBcc: x@y.example", template="password_changed",
                context={"full_name": "A"}, now=utc_from(clock),
            )  # fmt: skip
    assert await outbox_rows(db) == []


# ---- TLS --------------------------------------------------------------------


async def test_an_untrusted_certificate_is_refused_and_the_message_waits_for_a_retry(
    mail_settings: SettingsFactory, db: Database, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    to = address()
    await queue(db, clock, to)
    untrusting = OutboxSender(mail_settings(SMTP_CA_FILE=None), db, clock=clock)
    with captured_events() as events:
        assert await untrusting.run_once() == 0
    assert smtp_server.deliveries_to(to) == []
    row = await one_row(db, to)
    assert row.status == OutboxStatus.PENDING and row.attempts == 1
    assert row.last_error is not None and "CERTIFICATE_VERIFY_FAILED" in row.last_error
    assert events_named(events, "email_deferred")

    clock.advance(BASE_DELAY)
    assert await OutboxSender(mail_settings(), db, clock=clock).run_once() == 1
    assert len(smtp_server.deliveries_to(to)) == 1
    assert (await one_row(db, to)).attempts == 2


async def test_a_server_without_starttls_gets_nothing_in_clear_text(
    mail_settings: SettingsFactory, db: Database, clock: FakeClock, tmp_path: Path
) -> None:
    to = address()
    await queue(db, clock, to)
    with running_smtp_server(tmp_path / "plain", starttls=False) as plain:
        settings = mail_settings(SMTP_HOST=plain.host, SMTP_PORT=plain.port)
        assert await OutboxSender(settings, db, clock=clock).run_once() == 0
        assert plain.deliveries == []
    row = await one_row(db, to)
    assert row.status == OutboxStatus.PENDING and row.last_error is not None and "STARTTLS" in row.last_error


# ---- retries and failures -----------------------------------------------------


async def test_a_temporary_refusal_is_retried_with_exponential_backoff_then_sent(
    settings: Settings, db: Database, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    to = address()
    smtp_server.reply_to(to, "451 4.7.1 Try again later", "451 4.7.1 Try again later")
    await queue(db, clock, to)
    sender = OutboxSender(settings, db, clock=clock)

    for attempt, ceiling in ((1, BASE_DELAY), (2, BASE_DELAY * 2)):
        assert await sender.run_once() == 0
        row = await one_row(db, to)
        assert row.status == OutboxStatus.PENDING and row.attempts == attempt
        assert row.last_error is not None and "451" in row.last_error
        wait = (row.next_attempt_at - utc_from(clock)).total_seconds()
        assert ceiling / 2 <= wait <= ceiling, wait
        assert await sender.run_once() == 0, "retried before its time"
        assert (await one_row(db, to)).attempts == attempt
        clock.advance(ceiling)

    assert await sender.run_once() == 1
    row = await one_row(db, to)
    assert row.status == OutboxStatus.SENT and row.attempts == 3 and row.last_error is None
    assert len(smtp_server.deliveries_to(to)) == 1


async def test_a_permanent_refusal_fails_at_once(
    settings: Settings, db: Database, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    to = address()
    smtp_server.always_reply_to(to, "550 5.1.1 Mailbox does not exist")
    await queue(db, clock, to)
    sender = OutboxSender(settings, db, clock=clock)
    with captured_events() as events:
        assert await sender.run_once() == 0
    row = await one_row(db, to)
    assert row.status == OutboxStatus.FAILED and row.attempts == 1
    assert row.last_error is not None and "550" in row.last_error
    [failed] = events_named(events, "email_failed")
    assert failed["level"] == "error" and failed["permanent"] is True and failed["template"] == "verify_email"

    clock.advance(MAX_DELAY * 10)
    assert await sender.run_once() == 0
    assert (await one_row(db, to)).attempts == 1
    assert smtp_server.deliveries_to(to) == []


async def test_a_message_fails_after_its_last_attempt(
    mail_settings: SettingsFactory, db: Database, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    to = address()
    smtp_server.always_reply_to(to, "421 4.3.2 Service shutting down")
    await queue(db, clock, to)
    sender = OutboxSender(mail_settings(EMAIL_MAX_ATTEMPTS=3), db, clock=clock)
    with captured_events() as events:
        for _ in range(3):
            assert await sender.run_once() == 0
            clock.advance(MAX_DELAY)
        assert await sender.run_once() == 0
    row = await one_row(db, to)
    assert row.status == OutboxStatus.FAILED and row.attempts == 3
    assert len(events_named(events, "email_deferred")) == 2
    [failed] = events_named(events, "email_failed")
    assert failed["attempts"] == 3 and failed["permanent"] is False


# ---- a sender that dies -----------------------------------------------------


async def test_a_claim_whose_lease_expired_is_taken_over_and_the_old_owner_cannot_record(
    settings: Settings, db: Database, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    to = address()
    outbox_id = await queue(db, clock, to)
    now = utc_from(clock)
    async with db.session() as session:  # a sender claims it, then dies before sending
        [claimed] = await OutboxRepository(session).claim_due(
            now=now, token="dead:1/abc", lease_until=now + timedelta(seconds=600), limit=10, max_attempts=8
        )
    assert claimed.id == outbox_id

    sender = OutboxSender(settings, db, clock=clock)
    assert await sender.run_once() == 0, "taken while the lease holds"
    clock.advance(600)
    assert await sender.run_once() == 1
    [delivery] = smtp_server.deliveries_to(to)
    assert delivery.message["Message-ID"] == f"<{outbox_id}@{FROM_DOMAIN}>"
    async with db.session() as session:
        late = await OutboxRepository(session).mark_sent(
            outbox_id, "dead:1/abc", now=utc_from(clock), rfc_message_id="<x@y>"
        )
    assert late is False
    row = await one_row(db, to)
    assert row.status == OutboxStatus.SENT and row.attempts == 2 and row.message_id == f"<{outbox_id}@{FROM_DOMAIN}>"


async def test_a_sender_dying_during_the_last_attempt_fails_the_message(
    mail_settings: SettingsFactory, db: Database, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    to = address()
    await queue(db, clock, to)
    now = utc_from(clock)
    async with db.session() as session:
        await OutboxRepository(session).claim_due(
            now=now, token="dead:2/abc", lease_until=now + timedelta(seconds=60), limit=10, max_attempts=1
        )
    clock.advance(61)
    with captured_events() as events:
        assert await OutboxSender(mail_settings(EMAIL_MAX_ATTEMPTS=1), db, clock=clock).run_once() == 0
    row = await one_row(db, to)
    assert row.status == OutboxStatus.FAILED and row.last_error == NO_ATTEMPTS_LEFT
    assert events_named(events, "email_failed")
    assert smtp_server.deliveries_to(to) == []


async def test_stopping_hands_the_unsent_rest_of_a_batch_back(
    settings: Settings, db: Database, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    tag = f"stop{uuid.uuid4().hex[:8]}"
    recipients = [f"{tag}-{index}@example.com" for index in range(5)]
    for to in recipients:
        await queue(db, clock, to)
    stop = asyncio.Event()

    class StopAfterFirst:
        """The real SMTP backend; asks the sender to stop once the first message went out."""

        def __init__(self, inner: Any) -> None:
            self.inner, self.name = inner, inner.name

        def session(self) -> Any:
            inner_session = self.inner.session()

            class Wrapped:
                async def __aenter__(self) -> Any:
                    mail = await inner_session.__aenter__()

                    class Send:
                        async def send(self, message: EmailMessage) -> None:
                            await mail.send(message)
                            stop.set()

                    return Send()

                async def __aexit__(self, *exc: object) -> None:
                    await inner_session.__aexit__(*exc)

            return Wrapped()

    sender = OutboxSender(settings, db, clock=clock)
    sender.backend = StopAfterFirst(sender.backend)
    assert await sender.process_due(stop) == 1
    rows = [await one_row(db, to) for to in recipients]
    assert Counter(row.status for row in rows) == {OutboxStatus.SENT: 1, OutboxStatus.PENDING: 4}
    assert all(row.attempts == 0 and row.claimed_by is None for row in rows if row.status == OutboxStatus.PENDING)
    assert await OutboxSender(settings, db, clock=clock).run_once() == 4
    assert sum(len(smtp_server.deliveries_to(to)) for to in recipients) == 5


# ---- concurrency --------------------------------------------------------------


async def test_two_senders_running_concurrently_send_each_message_exactly_once(
    mail_settings: SettingsFactory, db: Database, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    tag = f"race{uuid.uuid4().hex[:8]}"
    recipients = [f"{tag}-{index}@example.com" for index in range(200)]
    async with db.session() as session:
        for to in recipients:
            await queue_email(
                session, to=to, template="password_changed", context={"full_name": to}, now=utc_from(clock)
            )
    settings = mail_settings(EMAIL_BATCH_SIZE=7)
    other_db = Database(settings)  # a second pool: as another worker process would have
    try:
        assert await other_db.connect_with_retry(max_retries=0)
        first = OutboxSender(settings, db, clock=clock)
        second = OutboxSender(settings, other_db, clock=clock)
        with captured_events() as events:
            counts = await asyncio.gather(first.run_once(), second.run_once())
    finally:
        await other_db.dispose()

    assert sum(counts) == 200 and min(counts) > 0, counts
    delivered = Counter(to for d in smtp_server.deliveries if tag in d.rcpt_tos[0] for to in d.rcpt_tos)
    assert set(delivered) == set(recipients)
    assert max(delivered.values()) == 1, [to for to, n in delivered.items() if n > 1]
    assert {row.status for row in await outbox_rows(db)} == {OutboxStatus.SENT}
    assert not events_named(events, "email_claim_lost")


# ---- the file outbox ------------------------------------------------------------


async def test_the_file_backend_writes_one_parseable_eml_with_both_parts_and_public_links(
    mail_settings: SettingsFactory, db: Database, clock: FakeClock, tmp_path: Path
) -> None:
    mail_dir = tmp_path / "mail"
    settings = mail_settings(SMTP_HOST=None, EMAIL_FILE_DIR=mail_dir)
    assert settings.email_backend == "file"
    to = address()
    link = public_link(settings, "/reset-password", token="a&b c")
    assert link == f"{PUBLIC}/reset-password?token=a%26b+c"
    outbox_id = await queue(db, clock, to, template="password_reset", full_name="Baraka", link=link, expires_minutes=30)

    sender = OutboxSender(settings, db, clock=clock)
    assert await sender.run_once() == 1
    [path] = list(mail_dir.iterdir())
    assert path.name == f"{outbox_id}.eml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(message, EmailMessage)
    assert message.get_content_type() == "multipart/alternative"
    assert message["To"] == to and message["Message-ID"] == f"<{outbox_id}@{FROM_DOMAIN}>"
    assert message["Subject"] == "Reset your Smiling Steps password"
    assert link in body(message, "plain") and "30 minutes" in body(message, "plain")
    assert f'href="{PUBLIC}/reset-password?token=a%26b+c"' in body(message, "html")
    assert (await one_row(db, to)).status == OutboxStatus.SENT


# ---- the in-process sender -------------------------------------------------------


async def test_the_app_sends_mail_itself_when_the_in_process_sender_is_on(
    make_settings: SettingsFactory, database_url: str, smtp_server: SmtpServer
) -> None:
    settings = make_settings(
        DATABASE_URL=database_url,  # the fully migrated schema the app needs
        EMAIL_IN_PROCESS_SENDER=True,
        WORKER_POLL_INTERVAL=0.05,
        SMTP_HOST=smtp_server.host,
        SMTP_PORT=smtp_server.port,
        SMTP_CA_FILE=smtp_server.ca_file,
    )
    to = address("inproc")
    app = create_app(settings)
    async with running(app):
        runtime = app.state.runtime
        async with runtime.db.session() as session:
            await queue_email(
                session, to=to, template="password_changed", context={"full_name": "Zawadi"}, now=runtime.now()
            )
        [message] = await smtp_server.wait_for(to)
    assert "Zawadi" in body(message, "plain")


def test_the_in_process_sender_is_on_only_in_development(make_settings: Callable[..., Settings]) -> None:
    assert make_settings(APP_ENV="development").email_in_process_sender is True
    assert make_settings(APP_ENV="test").email_in_process_sender is False
    assert make_settings(APP_ENV="test", EMAIL_IN_PROCESS_SENDER=True).email_in_process_sender is True
