"""A real SMTP server for the tests: aiosmtpd on 127.0.0.1 in a thread of this
process, STARTTLS required, with a certificate for localhost/127.0.0.1 signed
by a throwaway CA (`ca_file`), optional AUTH, and scripted refusals per
recipient. Every accepted message is parsed into an `EmailMessage`."""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.postgres import free_port

USERNAME = "smilingsteps"
PASSWORD = "smtp-test-password"


@dataclass(frozen=True)
class Certificates:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(directory: Path, *, ca_name: str = "Smiling Steps test CA") -> Certificates:
    """A CA and a server certificate (localhost, 127.0.0.1) it signed, as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name))
        .issuer_name(_name(ca_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@dataclass(frozen=True)
class Hold:
    """Keeps the reply to DATA for one recipient until released: a message in flight."""

    arrived: threading.Event
    release: threading.Event


@dataclass(frozen=True)
class Delivery:
    message: EmailMessage
    mail_from: str
    rcpt_tos: tuple[str, ...]
    tls: bool
    authenticated_as: str | None


def client_settings(server: SmtpServer) -> dict[str, Any]:
    """The Settings fields that make the app send through `server` (STARTTLS, its CA, AUTH)."""
    return {
        "SMTP_HOST": server.host,
        "SMTP_PORT": server.port,
        "SMTP_CA_FILE": server.ca_file,
        "SMTP_USER": server.username,
        "SMTP_PASSWORD": server.password,
    }


class SmtpServer:
    """What the server saw. Refusals are scripted per recipient with `reply_to`."""

    def __init__(self, certificates: Certificates, *, starttls: bool = True) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.ca_file = certificates.ca_file
        self.username = USERNAME
        self.password = PASSWORD
        self.deliveries: list[Delivery] = []
        self._replies: dict[str, list[str]] = {}
        self._always: dict[str, str] = {}
        self._holds: dict[str, Hold] = {}
        self._changed = threading.Condition()
        context = None
        if starttls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(certificates.cert_file), str(certificates.key_file))
        self._controller = Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            server_hostname="localhost",
            tls_context=context,
            require_starttls=starttls,
            authenticator=self._authenticate,
            auth_require_tls=True,
            ready_timeout=10,
        )

    @property
    def messages(self) -> list[EmailMessage]:
        with self._changed:
            return [delivery.message for delivery in self.deliveries]

    def messages_to(self, address: str) -> list[EmailMessage]:
        with self._changed:
            return [d.message for d in self.deliveries if address in d.rcpt_tos]

    def deliveries_to(self, address: str) -> list[Delivery]:
        with self._changed:
            return [d for d in self.deliveries if address in d.rcpt_tos]

    def reply_to(self, address: str, *replies: str) -> None:
        """Answer RCPT for `address` with `replies`, one per attempt, then accept."""
        with self._changed:
            self._replies[address] = list(replies)

    def always_reply_to(self, address: str, reply: str) -> None:
        with self._changed:
            self._always[address] = reply

    def hold(self, address: str) -> Hold:
        """Keep the next message to `address` in flight (DATA unanswered) until `release` is set."""
        hold = Hold(threading.Event(), threading.Event())
        with self._changed:
            self._holds[address] = hold
        return hold

    def _hold_for(self, addresses: tuple[str, ...]) -> Hold | None:
        with self._changed:
            for address in addresses:
                if address in self._holds:
                    return self._holds.pop(address)
        return None

    async def wait_for(self, address: str, count: int = 1, *, timeout: float = 15) -> list[EmailMessage]:
        """Wait until `count` messages to `address` arrived (a bound against hangs, not a delay)."""

        def wait() -> bool:
            with self._changed:
                return self._changed.wait_for(
                    lambda: sum(address in d.rcpt_tos for d in self.deliveries) >= count, timeout
                )

        assert await asyncio.to_thread(wait), f"{count} message(s) to {address} did not arrive"
        return self.messages_to(address)

    def _scripted_reply(self, address: str) -> str | None:
        with self._changed:
            if address in self._always:
                return self._always[address]
            replies = self._replies.get(address)
            if replies:
                return replies.pop(0)
        return None

    def _record(self, delivery: Delivery) -> None:
        with self._changed:
            self.deliveries.append(delivery)
            self._changed.notify_all()

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.username
            and auth_data.password.decode() == self.password
        )
        return AuthResult(success=ok, auth_data=auth_data.login.decode() if ok else None)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.server._scripted_reply(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        hold = self.server._hold_for(tuple(envelope.rcpt_tos))
        if hold is not None:
            hold.arrived.set()
            await asyncio.to_thread(hold.release.wait, 60)
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.server._record(
            Delivery(
                message=message,
                mail_from=envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                tls=session.ssl is not None,
                authenticated_as=session.auth_data if session.authenticated else None,
            )
        )
        return "250 Message accepted for delivery"


@contextmanager
def running_smtp_server(directory: Path, *, starttls: bool = True) -> Iterator[SmtpServer]:
    """`starttls=False`: a server that offers no STARTTLS (nothing may be sent to it)."""
    server = SmtpServer(make_certificates(directory), starttls=starttls)
    server.start()
    try:
        yield server
    finally:
        server.stop()
