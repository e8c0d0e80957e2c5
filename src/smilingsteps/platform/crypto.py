"""Keys derived from SECRET_KEY for one purpose each, and encryption of data at rest."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


def derive_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for `purpose`: a leak of one derived key exposes no other."""
    return hmac.new(secret.encode(), f"smilingsteps/{purpose}".encode(), hashlib.sha256).digest()


def token_hash(token: str) -> str:
    """What is stored for an opaque token; tokens carry ≥128 random bits, so a fast hash suffices."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(nbytes: int = 32) -> str:
    """An opaque token from the OS CSPRNG (256 bits by default)."""
    return secrets.token_urlsafe(nbytes)


class DecryptionError(Exception):
    """Stored ciphertext that none of the configured keys opens."""


class Encryptor:
    """Fernet (AES-128-CBC + HMAC-SHA256); the first key encrypts, every key decrypts (rotation)."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    @classmethod
    def from_secret(cls, secret: str) -> Encryptor:
        return cls([base64.urlsafe_b64encode(derive_key(secret, "data-encryption"))])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise DecryptionError("no configured key decrypts this value") from exc
