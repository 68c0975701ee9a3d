"""Block lists in and out: Mastodon's CSV, JSON as `/api/v1/instance/domain_blocks` serves it, plain text.

Parsing is all-or-nothing: a malformed row raises ListError naming its line, and
nothing is applied. Entries that are well-formed but cannot be applied —
obfuscated domains (`ex***le.com`), repeats — are listed as skipped. `plan` says
what applying a list would change and how many local follows each row would cut;
`apply_list` applies that plan in one transaction, re-planned against the rules
inside it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from fedi.clock import now
from fedi.context import Context
from fedi.db import Row, Tx
from fedi.moderation.blocks import BLOCK_FIELDS, BlockSpec, change, in_the_way
from fedi.moderation.domains import SEVERITIES, Rules, current, digest, normalize_domain
from fedi.moderation.enforce import follow_counts

FORMATS = ("csv", "json", "text")
CSV_HEADER = ("#domain", "#severity", "#reject_media", "#reject_reports", "#public_comment", "#obfuscate")
_COLUMNS = {"domain", "severity", "reject_media", "reject_reports", "public_comment", "private_comment", "obfuscate"}
_TRUE = {"true", "1", "t", "yes", "y"}
_FALSE = {"false", "0", "f", "no", "n", ""}


class ListError(ValueError):
    """A block list that cannot be used; the message names the line (or JSON entry)."""


@dataclass(frozen=True)
class Entry:
    line: int
    spec: BlockSpec
    given: frozenset[str]  # the fields the list states (others are left as they are on update)


@dataclass(frozen=True)
class Skipped:
    line: int
    domain: str
    reason: str


@dataclass
class ParsedList:
    format: str
    entries: list[Entry] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class Planned:
    line: int
    domain: str
    change: str  # add | update | unchanged | skip
    reason: str = ""
    values: dict[str, Any] | None = None
    severs: int = 0  # local follows (both ways) this row would cut


def _bool(value: Any, where: str, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value if value is not None else "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ListError(f"{where}: {name} must be true or false, not {str(value)[:40]!r}")


def _entry(where: str, line: int, raw: Mapping[str, Any], default_severity: str, out: ParsedList,
           seen: dict[str, int]) -> None:
    """Validate one row (`raw` maps column names to values) into `out`."""
    domain_text = raw.get("domain")
    if not isinstance(domain_text, str) or not domain_text.strip():
        raise ListError(f"{where}: domain is missing")
    if "*" in domain_text:
        out.skipped.append(Skipped(line, domain_text.strip(), "obfuscated domain"))
        return
    try:
        domain = normalize_domain(domain_text)
    except ValueError as exc:
        raise ListError(f"{where}: {exc}") from None
    severity = raw.get("severity")
    severity = default_severity if severity in (None, "") else str(severity).strip().lower()
    if severity not in SEVERITIES:
        raise ListError(f"{where}: severity must be one of {', '.join(SEVERITIES)}, not {str(raw.get('severity'))[:40]!r}")
    values: dict[str, Any] = {"domain": domain, "severity": severity}
    for name in ("reject_media", "reject_reports", "obfuscate"):
        values[name] = _bool(raw.get(name), where, name)
    for name in ("public_comment", "private_comment"):
        comment = raw.get(name)
        if comment is not None and not isinstance(comment, str):
            raise ListError(f"{where}: {name} must be text")
        values[name] = comment if comment else None
    if domain in seen:
        out.skipped.append(Skipped(line, domain, f"repeats line {seen[domain]}"))
        return
    seen[domain] = line
    given = frozenset(k for k in raw if k in _COLUMNS and k != "domain") | {"severity"}
    out.entries.append(Entry(line, BlockSpec(**values), given))


def _parse_csv(text: str) -> ParsedList:
    out, seen = ParsedList("csv"), dict[str, int]()
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    first = True
    try:
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            names = [c.strip().lstrip("#").strip().lower() for c in cells]
            if first:
                first = False
                if "domain" in names:
                    header = ["public_comment" if n == "comment" else n for n in names]
                    continue
            if header is None:
                if cells[0].lstrip().startswith("#"):
                    continue  # a comment in a headerless list
                raw = {"domain": cells[0], **({"severity": cells[1]} if len(cells) > 1 else {})}
            else:
                raw = {name: value for name, value in zip(header, cells)}
            _entry(f"line {line}", line, raw, "suspend", out, seen)
    except csv.Error as exc:
        raise ListError(f"line {reader.line_num}: {exc}") from None
    return out


def _parse_json(text: str) -> ParsedList:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ListError(f"not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise ListError("a JSON block list must be an array of objects")
    out, seen = ParsedList("json"), dict[str, int]()
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise ListError(f"entry {number}: not an object")
        raw = dict(item)
        if "comment" in raw and "public_comment" not in raw:
            raw["public_comment"] = raw.pop("comment")
        _entry(f"entry {number}", number, raw, "suspend", out, seen)
    return out


def _parse_text(text: str) -> ParsedList:
    out, seen = ParsedList("text"), dict[str, int]()
    for line, value in enumerate(text.splitlines(), start=1):
        value = value.strip()
        if value and not value.startswith("#"):
            _entry(f"line {line}", line, {"domain": value}, "suspend", out, seen)
    return out


def detect_format(text: str) -> str:
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith(("[", "{")):
        return "json"
    first = stripped.split("\n", 1)[0].strip().lower()
    return "csv" if "," in first or first.lstrip("#").startswith("domain") else "text"


def parse_list(text: str, fmt: str = "auto") -> ParsedList:
    """Parse a block list (`fmt`: auto, csv, json or text); ListError on the first malformed row."""
    text = text.lstrip("\ufeff")
    fmt = detect_format(text) if fmt == "auto" else fmt
    parsers = {"csv": _parse_csv, "json": _parse_json, "text": _parse_text}
    if fmt not in parsers:
        raise ListError(f"unknown format {fmt!r} (csv, json or text)")
    return parsers[fmt](text)


def plan(rules: Rules, parsed: ParsedList, counts: Mapping[str, int]) -> list[Planned]:
    """What applying `parsed` to `rules` would do, row by row (pure; see `follow_counts` for `counts`)."""
    blocks: dict[str, Any] = {d: {k: r[k] for k in ("domain", *BLOCK_FIELDS)} for d, r in rules.blocks.items()}
    simulated = replace(rules, blocks=blocks)
    out: list[Planned] = [Planned(s.line, s.domain, "skip", s.reason) for s in parsed.skipped]
    rows: dict[str, int] = {}
    for entry in parsed.entries:
        spec = entry.spec
        current = blocks.get(spec.domain)
        if current is not None:
            values = {**current, **{k: getattr(spec, k) for k in entry.given}}
            kind = "unchanged" if values == current else "update"
        else:
            existing = in_the_way(simulated, spec)
            if existing is not None:
                out.append(Planned(entry.line, spec.domain, "skip", f"covered by the block of {existing['domain']}"))
                continue
            values, kind = asdict(spec), "add"
        blocks[spec.domain] = values
        rows[spec.domain] = len(out)
        out.append(Planned(entry.line, spec.domain, kind, "", values))
    for netloc, count in counts.items():
        before, after = rules.block_for(netloc), simulated.block_for(netloc)
        if after is not None and after["severity"] == "suspend" and (before is None or before["severity"] != "suspend"):
            index = rows.get(after["domain"])
            if index is not None:
                out[index] = replace(out[index], severs=out[index].severs + count)
    return sorted(out, key=lambda p: p.line)


async def preview(ctx: Context, parsed: ParsedList) -> list[Planned]:
    return plan(await current(ctx), parsed, await follow_counts(ctx.db))


async def apply_list(ctx: Context, admin_id: int | None, parsed: ParsedList, source: str) -> list[Planned]:
    """Add and update the list's blocks in one transaction (with their effects and one audit row)."""

    async def mutate(tx: Tx, rules: Rules) -> tuple[list[str] | None, set[float], list[Planned]]:
        planned = plan(rules, parsed, await follow_counts(tx))
        adds = [p for p in planned if p.change == "add" and p.values]
        updates = [p for p in planned if p.change == "update" and p.values]
        if not adds and not updates:
            return None, set(), planned
        columns = ("domain", *BLOCK_FIELDS)
        await tx.executemany(
            f"INSERT INTO domain_blocks (id, {', '.join(columns)}, created_at, updated_at)"
            f" VALUES (?, {', '.join('?' for _ in columns)}, ?, ?)",
            [(tx.new_id(), *(p.values[c] for c in columns), ts, ts) for p in adds],  # type: ignore[index]
        )
        await tx.executemany(
            f"UPDATE domain_blocks SET {', '.join(c + ' = ?' for c in BLOCK_FIELDS)}, updated_at = ? WHERE domain = ?",
            [(*(p.values[c] for c in BLOCK_FIELDS), ts, p.domain) for p in updates],  # type: ignore[index]
        )
        detail.update(format=parsed.format, added=[p.domain for p in adds], updated=[p.domain for p in updates],
                      skipped=len([p for p in planned if p.change == "skip"]))
        return [p.domain for p in adds + updates], set(), planned

    ts = now()
    detail: dict[str, Any] = {}
    return await change(ctx, admin_id, "domain_block.import", source, detail, mutate, target_type="domain_block_list")


def export_csv(rows: Iterable[Row]) -> str:
    """Mastodon's export: `#domain,#severity,#reject_media,#reject_reports,#public_comment,#obfuscate`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for r in rows:
        writer.writerow([r["domain"], r["severity"], _tf(r["reject_media"]), _tf(r["reject_reports"]),
                         r["public_comment"] or "", _tf(r["obfuscate"])])
    return buf.getvalue()


def export_json(rows: Iterable[Row]) -> str:
    """The public API's shape (`domain`, `digest`, `severity`, `comment`) plus the reject flags."""
    return json.dumps([
        {"domain": r["domain"], "digest": digest(r["domain"]), "severity": r["severity"], "comment": r["public_comment"],
         "reject_media": bool(r["reject_media"]), "reject_reports": bool(r["reject_reports"]),
         "obfuscate": bool(r["obfuscate"])}
        for r in rows
    ], indent=1, ensure_ascii=False) + "\n"


def _tf(value: Any) -> str:
    return "true" if value else "false"


def summary(planned: list[Planned]) -> dict[str, int]:
    counts = {"add": 0, "update": 0, "unchanged": 0, "skip": 0, "severs": 0}
    for p in planned:
        counts[p.change] += 1
        counts["severs"] += p.severs
    return counts

