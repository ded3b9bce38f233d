"""The submission rate limit's buckets hold across processes: each take is atomic in Redis and in the database."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bncore.storage.database import Database
from bncore.storage.migrations import upgrade_database
from bncore.storage.rate_limits import DatabaseTokenBuckets, RedisTokenBuckets, TokenBuckets
from tests.support.servers import RedisServer

PER_MINUTE = 10.0


@pytest.fixture(params=["database", "redis"])
def buckets(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TokenBuckets]:
    if request.param == "database":
        url = f"sqlite:///{tmp_path / 'limits.sqlite3'}"
        upgrade_database(url)
        database = Database(url)
        yield DatabaseTokenBuckets(database)
        database.engine.dispose()
        return
    redis = RedisServer(tmp_path)
    try:
        redis.start()
    except RuntimeError as error:
        pytest.skip(str(error))
    try:
        yield RedisTokenBuckets(redis.url)
    finally:
        redis.stop()


def take(buckets: TokenBuckets, key: str, count: int = 1) -> bool:
    return buckets.take(key, count, PER_MINUTE, PER_MINUTE / 60).allowed


def test_a_burst_gets_the_capacity_and_no_more_per_owner(buckets: TokenBuckets) -> None:
    assert [take(buckets, "alice") for _ in range(11)] == [True] * 10 + [False]
    assert take(buckets, "bob", 4) is True  # bob's bucket is his own
    assert take(buckets, "bob", 7) is False  # all at once or none: 6 left
    assert take(buckets, "bob", 6) is True


def test_more_than_the_capacity_at_once_is_refused_even_when_full(buckets: TokenBuckets) -> None:
    taken = buckets.take("carol", 11, PER_MINUTE, PER_MINUTE / 60)
    assert taken.allowed is False and taken.tokens == pytest.approx(PER_MINUTE)


def test_concurrent_takes_on_separate_connections_never_overspend(buckets: TokenBuckets) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: take(buckets, "dave"), range(40)))
    assert results.count(True) == 10  # a minute's refill during the test is a fraction of one token
