"""API keys: who is calling (an owner) and what they may do (scopes).

Keys come from the JSON file named by API_KEYS_FILE: `[{"key", "owner", "scopes"}]`. Without one,
the service is open, every caller is the `admin` principal of owner `anonymous`, and it listens on
loopback only unless ALLOW_OPEN_ACCESS says otherwise.
"""

import hmac
import json
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, Request
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from bncore.errors import Forbidden, Unauthorized

Scope = Literal["train", "infer", "admin"]
ANONYMOUS = "anonymous"


class ApiKeyEntry(BaseModel):
    key: str = Field(min_length=16, description="the secret a client sends as `Authorization: Bearer <key>`")
    owner: str = Field(min_length=1, max_length=255)
    scopes: list[Scope] = Field(min_length=1)


@dataclass(frozen=True)
class Principal:
    owner: str
    scopes: frozenset[str]

    @property
    def sees_all(self) -> bool:
        return "admin" in self.scopes

    @property
    def owner_filter(self) -> str | None:
        """The owner whose jobs and models this caller may touch; None for an admin, who sees all."""
        return None if self.sees_all else self.owner

    def holds_any(self, scopes: tuple[Scope, ...]) -> bool:
        """Whether this caller may do what needs one of `scopes`: an admin may do anything."""
        return "admin" in self.scopes or not self.scopes.isdisjoint(scopes)


OPEN_ACCESS = Principal(owner=ANONYMOUS, scopes=frozenset({"train", "infer", "admin"}))


def load_api_keys(path: Path) -> list[ApiKeyEntry]:
    """The keys in `path`; ValueError with the reason when the file is not a valid key list."""
    try:
        return TypeAdapter(list[ApiKeyEntry]).validate_python(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, ValidationError) as error:
        raise ValueError(f"API_KEYS_FILE {path}: {error}") from error


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ip_address(host).is_loopback
    except ValueError:
        return False


def principal_of(authorization: str, keys: list[ApiKeyEntry]) -> Principal:
    """The caller an `Authorization` header value names; Unauthorized unless it holds a known key.

    Without keys the service is open: every caller is OPEN_ACCESS.
    """
    if not keys:
        return OPEN_ACCESS
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("this endpoint needs an API key: send `Authorization: Bearer <key>`")
    # Compare with every key, in constant time each, so timing tells nothing about near misses.
    matches = [entry for entry in keys if hmac.compare_digest(entry.key.encode(), token.strip().encode())]
    if not matches:
        raise Unauthorized("unknown API key")
    return Principal(owner=matches[0].owner, scopes=frozenset(matches[0].scopes))


async def authenticate(request: Request) -> Principal:
    return principal_of(request.headers.get("authorization", ""), request.app.state.services.api_keys)


def require(*scopes: Scope) -> type[Principal]:
    """A dependency: the caller, who must hold one of `scopes` (or `admin`).

    Dependencies here are async although they never await: FastAPI runs a sync one in a thread.
    """

    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.holds_any(scopes):
            raise Forbidden(f"this API key lacks the scope this needs: one of {sorted(scopes)}")
        return principal

    return Annotated[Principal, Depends(check)]  # type: ignore[return-value]


Caller = Annotated[Principal, Depends(authenticate)]
Trainer = require("train")
INFER: tuple[Scope, ...] = ("infer",)  # what predicting takes
Inferrer = require(*INFER)
Reader = require("train", "infer")
