"""The per-key token-bucket rate limit: in Redis (shared by every replica) or, when Redis fails, local."""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("medix.ratelimit")


# Token bucket in Redis: atomic, shared by every replica, timed by the Redis server's clock.
_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= n then tokens = tokens - n else wait = (n - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RateLimiter:
    """Items per second per key. Uses Redis when given; falls back to a local bucket when Redis fails. A bucket
    never holds more than `burst` items: a request of more can never pass (the admission refuses it first)."""

    def __init__(self, rate: float | None, burst: int, redis_client: Any = None, namespace: str = "medix",
                 down_s: float = 2.0) -> None:
        self.rate, self.burst = rate, burst
        self._redis = redis_client
        self._ns = namespace
        self._local: dict[str, tuple[float, float]] = {}
        self._script: Any = redis_client.register_script(_BUCKET_LUA) if redis_client is not None else None
        # After a Redis error the local bucket serves for a while, so a blackholed Redis does not add its
        # timeout to every request.
        self._down_s = down_s
        self._redis_down_until = 0.0

    @property
    def enabled(self) -> bool:
        return self.rate is not None

    def _take_local(self, key: str, n: float) -> float:
        assert self.rate is not None
        now = time.monotonic()
        tokens, ts = self._local.get(key, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - ts) * self.rate)
        wait = 0.0
        if tokens >= n:
            tokens -= n
        else:
            wait = (n - tokens) / self.rate
        self._local[key] = (tokens, now)
        return wait

    async def wait_s(self, key: str, items: int) -> float:
        """Take `items` tokens and return 0, or take nothing and return the seconds until they would be there.
        What a wait means for the request is the admission's to decide."""
        if self.rate is None:
            return 0.0
        n = float(items)
        if self._script is not None and time.monotonic() >= self._redis_down_until:
            try:
                return float(await self._script(keys=[f"{self._ns}:rate:{key}"], args=[self.rate, self.burst, n]))
            except Exception as exc:
                self._redis_down_until = time.monotonic() + self._down_s
                log.warning("rate limit via Redis failed, using the local bucket for %.1f s: %r", self._down_s, exc)
        return self._take_local(key, n)
