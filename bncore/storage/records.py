"""Records (frozen dataclasses the stores hand out) read from their database rows."""

from dataclasses import fields
from typing import Any, TypeVar

Record = TypeVar("Record")


def record_from_row(record: type[Record], row: object, **converted: Any) -> Record:
    """`record` with each field taken from the row's column of the same name, except those given as `converted`."""
    copied = {field.name: getattr(row, field.name) for field in fields(record) if field.name not in converted}
    return record(**copied, **converted)
