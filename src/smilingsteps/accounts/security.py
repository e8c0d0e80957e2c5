"""The accounts toolkit one app instance shares: hasher, token codec, data encryption, revocations.

It is the accounts domain's part of the runtime (`Runtime.part(AuthKit)`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from smilingsteps.accounts.passwords import HashParameters, PasswordHasher, common_passwords
from smilingsteps.accounts.revocations import RevokedSessions
from smilingsteps.accounts.tokens import TokenCodec
from smilingsteps.config import Settings
from smilingsteps.platform.crypto import Encryptor
from smilingsteps.platform.runtime import Runtime

MFA_CHALLENGE_TTL = timedelta(minutes=5)


@dataclass
class AuthKit:
    settings: Settings
    hasher: PasswordHasher
    codec: TokenCodec
    encryptor: Encryptor
    revoked: RevokedSessions

    async def start(self, runtime: Runtime) -> None:
        """Warm up off the event loop, then keep this instance's revocation set in step with the others."""
        await asyncio.to_thread(self.warm_up)
        runtime.tasks.spawn(
            self.revoked.run(runtime.db, runtime.now, self.settings.SESSION_REVOCATION_SYNC_SECONDS),
            name="session-revocation-sync",
        )

    async def stop(self) -> None:
        """Nothing to release: the revocation sync is one of the runtime's tasks."""

    def warm_up(self) -> None:
        """Start-up work, so no request pays it: the dummy hash and the common-password list."""
        self.hasher.warm_up()
        common_passwords()

    @property
    def access_ttl(self) -> timedelta:
        # An access token never outlives the idle timeout it would otherwise bypass.
        return timedelta(
            minutes=min(self.settings.ACCESS_TOKEN_TTL_MINUTES, self.settings.SESSION_IDLE_TIMEOUT_MINUTES)
        )

    @property
    def idle_timeout(self) -> timedelta:
        return timedelta(minutes=self.settings.SESSION_IDLE_TIMEOUT_MINUTES)

    @property
    def session_lifetime(self) -> timedelta:
        return timedelta(hours=self.settings.SESSION_ABSOLUTE_LIFETIME_HOURS)

    @property
    def secure_cookies(self) -> bool:
        return self.settings.PUBLIC_BASE_URL.startswith("https://")


def auth_kit_of(runtime: Runtime) -> AuthKit:
    return runtime.part(AuthKit)


def install(runtime: Runtime) -> AuthKit:
    """Build the toolkit for `runtime` and make it the runtime's accounts part."""
    kit = build_auth_kit(runtime.settings, runtime.encryptor)
    runtime.add_part(kit)
    return kit


def build_auth_kit(settings: Settings, encryptor: Encryptor) -> AuthKit:
    return AuthKit(
        settings=settings,
        hasher=PasswordHasher(
            HashParameters(settings.ARGON2_TIME_COST, settings.ARGON2_MEMORY_KIB, settings.ARGON2_PARALLELISM),
            max_concurrent=settings.ARGON2_MAX_CONCURRENT,
        ),
        codec=TokenCodec(settings.secret_key, issuer=settings.PUBLIC_BASE_URL),
        encryptor=encryptor,
        revoked=RevokedSessions(keep_for=timedelta(minutes=settings.ACCESS_TOKEN_TTL_MINUTES)),
    )
