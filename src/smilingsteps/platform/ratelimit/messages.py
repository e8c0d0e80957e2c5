"""Per-connection limits for WebSocket messages (used by video signaling).

A local token bucket: a connection lives on one instance, so its message rate
needs no shared state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


class MessageRejectedError(Exception):
    """A message over the size or rate limit; the connection should close with 1008/1009."""

    def __init__(self, reason: str, close_code: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code


@dataclass
class MessageLimiter:
    per_second: float
    burst: int
    max_bytes: int
    clock: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False)
    _updated: float = field(init=False)

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)
        self._updated = self.clock()

    def admit(self, message: str | bytes) -> None:
        """Raise MessageRejectedError when `message` is too big or comes too fast."""
        size = len(message.encode() if isinstance(message, str) else message)
        if size > self.max_bytes:
            raise MessageRejectedError(f"message of {size} bytes is over {self.max_bytes}", 1009)
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.per_second)
        self._updated = now
        if self._tokens < 1:
            raise MessageRejectedError("too many messages", 1008)
        self._tokens -= 1
