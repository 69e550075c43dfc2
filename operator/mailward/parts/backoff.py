"""Growing delays for "look again later", per MailDomain.

What a part waits for (a Secret, a StatefulSet's rollout, a DNS server) is not watched, so the
part asks to be run again. A fixed delay polls an object that stays broken for days as often
as one that is about to recover; like controller-runtime's per-item rate limiter, the delay
doubles with each pass that finds it still not there, up to a ceiling, and starts over once it
is.
"""

from __future__ import annotations


class Backoff:
    def __init__(self, base_seconds: float, max_seconds: float) -> None:
        self._base = base_seconds
        self._max = max(max_seconds, base_seconds)
        self._attempts: dict[str, int] = {}

    def next(self, uid: str) -> float:
        """The delay before the next look at object `uid`, one step longer than the last."""
        attempts = self._attempts.get(uid, 0)
        self._attempts[uid] = attempts + 1
        return float(min(self._base * 2 ** min(attempts, 32), self._max))

    def reset(self, uid: str) -> None:
        self._attempts.pop(uid, None)
