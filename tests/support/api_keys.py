"""The callers of the stories that run a service with API keys: who they are and what their keys allow."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import own_backends
from tests.support.processes import own_service

KEYS = {
    "alice": {"key": "alice-key-0123456789", "owner": "alice", "scopes": ["train", "infer"]},
    "alice_app": {"key": "alice-app-key-0123456789", "owner": "alice", "scopes": ["infer"]},
    "bob": {"key": "bob-key-0123456789abc", "owner": "bob", "scopes": ["train", "infer"]},
    "dave": {"key": "dave-key-0123456789abc", "owner": "dave", "scopes": ["train"]},
    "admin": {"key": "admin-key-0123456789", "owner": "ops", "scopes": ["admin"]},
    "erin": {"key": "erin-key-0123456789abc", "owner": "erin", "scopes": ["train"]},
    "frank": {"key": "frank-key-0123456789ab", "owner": "frank", "scopes": ["train"]},
}


@contextmanager
def keyed_service(data_dir: Path, env: dict[str, str]) -> Iterator[str]:
    """A service with one embedded worker that knows the KEYS, on this run's backends; its URL."""
    with (
        own_backends(data_dir) as backends,
        own_service(data_dir, {"EMBEDDED_WORKERS": "1", **env, **backends}, list(KEYS.values())) as url,
    ):
        yield url


def as_caller(url: str, who: str | None) -> httpx.Client:
    """A client sending `who`'s key; None: no key."""
    headers = {"Authorization": f"Bearer {KEYS[who]['key']}"} if who else {}
    return httpx.Client(base_url=url, headers=headers, timeout=60)
