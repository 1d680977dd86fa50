"""The one form of a client-chosen id (saved voices, proposed session ids): safe as a file name."""

from __future__ import annotations

import re

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID = re.compile(ID_PATTERN)


def is_valid_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None
