"""Strict JSON for untrusted bodies, and fast dumps.

orjson rejects invalid UTF-8, lone surrogates, NaN, integers beyond 64 bits and
nesting deeper than 1024 (CPython's json would recurse into a 500). It keeps the
last of duplicate keys, which lets `{"id": A, "id": B}` mean different things to
different parsers, so a second pass with an object_pairs_hook refuses those.
The walk then refuses NUL characters and caps strings and lists (THREATS P2–P7).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

MAX_STRING = 200_000
MAX_LIST = 10_000


class JsonError(ValueError):
    """The body is not acceptable JSON; the message is safe to show."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JsonError(f"duplicate key {key[:40]!r}")
        result[key] = value
    return result


def _check(value: Any, depth: int = 0) -> None:
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise JsonError("string too long")
        if "\x00" in value:
            raise JsonError("NUL character in string")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check(key, depth)
            _check(item, depth + 1)
    elif isinstance(value, list):
        if len(value) > MAX_LIST:
            raise JsonError("list too long")
        for item in value:
            _check(item, depth + 1)


def loads_strict(data: bytes | str) -> Any:
    """Parse untrusted JSON or raise JsonError."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise JsonError(f"malformed JSON: {str(exc).split(':', 1)[0]}") from None
    try:
        json.loads(data, object_pairs_hook=_no_duplicates)
    except JsonError:
        raise
    except (ValueError, RecursionError):
        raise JsonError("malformed JSON") from None
    _check(value)
    return value


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def dumps_str(value: Any) -> str:
    return orjson.dumps(value).decode()
