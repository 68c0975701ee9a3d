"""Strict JSON for untrusted bodies, and fast dumps.

orjson rejects invalid UTF-8, lone surrogates, NaN, integers beyond 64 bits and
nesting deeper than 1024 (CPython's json would recurse into a 500). It keeps the
last of duplicate keys, which lets `{"id": A, "id": B}` mean different things to
different parsers, so those are refused too: a count of the strings in the text
against those in the parsed value finds them without a second parse (see
`loads_strict`). The walk refuses NUL characters and caps strings and lists
(THREATS P2–P7).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

MAX_STRING = 200_000
MAX_LIST = 10_000
#: Nesting levels (a key or list item one level below its container): what CPython's json
#: parser managed before its recursion limit, and far beyond any activity.
MAX_DEPTH = 900




class JsonError(ValueError):
    """The body is not acceptable JSON; the message is safe to show."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JsonError(f"duplicate key {key[:40]!r}")
        result[key] = value
    return result


def _walk(value: Any, careful: bool) -> int:
    """How many strings (keys included) the value holds; refuses nesting beyond MAX_DEPTH.

    `careful` also refuses NUL characters, over-long strings and long lists: callers skip it
    when the text is too short for those and has no NUL escape. Level by level rather than
    recursive, so nesting costs no Python stack.
    """
    strings = 0
    level = [value]
    depth = 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            raise JsonError("nested too deeply")
        below: list[Any] = []
        extend = below.extend
        if careful:
            for item in level:
                kind = type(item)
                if kind is str:
                    strings += 1
                    if len(item) > MAX_STRING:
                        raise JsonError("string too long")
                    if "\x00" in item:
                        raise JsonError("NUL character in string")
                elif kind is dict:
                    extend(item)  # the keys, checked like any string
                    extend(item.values())
                elif kind is list:
                    if len(item) > MAX_LIST:
                        raise JsonError("list too long")
                    extend(item)
        else:
            for item in level:
                kind = type(item)
                if kind is str:
                    strings += 1
                elif kind is dict:
                    strings += len(item)  # JSON keys are strings
                    extend(item.values())
                elif kind is list:
                    extend(item)
        level = below
    return strings


def _string_tokens(data: bytes | str) -> int:
    """How many strings (keys and values) the text of a *valid* JSON document holds.

    In valid JSON a double quote is a string delimiter unless escaped, and it is escaped
    exactly when an odd number of backslashes precede it. `count(\\ × k + ")` counts the
    quotes preceded by at least k backslashes, so the escaped ones are c1 − c2 + c3 − …
    """
    quote: Any
    backslash: Any
    if isinstance(data, str):
        quote, backslash = '"', "\\"
    else:
        quote, backslash = b'"', b"\\"
    quotes = data.count(quote)
    escaped, sign, k = 0, 1, 1
    while True:
        n = data.count(backslash * k + quote)
        if not n:
            break
        escaped += sign * n
        sign, k = -sign, k + 1
    return (quotes - escaped) // 2


def loads_strict(data: bytes | str) -> Any:
    """Parse untrusted JSON or raise JsonError."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise JsonError(f"malformed JSON: {str(exc).split(':', 1)[0]}") from None
    # Duplicate keys without a second parse: orjson keeps one entry per distinct key, so
    # the parsed value holds fewer strings than the text exactly when some object repeats
    # a key (a dropped duplicate can only add strings to the text). Only then is the
    # document parsed again, to name the key.
    # A NUL can only come from a \\u0000 escape; a string or list over its cap needs a text
    # at least that long (a list of n items takes 2n − 1 bytes).
    nul = "\\u0000" in data if isinstance(data, str) else b"\\u0000" in data
    careful = len(data) > min(MAX_STRING, 2 * MAX_LIST - 1) or nul
    if _walk(value, careful) != _string_tokens(data):
        try:
            json.loads(data, object_pairs_hook=_no_duplicates)
        except JsonError:
            raise
        except (ValueError, RecursionError):
            raise JsonError("malformed JSON") from None
    return value


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def dumps_str(value: Any) -> str:
    return orjson.dumps(value).decode()
