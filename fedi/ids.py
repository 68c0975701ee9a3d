"""Time-sortable integer ids.

Clients sort by id (Mastodon paging relies on it), so ids are milliseconds since
the epoch shifted left 16 bits plus a per-generator sequence: unique within a
process, monotonic, and below 2**63 for SQLite's INTEGER.
"""

from __future__ import annotations

import time


class IdGenerator:
    """Hands out strictly increasing ids; one per database."""

    def __init__(self) -> None:
        self._last = 0

    @property
    def last(self) -> int:
        return self._last

    def observe(self, value: int) -> None:
        """Never hand out an id at or below one another process already used."""
        self._last = max(self._last, value)

    def next(self, at_ms: int | None = None) -> int:
        base = (int(time.time() * 1000) if at_ms is None else at_ms) << 16
        value = max(base, self._last + 1)
        self._last = value
        return value


def id_for_time(at_ms: int) -> int:
    """The smallest id minted at `at_ms`, for turning a date into a paging bound."""
    return at_ms << 16
