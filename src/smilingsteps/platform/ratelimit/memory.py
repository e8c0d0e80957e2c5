"""In-process GCRA state: the embedded default, and the fallback when Redis fails."""

from __future__ import annotations

from smilingsteps.platform.ratelimit.gcra import Decision, gcra, gcra_refund
from smilingsteps.platform.ratelimit.policies import Policy


class MemoryBackend:
    """Key -> theoretical arrival time. Bounded: expired keys are pruned, and
    past `max_keys` the oldest are dropped so a key flood cannot exhaust memory."""

    def __init__(self, max_keys: int = 200_000) -> None:
        self._tats: dict[str, int] = {}
        self.max_keys = max_keys

    def hit(self, key: str, policy: Policy, now_us: int) -> Decision:
        decision, new_tat = gcra(self._tats.get(key), now_us, policy)
        if new_tat is not None:
            self._tats.pop(key, None)  # re-insert: dict order stays oldest-first
            self._tats[key] = new_tat
            if len(self._tats) > self.max_keys:
                self._prune(now_us)
        return decision

    def refund(self, key: str, policy: Policy, now_us: int) -> Decision:
        decision, new_tat = gcra_refund(self._tats.get(key), now_us, policy)
        if new_tat is None:
            self._tats.pop(key, None)
        else:
            self._tats[key] = new_tat
        return decision

    def _prune(self, now_us: int) -> None:
        expired = [key for key, tat in self._tats.items() if tat <= now_us]
        for key in expired:
            del self._tats[key]
        overflow = len(self._tats) - int(self.max_keys * 0.9)
        for key in list(self._tats)[: max(0, overflow)]:
            del self._tats[key]

    def __len__(self) -> int:
        return len(self._tats)
