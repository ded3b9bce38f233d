"""Newest-first listings with an opaque cursor, shared by jobs, models and experiments."""

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from bncore.storage.database import decode_cursor, encode_cursor

Row = TypeVar("Row", bound=Any)


def newest_first(
    session: Session,
    table: type[Row],
    limit: int,
    cursor: str | None,
    owner: str | None = None,
    filters: Sequence[ColumnElement[bool]] = (),
) -> tuple[Sequence[Row], str | None]:
    """At most `limit` rows of `table` after `cursor` (only `owner`'s, if given, and those matching every
    one of `filters`), and the next page's cursor."""
    query = select(table).where(*filters).order_by(table.created_at.desc(), table.id.desc()).limit(limit + 1)
    if owner is not None:
        query = query.where(table.owner == owner)
    if cursor is not None:
        created_at, row_id = decode_cursor(cursor)
        query = query.where(or_(table.created_at < created_at, and_(table.created_at == created_at, table.id < row_id)))
    rows = session.scalars(query).all()
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
    return page, next_cursor
