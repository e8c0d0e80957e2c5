"""Password rules and argon2id hashing.

Hashing is CPU- and memory-heavy on purpose, so it runs in a worker thread
(never on the event loop) behind a semaphore that bounds how many hashes, and
how much memory, a flood of logins can use at once.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import secrets
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
MAX_LENGTH = 128
_TRAILING_NOISE = re.compile(r"[\d\W_]+$")
_LEADING_NOISE = re.compile(r"^[\d\W_]+")


@cache
def common_passwords() -> frozenset[str]:
    """The common-password list shipped in the package (Django's 20,000; see data/NOTICE)."""
    raw = resources.files("smilingsteps.accounts").joinpath("data/common-passwords.txt.gz").read_bytes()
    return frozenset(line.strip().lower() for line in gzip.decompress(raw).decode().splitlines() if line.strip())


def _variants(password: str) -> set[str]:
    """The password with the decorations people add to a common word stripped off."""
    lowered = password.lower()
    core = _LEADING_NOISE.sub("", _TRAILING_NOISE.sub("", lowered))
    variants = {lowered, lowered.replace(" ", ""), core}
    for size in range(1, len(core) // 2 + 1):
        if len(core) % size == 0 and core[:size] * (len(core) // size) == core:
            variants.add(core[:size])  # "passwordpassword" -> "password"
            break
    return {variant for variant in variants if variant}


def password_problem(password: str, *, personal: tuple[str, ...] = ()) -> str | None:
    """The first rule `password` breaks, in words for the user, or None when it is acceptable."""
    length = len(unicodedata.normalize("NFC", password))
    if length < MIN_LENGTH:
        return f"must be at least {MIN_LENGTH} characters long"
    if length > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters long"
    if len(set(password)) < 4:
        return "uses too few different characters"
    if _variants(password) & common_passwords():
        return "is too common; choose a less predictable password (a few unrelated words work well)"
    lowered = password.lower()
    for word in (w.lower().strip() for w in personal):
        if len(word) >= 4 and word in lowered:
            return "must not contain your name or email address"
    return None


@dataclass(frozen=True)
class HashParameters:
    time_cost: int
    memory_kib: int
    parallelism: int


class PasswordHasher:
    """argon2id with the configured cost; verification also says when a hash needs upgrading."""

    def __init__(self, parameters: HashParameters, *, max_concurrent: int = 4) -> None:
        self.parameters = parameters
        self._hasher = argon2.PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            type=argon2.Type.ID,
        )
        self._slots = asyncio.Semaphore(max_concurrent)
        self._dummy_hash: str | None = None

    def warm_up(self) -> str:
        """The hash that stands in for a missing account, made once (one full hash; at start-up).

        It is compared against when the account does not exist, so the answer takes as long.
        """
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(24))
        return self._dummy_hash

    def hash_sync(self, password: str) -> str:
        return self._hasher.hash(password)

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    def _verify(self, stored: str | None, password: str) -> tuple[bool, bool]:
        try:
            self._hasher.verify(stored if stored is not None else self.warm_up(), password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False, False
        if stored is None:
            return False, False
        return True, self._hasher.check_needs_rehash(stored)

    async def verify(self, stored: str | None, password: str) -> tuple[bool, bool]:
        """(matches, needs_rehash). `stored=None` (no such account) costs the same and never matches."""
        async with self._slots:
            return await asyncio.to_thread(self._verify, stored, password)
