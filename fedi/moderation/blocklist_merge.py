"""What several subscribed block lists together want, and how that differs from the blocks in force.

Pure functions (no I/O), so the merge rules are easy to read and to test:

* a source's severity is capped at its `max_severity`;
* a domain is wanted when at least `count` enabled sources list it and they are
  at least `percent`% of the enabled sources; excluded domains (and their
  subdomains) never are;
* among the sources listing a domain, the one with the highest priority decides
  (then the more severe entry, then the older source): severity, flags, comment,
  and whether the change is applied directly (mode `apply`) or drafted;
* a manual block always wins: lists never touch it;
* a domain a source stopped listing is lifted only if it is not wanted any more and
  the highest-priority source that dropped it says `retractions = remove`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fedi.moderation.domains import SEVERITIES

RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Source:
    id: int
    url: str
    priority: int
    max_severity: str
    mode: str
    retractions: str


@dataclass(frozen=True)
class Entry:
    domain: str
    severity: str
    reject_media: bool = False
    reject_reports: bool = False
    public_comment: str = ""


@dataclass(frozen=True)
class Change:
    domain: str
    change: str  # add | update | remove
    severity: str | None
    reject_media: bool
    reject_reports: bool
    public_comment: str
    sources: tuple[Source, ...]  # the deciding source first
    direct: bool

    def same_as(self, severity: str | None, reject_media: bool, reject_reports: bool, public_comment: str) -> bool:
        return (self.severity, self.reject_media, self.reject_reports, self.public_comment) == (
            severity, bool(reject_media), bool(reject_reports), public_comment or "")


def capped(entry: Entry, source: Source) -> Entry:
    if RANK[entry.severity] <= RANK[source.max_severity]:
        return entry
    return Entry(entry.domain, source.max_severity, entry.reject_media, entry.reject_reports, entry.public_comment)


def excluded(domain: str, excludes: Iterable[str]) -> bool:
    return any(domain == e or domain.endswith("." + e) for e in excludes)


def _decides(pair: tuple[Source, Entry]) -> tuple[int, int, int]:
    source, entry = pair
    return (source.priority, RANK[entry.severity], -source.id)


def wanted(sources: list[Source], entries: Mapping[int, Iterable[Entry]], excludes: set[str],
           count: int, percent: int) -> dict[str, tuple[Entry, tuple[Source, ...]]]:
    """domain → (the deciding capped entry, agreeing sources with the decider first)."""
    listing: dict[str, list[tuple[Source, Entry]]] = {}
    for source in sources:
        for entry in entries.get(source.id, ()):
            listing.setdefault(entry.domain, []).append((source, capped(entry, source)))
    out = {}
    for domain, pairs in listing.items():
        if excluded(domain, excludes) or len(pairs) < count or len(pairs) * 100 < percent * len(sources):
            continue
        pairs.sort(key=_decides, reverse=True)
        out[domain] = (pairs[0][1], tuple(s for s, _ in pairs))
    return out


@dataclass(frozen=True)
class Current:
    """A block in force (as the diff needs it)."""

    severity: str
    reject_media: bool
    reject_reports: bool
    public_comment: str
    manual: bool


def diff(want: Mapping[str, tuple[Entry, tuple[Source, ...]]], current: Mapping[str, Current],
         dropped: Mapping[str, list[Source]]) -> list[Change]:
    """The changes that bring subscription blocks to what the lists want, most severe first."""
    changes = []
    for domain, (entry, sources) in want.items():
        cur = current.get(domain)
        if cur is not None and cur.manual:
            continue
        change = Change(domain, "add" if cur is None else "update", entry.severity, entry.reject_media,
                        entry.reject_reports, entry.public_comment, sources, sources[0].mode == "apply")
        if cur is None or not change.same_as(cur.severity, cur.reject_media, cur.reject_reports, cur.public_comment):
            changes.append(change)
    for domain, droppers in dropped.items():
        cur = current.get(domain)
        if domain in want or cur is None or cur.manual:
            continue
        decider = max(droppers, key=lambda s: (s.priority, -s.id))
        if decider.retractions == "remove":
            changes.append(Change(domain, "remove", None, False, False, "", (decider,), decider.mode == "apply"))
    changes.sort(key=lambda c: (c.change == "remove", -RANK.get(c.severity or "noop", 0), c.domain))
    return changes
