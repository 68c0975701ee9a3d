"""One parameter parser for every API endpoint, as Mastodon clients send parameters.

Clients mix query strings, urlencoded forms, JSON and multipart; arrays come as
`a[]=1&a[]=2`, nesting as `source[privacy]=public` or `poll[options][]=x`, and
booleans as `true/1/on/yes` and their opposites. All of that folds into one
`Params` mapping of nested dicts, lists and strings (files stay FileField).
"""

from __future__ import annotations

import builtins
import re
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import FileField

from fedi.errors import HttpError
from fedi.jsonutil import JsonError, loads_strict

TRUE = {"1", "true", "t", "on", "yes", "y", "True", "TRUE"}
FALSE = {"0", "false", "f", "off", "no", "n", "False", "FALSE", ""}
MAX_PARAMS = 500
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\]){0,4})$")
_PART = re.compile(r"\[([^\[\]]*)\]")


def _insert(target: dict[str, Any], key: str, value: Any) -> None:
    """Put `value` at the Rails-style path `key` (`a`, `a[]`, `a[b]`, `a[b][]`)."""
    match = _KEY.match(key)
    if not match:
        target[key] = value
        return
    parts = [match.group(1), *_PART.findall(match.group(2))]
    node: Any = target
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        following = None if last else parts[i + 1]
        if part == "":
            if not isinstance(node, list):
                return
            if last:
                node.append(value)
                return
            if following != "" and node and isinstance(node[-1], dict) and following not in node[-1]:
                node = node[-1]  # Rails: a[][x]=1&a[][y]=2 fill one hash until a key repeats
                continue
            node.append({} if following != "" else [])
            node = node[-1]
            continue
        if not isinstance(node, dict):
            return
        if last:
            node[part] = value
            return
        if part not in node or not isinstance(node[part], (dict, list)):
            node[part] = [] if following == "" else {}
        node = node[part]


class Params(dict[str, Any]):
    """Parsed parameters with typed getters that raise 422 on nonsense.

    The getters are named for the types they answer, so inside this class `str` names
    a method: annotations spell the types `builtins.str` and so on."""

    def str(self, name: builtins.str, default: builtins.str | None = None, *,
            max_length: builtins.int = 100_000) -> builtins.str | None:
        value = self.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool):
            value = "true" if value else "false"
        if isinstance(value, (int, float)):
            value = repr(value) if isinstance(value, float) else str(value)
        if not isinstance(value, str):
            raise HttpError(422, f"{name} must be a string")
        if len(value) > max_length:
            raise HttpError(422, f"{name} is too long")
        return value

    def bool(self, name: builtins.str, default: builtins.bool = False) -> builtins.bool:
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value != 0
        if isinstance(value, str) and value in TRUE:
            return True
        if isinstance(value, str) and value in FALSE:
            return False
        raise HttpError(422, f"{name} must be a boolean")

    def int(self, name: builtins.str, default: builtins.int | None = None, *, low: builtins.int | None = None,
            high: builtins.int | None = None) -> builtins.int | None:
        value = self.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            raise HttpError(422, f"{name} must be a number")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise HttpError(422, f"{name} must be a number") from None
        if low is not None and number < low:
            number = low
        if high is not None and number > high:
            number = high
        return number

    def list(self, name: builtins.str) -> builtins.list[Any]:
        value = self.get(name)
        if value is None:
            value = self.get(f"{name}[]")
        if value is None:
            return []
        if isinstance(value, dict):  # a[0]=x&a[1]=y
            return [value[k] for k in sorted(value, key=lambda k: (len(k), k))]
        return value if isinstance(value, list) else [value]

    def sub(self, name: builtins.str) -> "Params":
        value = self.get(name)
        return Params(value) if isinstance(value, dict) else Params()


async def read_params(request: web.Request) -> Params:
    """Query string plus body (form, multipart or JSON), body winning on conflicts."""
    params = Params()
    count = 0
    for key, value in request.query.items():
        count += 1
        _insert(params, key, value)
    if request.method in ("POST", "PUT", "PATCH", "DELETE") and request.body_exists:
        ctype = request.content_type
        if ctype == "application/json":
            try:
                body = loads_strict(await request.read())
            except JsonError as exc:
                raise HttpError(400, str(exc)) from None
            except web.HTTPRequestEntityTooLarge:
                raise HttpError(413, "request body too large") from None
            if not isinstance(body, dict):
                raise HttpError(400, "JSON body must be an object")
            for key, value in body.items():
                _insert(params, key, value)
            count += len(body)
        elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            try:
                form = await request.post()
            except web.HTTPRequestEntityTooLarge:
                raise HttpError(413, "request body too large") from None
            except (ValueError, HttpProcessingError):
                raise HttpError(400, "malformed form body") from None
            for key, field in form.items():
                count += 1
                _insert(params, key, field)
    if count > MAX_PARAMS:
        close_files(params)
        raise HttpError(422, "too many parameters")
    return params


def is_file(value: Any) -> bool:
    return isinstance(value, FileField)


def close_files(value: Any) -> None:
    """Close the uploaded files in parsed parameters.

    aiohttp closes them only for the request it dispatched; a body read through
    `request.clone(client_max_size=...)` (uploads) leaves its temporary files open."""
    if isinstance(value, FileField):
        value.file.close()
    elif isinstance(value, dict):
        for item in value.values():
            close_files(item)
    elif isinstance(value, list):
        for item in value:
            close_files(item)
