"""Which client-supplied identifiers are worth a query at all.

Ids come from URLs and bodies. One that no row can have (too long for the
column, or holding a NUL byte, which PostgreSQL refuses in text and would
turn into a 500) is answered "not found" without touching the database.
"""

from __future__ import annotations

MAX_ID_CHARS = 64
MAX_NAME_CHARS = 200


def findable(value: object, *, max_chars: int = MAX_ID_CHARS) -> bool:
    return isinstance(value, str) and 0 < len(value) <= max_chars and "\x00" not in value
