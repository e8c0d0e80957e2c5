"""TOTP (RFC 6238) second factor: secrets, verification without replay, QR codes and recovery codes."""

from __future__ import annotations

import base64
import hmac
import secrets
from datetime import datetime, timedelta

import pyotp
import segno

from smilingsteps.platform.crypto import token_hash

ISSUER = "Smiling Steps"
STEP_SECONDS = 30
# One step either side tolerates phone clocks that drift by up to ~30 s.
WINDOW = 1
RECOVERY_CODE_COUNT = 10


def new_secret() -> str:
    return pyotp.random_base32(length=32)  # 160 bits, as RFC 4226 recommends


def provisioning_uri(secret: str, account: str) -> str:
    return pyotp.TOTP(secret, interval=STEP_SECONDS).provisioning_uri(name=account, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """The otpauth URI as an SVG QR code, generated here so the secret never leaves the server."""
    return str(segno.make(uri, error="m").svg_inline(scale=4, dark="#1f2933", light="#ffffff"))


def matching_step(secret: str, code: str, *, now: datetime, after_step: int | None) -> int | None:
    """The time step `code` is valid for, if any step in the window newer than `after_step` matches."""
    if len(code) != 6 or not (code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret, interval=STEP_SECONDS)
    current = totp.timecode(now)
    for offset in range(-WINDOW, WINDOW + 1):
        step = current + offset
        if after_step is not None and step <= after_step:
            continue
        if hmac.compare_digest(totp.at(now + timedelta(seconds=offset * STEP_SECONDS)), code):
            return step
    return None


def new_recovery_codes() -> list[str]:
    """Ten single-use codes of 80 random bits each, shown once as xxxx-xxxx-xxxx-xxxx."""
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()
        codes.append("-".join(raw[i : i + 4] for i in range(0, 16, 4)))
    return codes


def recovery_code_hash(code: str) -> str:
    """Codes are compared case- and dash-insensitively."""
    return token_hash(code.replace("-", "").replace(" ", "").lower())
