"""Access tokens refuse every kind of tampering; CSRF tokens are bound to their session."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smilingsteps.accounts.tokens import AUDIENCE, InvalidTokenError, TokenCodec
from smilingsteps.platform.crypto import derive_key

SECRET = "k" * 20 + "0123456789abcdefghijklmnop"
ISSUER = "https://smilingsteps.example"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
USER = uuid.uuid4()
SESSION = uuid.uuid4()


@pytest.fixture
def codec() -> TokenCodec:
    return TokenCodec(SECRET, issuer=ISSUER)


def issue(codec: TokenCodec, *, now: datetime = NOW) -> str:
    return codec.issue_access(
        user_id=USER,
        session_id=SESSION,
        role="client",
        email_verified=True,
        mfa=False,
        now=now,
        expires_at=now + timedelta(minutes=15),
    )


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(USER),
        "sid": str(SESSION),
        "typ": "access",
        "jti": "j",
        "iat": int(NOW.timestamp()),
        "exp": int((NOW + timedelta(minutes=15)).timestamp()),
        "role": "admin",
        "ver": True,
        "mfa": True,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_genuine_token_decodes(codec: TokenCodec) -> None:
    decoded = codec.decode_access(issue(codec), now=NOW + timedelta(minutes=1))
    assert (decoded.user_id, decoded.session_id, decoded.role) == (USER, SESSION, "client")


def test_alg_none_is_refused(codec: TokenCodec) -> None:
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."
    with pytest.raises(InvalidTokenError):
        codec.decode_access(token, now=NOW)


def test_a_token_signed_with_another_key_is_refused(codec: TokenCodec) -> None:
    forged = jwt.encode(claims(), b"x" * 32, algorithm="HS256")
    with pytest.raises(InvalidTokenError):
        codec.decode_access(forged, now=NOW)


def test_rs256_and_hs_rs_confusion_are_refused(codec: TokenCodec) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rs_token = jwt.encode(claims(), private, algorithm="RS256")
    with pytest.raises(InvalidTokenError):
        codec.decode_access(rs_token, now=NOW)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # The classic confusion: HMAC "signed" with the public key as the secret.
    header = b64({"alg": "HS256", "typ": "JWT"})
    body = b64(claims())
    import hashlib
    import hmac

    signature = (
        base64.urlsafe_b64encode(hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest())
        .rstrip(b"=")
        .decode()
    )
    with pytest.raises(InvalidTokenError):
        codec.decode_access(f"{header}.{body}.{signature}", now=NOW)


def test_key_pointing_headers_are_ignored(codec: TokenCodec) -> None:
    attacker_key = b"a" * 32
    for header in (
        {"jku": "https://evil.example/jwks"},
        {"x5u": "https://evil.example/cert"},
        {"jwk": {"kty": "oct", "k": base64.urlsafe_b64encode(attacker_key).decode()}},
        {"kid": "../../x"},
    ):
        forged = jwt.encode(claims(), attacker_key, algorithm="HS256", headers=header)
        with pytest.raises(InvalidTokenError):
            codec.decode_access(forged, now=NOW)


def test_our_key_with_a_jku_header_is_still_judged_by_our_key_only(codec: TokenCodec) -> None:
    token = jwt.encode(claims(), derive_key(SECRET, "jwt"), algorithm="HS256", headers={"jku": "https://evil/x"})
    assert codec.decode_access(token, now=NOW).role == "admin"


@pytest.mark.parametrize(
    "change",
    [
        {"aud": "another-api"},
        {"iss": "https://evil.example"},
        {"typ": "mfa-challenge"},
        {"exp": int(NOW.timestamp())},
        {"iat": int((NOW + timedelta(hours=1)).timestamp())},
        {"exp": None},
        {"iat": None},
        {"aud": None},
        {"iss": None},
        {"typ": None},
        {"jti": None},
        {"sub": "not-a-uuid"},
        {"sid": None},
        {"exp": "tomorrow"},
    ],
)
def test_wrong_or_missing_claims_are_refused(codec: TokenCodec, change: dict[str, Any]) -> None:
    token = jwt.encode(claims(**change), derive_key(SECRET, "jwt"), algorithm="HS256")
    with pytest.raises(InvalidTokenError):
        codec.decode_access(token, now=NOW)


def test_expiry_follows_the_injected_clock(codec: TokenCodec) -> None:
    token = issue(codec)
    codec.decode_access(token, now=NOW + timedelta(minutes=14, seconds=59))
    with pytest.raises(InvalidTokenError):
        codec.decode_access(token, now=NOW + timedelta(minutes=15))


def test_a_token_verified_before_still_expires(codec: TokenCodec) -> None:
    token = issue(codec)
    first = codec.decode_access(token, now=NOW)
    assert codec.decode_access(token, now=NOW + timedelta(minutes=1)) is first  # from the cache
    with pytest.raises(InvalidTokenError):
        codec.decode_access(token, now=NOW + timedelta(minutes=15))
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(InvalidTokenError):
        codec.decode_access(tampered, now=NOW)


def test_the_verified_cache_is_bounded(codec: TokenCodec) -> None:
    from smilingsteps.accounts.tokens import VERIFIED_CACHE_SIZE

    for _ in range(VERIFIED_CACHE_SIZE + 10):
        codec.decode_access(issue(codec), now=NOW)
    assert len(codec._verified) == VERIFIED_CACHE_SIZE


def test_an_mfa_challenge_is_not_an_access_token(codec: TokenCodec) -> None:
    challenge = codec.issue_mfa_challenge(user_id=USER, now=NOW, ttl=timedelta(minutes=5))
    with pytest.raises(InvalidTokenError):
        codec.decode_access(challenge, now=NOW)
    assert codec.decode_mfa_challenge(challenge, now=NOW) == USER
    with pytest.raises(InvalidTokenError):
        codec.decode_mfa_challenge(issue(codec), now=NOW)


@pytest.mark.parametrize("garbage", ["", "a.b", "a.b.c", "ey.ey.ey", "x" * 5000, "é.é.é"])
def test_garbage_is_refused(codec: TokenCodec, garbage: str) -> None:
    with pytest.raises(InvalidTokenError):
        codec.decode_access(garbage, now=NOW)


def test_csrf_tokens_are_bound_to_their_session(codec: TokenCodec) -> None:
    token = codec.csrf_token(SESSION)
    assert codec.csrf_valid(token, SESSION)
    assert not codec.csrf_valid(token, uuid.uuid4())
    assert not codec.csrf_valid(token.split(".")[0] + ".0000", SESSION)
    assert not codec.csrf_valid("no-dot", SESSION)
    assert not TokenCodec("other" * 10, issuer=ISSUER).csrf_valid(token, SESSION)


def hmac_signed(payload: dict[str, Any], key: bytes, alg: str) -> str:
    """A JWT signed by hand (PyJWT warns about a 32-byte key for HS384/HS512, and warnings are errors here)."""
    import hashlib
    import hmac

    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing_input = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(payload)}"
    signature = base64.urlsafe_b64encode(hmac.new(key, signing_input.encode(), digest).digest()).rstrip(b"=").decode()
    return f"{signing_input}.{signature}"


@pytest.mark.parametrize(("alg", "accepted"), [("HS256", True), ("HS384", False), ("HS512", False)])
def test_only_hs256_is_accepted_even_with_our_own_key(codec: TokenCodec, alg: str, accepted: bool) -> None:
    """The algorithm is ours to choose, never the token's: valid claims, signed with the real
    derived key, in another HMAC algorithm are refused (HS256 shows the token is otherwise good)."""
    import warnings

    token = hmac_signed(claims(), derive_key(SECRET, "jwt"), alg)
    with warnings.catch_warnings():
        # A decoder that took `alg` from the header would warn about the key length for HS384/HS512
        # and then accept the token; the warning must not be what makes this test fail.
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        if accepted:
            assert codec.decode_access(token, now=NOW).role == "admin"
        else:
            with pytest.raises(InvalidTokenError):
                codec.decode_access(token, now=NOW)


# ---- found by the mutation run (bench/mutation.py) -------------------------------------------


@pytest.mark.parametrize(("verified", "mfa"), [(True, True), (True, False), (False, True), (False, False)])
def test_the_claims_that_gate_access_come_back_as_issued(codec: TokenCodec, verified: bool, mfa: bool) -> None:
    token = codec.issue_access(
        user_id=USER,
        session_id=SESSION,
        role="admin",
        email_verified=verified,
        mfa=mfa,
        now=NOW,
        expires_at=NOW + timedelta(minutes=15),
    )
    decoded = codec.decode_access(token, now=NOW)
    assert (decoded.email_verified, decoded.mfa) == (verified, mfa)


@pytest.mark.parametrize("value", ["true", 1, "yes"])
def test_only_a_json_true_proves_verification_or_a_second_factor(codec: TokenCodec, value: Any) -> None:
    token = jwt.encode(claims(ver=value, mfa=value), derive_key(SECRET, "jwt"), algorithm="HS256")
    decoded = codec.decode_access(token, now=NOW)
    assert (decoded.email_verified, decoded.mfa) == (False, False)


def test_a_token_may_be_issued_up_to_30_seconds_ahead_of_our_clock(codec: TokenCodec) -> None:
    """Clock skew between instances: 30 s ahead is accepted, 31 s is not."""
    key = derive_key(SECRET, "jwt")
    ahead = jwt.encode(claims(iat=int(NOW.timestamp()) + 30), key, algorithm="HS256")
    assert codec.decode_access(ahead, now=NOW).user_id == USER
    too_far = jwt.encode(claims(iat=int(NOW.timestamp()) + 31), key, algorithm="HS256")
    with pytest.raises(InvalidTokenError):
        codec.decode_access(too_far, now=NOW)


def test_an_expired_token_says_so_and_others_do_not(codec: TokenCodec) -> None:
    """The reason `expired` is what tells a routine expiry from an attack in the security log."""
    token = issue(codec)
    with pytest.raises(InvalidTokenError, match=r"^expired$"):
        codec.decode_access(token, now=NOW + timedelta(minutes=15))  # checked in full
    codec.decode_access(token, now=NOW)
    with pytest.raises(InvalidTokenError, match=r"^expired$"):
        codec.decode_access(token, now=NOW + timedelta(minutes=15))  # from the cache of verified tokens
    with pytest.raises(InvalidTokenError) as forged:
        codec.decode_access(jwt.encode(claims(), b"x" * 32, algorithm="HS256"), now=NOW)
    assert str(forged.value) != "expired"


def test_issued_tokens_declare_hs256_and_jwt_in_their_header(codec: TokenCodec) -> None:
    for token in (issue(codec), codec.issue_mfa_challenge(user_id=USER, now=NOW, ttl=timedelta(minutes=5))):
        assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}


def test_csrf_tokens_are_a_fresh_nonce_and_an_hmac_with_the_csrf_key(codec: TokenCodec) -> None:
    """Known answer: HMAC-SHA256 under the key derived for "csrf", over "<session>:<nonce>", 32 hex
    digits. The derivation is fixed, so tokens issued before a deploy still verify after it."""
    import hashlib
    import hmac

    first, second = codec.csrf_token(SESSION), codec.csrf_token(SESSION)
    assert first != second
    for token in (first, second):
        nonce, mac = token.split(".")
        assert len(nonce) >= 22  # 16 random bytes
        expected = hmac.new(derive_key(SECRET, "csrf"), f"{SESSION}:{nonce}".encode(), hashlib.sha256).hexdigest()
        assert mac == expected[:32]


def test_a_csrf_token_must_have_exactly_a_nonce_and_a_mac(codec: TokenCodec) -> None:
    """Even with a correct MAC over them, an empty nonce or one with a dot is refused."""
    import hashlib
    import hmac

    def signed(nonce: str) -> str:
        digest = hmac.new(derive_key(SECRET, "csrf"), f"{SESSION}:{nonce}".encode(), hashlib.sha256).hexdigest()
        return f"{nonce}.{digest[:32]}"

    assert codec.csrf_valid(signed("abc"), SESSION)
    assert not codec.csrf_valid(signed(""), SESSION)
    assert not codec.csrf_valid(signed("abc.def"), SESSION)
    assert not codec.csrf_valid(signed("abc") + ".", SESSION)
