"""Cursors: `<epoch>-<seq>`.

`epoch` names one incarnation of a topic's history (a broker start), so a cursor from before a
restart is recognised as foreign instead of being misread as a position in the new history.
`seq` increases by one per event within an epoch.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from openmanager.core.bounds import INT64_MAX

_CURSOR = re.compile(r"([0-9a-z]{1,32})-([0-9]{1,19})")  # ASCII only; `fullmatch`: no trailing newline


class Cursor(NamedTuple):
    epoch: str
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch}-{self.seq}"


def parse_cursor(text: object) -> Cursor | None:
    """The cursor a string names, or None when it is malformed or its seq is past int64 (never raises)."""
    if not isinstance(text, str):
        return None
    m = _CURSOR.fullmatch(text)
    if m is None or int(m.group(2)) > INT64_MAX:
        return None
    return Cursor(m.group(1), int(m.group(2)))
