"""Token buckets every API process shares: in Redis when there is one, else in the database.

A bucket holds up to `capacity` tokens and refills at `refill_per_second`. `take` removes `count`
tokens at once or none, atomically across processes and hosts: one Lua script in Redis, one
conditional UPDATE in the database (SQLite's write lock, PostgreSQL's row lock).
"""

import time
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import case, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bncore.storage.database import Database, RateLimitRow


@dataclass(frozen=True)
class Taken:
    allowed: bool
    tokens: float  # left after the take, or available when refused


class TokenBuckets(Protocol):
    def take(self, key: str, count: int, capacity: float, refill_per_second: float) -> Taken: ...


class DatabaseTokenBuckets:
    def __init__(self, database: Database) -> None:
        self.database = database

    def take(self, key: str, count: int, capacity: float, refill_per_second: float) -> Taken:
        now = time.time()
        refilled = RateLimitRow.tokens + (now - RateLimitRow.updated_at) * refill_per_second
        available = case((refilled > capacity, capacity), else_=refilled)
        for _ in range(2):  # a first take of a key may race another process's insert: then update that row
            with self.database.session() as session, session.begin():
                taken = session.execute(
                    update(RateLimitRow)
                    .where(RateLimitRow.key == key, available >= count)
                    .values(tokens=available - count, updated_at=now)
                )
                if taken.rowcount == 1:
                    return Taken(True, _tokens_left(session, key))
                row = session.get(RateLimitRow, key)
                if row is not None:
                    return Taken(False, min(capacity, row.tokens + (now - row.updated_at) * refill_per_second))
                if count > capacity:
                    return Taken(False, capacity)
            try:
                with self.database.session() as session, session.begin():
                    session.execute(insert(RateLimitRow).values(key=key, tokens=capacity - count, updated_at=now))
                return Taken(True, capacity - count)
            except IntegrityError:
                continue
        raise RuntimeError(f"rate limit bucket {key!r}: neither updated nor inserted")  # pragma: no cover


def _tokens_left(session: Session, key: str) -> float:
    return session.execute(select(RateLimitRow.tokens).where(RateLimitRow.key == key)).scalar_one()


# KEYS[1]: the bucket; ARGV: count, capacity, refill per second, now (s). Returns {allowed, tokens as a string}.
_TAKE_SCRIPT = """
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local count, capacity, rate, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens = capacity
if state[1] then
  tokens = math.min(capacity, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * rate)
end
if tokens < count then
  return {0, tostring(tokens)}
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - count), 'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
return {1, tostring(tokens - count)}
"""


class RedisTokenBuckets:
    PREFIX = "bnjobs:rate-limit:"

    def __init__(self, url: str) -> None:
        import redis  # only deployments with Redis need the client

        self._take = redis.Redis.from_url(url).register_script(_TAKE_SCRIPT)

    def take(self, key: str, count: int, capacity: float, refill_per_second: float) -> Taken:
        allowed, tokens = self._take(keys=[self.PREFIX + key], args=[count, capacity, refill_per_second, time.time()])
        return Taken(bool(allowed), float(tokens))
