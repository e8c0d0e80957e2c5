"""Access tokens (JWT), MFA challenges and CSRF tokens.

Access tokens are HS256 JWTs with a key derived from SECRET_KEY. Decoding
allows exactly one algorithm and requires every registered claim we rely on,
so `alg: none`, HS/RS confusion, foreign keys, wrong audiences and expired
tokens all fail the same way. Header fields that point at keys (`jku`, `x5u`,
`jwk`, `kid`) are never consulted.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt

from smilingsteps.platform.cache import BoundedLru
from smilingsteps.platform.crypto import derive_key

ALGORITHM = "HS256"
AUDIENCE = "smilingsteps-api"
ACCESS = "access"
MFA_CHALLENGE = "mfa-challenge"
_REQUIRED = ["exp", "iat", "aud", "iss", "sub", "typ", "jti"]
VERIFIED_CACHE_SIZE = 4096


class InvalidTokenError(Exception):
    """The token is not one we issued, or no longer valid; the reason is for logs only."""


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    role: str
    email_verified: bool
    mfa: bool
    expires_at: int


class TokenCodec:
    def __init__(self, secret: str, *, issuer: str) -> None:
        self._key = derive_key(secret, "jwt")
        self._csrf_key = derive_key(secret, "csrf")
        self.issuer = issuer
        # PyJWT's decode costs tens of microseconds; most requests repeat a token.
        self._verified: BoundedLru[str, AccessClaims] = BoundedLru(VERIFIED_CACHE_SIZE)

    def _encode(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"typ": "JWT"})

    def _decode(self, token: str, *, typ: str, now: datetime) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=self.issuer,
                options={"require": _REQUIRED, "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(type(exc).__name__) from None
        # Time is checked against the injected clock, not the machine's.
        stamp = now.timestamp()
        if not isinstance(claims["exp"], int) or claims["exp"] <= stamp:
            raise InvalidTokenError("expired")
        if not isinstance(claims["iat"], int) or claims["iat"] > stamp + 30:
            raise InvalidTokenError("issued in the future")
        if claims["typ"] != typ:
            raise InvalidTokenError("wrong token type")
        return claims

    def issue_access(
        self,
        *,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        role: str,
        email_verified: bool,
        mfa: bool,
        now: datetime,
        expires_at: datetime,
    ) -> str:
        return self._encode(
            {
                "iss": self.issuer,
                "aud": AUDIENCE,
                "sub": str(user_id),
                "sid": str(session_id),
                "typ": ACCESS,
                "jti": secrets.token_urlsafe(12),
                "iat": int(now.timestamp()),
                "exp": int(expires_at.timestamp()),
                "role": role,
                "ver": email_verified,
                "mfa": mfa,
            }
        )

    def decode_access(self, token: str, *, now: datetime) -> AccessClaims:
        """Verified claims of an access token; a token verified before is only checked for expiry.

        The cache holds exact token strings whose signature and claims already
        passed, so a hit can be trusted; revocation is checked by the caller.
        """
        cached = self._verified.get(token)
        if cached is not None:
            if cached.expires_at <= now.timestamp():
                raise InvalidTokenError("expired")
            return cached
        claims = self._decode(token, typ=ACCESS, now=now)
        try:
            decoded = AccessClaims(
                user_id=uuid.UUID(claims["sub"]),
                session_id=uuid.UUID(claims["sid"]),
                role=str(claims["role"]),
                email_verified=claims["ver"] is True,
                mfa=claims["mfa"] is True,
                expires_at=claims["exp"],
            )
        except (KeyError, ValueError, TypeError):
            raise InvalidTokenError("malformed claims") from None
        self._verified.put(token, decoded)
        return decoded

    def issue_mfa_challenge(self, *, user_id: uuid.UUID, now: datetime, ttl: timedelta) -> str:
        """Proof that the password step passed; grants nothing but the second step."""
        return self._encode(
            {
                "iss": self.issuer,
                "aud": AUDIENCE,
                "sub": str(user_id),
                "typ": MFA_CHALLENGE,
                "jti": secrets.token_urlsafe(12),
                "iat": int(now.timestamp()),
                "exp": int((now + ttl).timestamp()),
            }
        )

    def decode_mfa_challenge(self, token: str, *, now: datetime) -> uuid.UUID:
        claims = self._decode(token, typ=MFA_CHALLENGE, now=now)
        try:
            return uuid.UUID(claims["sub"])
        except ValueError:
            raise InvalidTokenError("malformed subject") from None

    # CSRF: double-submit, with the token bound to the session by an HMAC so a
    # cookie planted by a sibling site cannot be paired with a header it chose.
    def csrf_token(self, session_id: uuid.UUID) -> str:
        nonce = secrets.token_urlsafe(16)
        return f"{nonce}.{self._csrf_mac(session_id, nonce)}"

    def csrf_valid(self, token: str, session_id: uuid.UUID) -> bool:
        nonce, _, mac = token.partition(".")
        if not nonce or not mac:
            return False
        return hmac.compare_digest(mac, self._csrf_mac(session_id, nonce))

    def _csrf_mac(self, session_id: uuid.UUID, nonce: str) -> str:
        return hmac.new(self._csrf_key, f"{session_id}:{nonce}".encode(), hashlib.sha256).hexdigest()[:32]
