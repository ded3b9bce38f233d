"""Free text a user types (names, labels, descriptions): printable, so every database can store it.

PostgreSQL text cannot hold a NUL; other control characters are refused with it, so that a name
reads the same in a table, a log line and a terminal.
"""

import re
from typing import Annotated

from pydantic import AfterValidator, Field

ONE_LINE = r"^[^\x00-\x1f\x7f]*$"  # no control characters at all
TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"  # tabs and line breaks allowed
_NOT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f]")


def control_character(value: str) -> str | None:
    """What is wrong with a one-line text, or None when it is printable."""
    if found := _NOT_ONE_LINE.search(value):
        return f"control character U+{ord(found.group()):04X} at position {found.start()}"
    return None


def _printable_line(value: str) -> str:
    if problem := control_character(value):
        raise ValueError(f"{problem}; names are printable text on one line (a NUL cannot be stored)")
    return value


# The pattern is published in the schema; the validator says in words what it found.
OneLine = Annotated[str, AfterValidator(_printable_line), Field(json_schema_extra={"pattern": ONE_LINE})]
