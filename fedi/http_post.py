"""The transport under `HttpClient.post`: one HTTP/1.1 POST on a plain asyncio protocol.

Delivery is one signed POST per inbox, usually to a host we have no open
connection to. aiohttp's client spends ~0.5 ms of CPU per such request (request
and response objects, connector, streams); this transport writes the request
as one buffer and parses only what delivery reads — the status, the headers
and an excerpt of the body — for ~0.15 ms, which is what lets delivery get near
the RSA signing rate (PERFORMANCE.md).

It is not a general client and adds no way around the guards (THREATS.md
D1–D8): `HttpClient.post` validates the URL first (scheme, credentials, IP
literals); host names go through the same `GuardedResolver` as aiohttp's,
whose allowed answers are the only addresses connected to (no second lookup,
so no rebinding window); the caller's total deadline covers connect, send and
response; the response head is capped at `MAX_HEAD` bytes and only
`read_limit` bytes of the body are kept; nothing is decompressed (we send no
Accept-Encoding) and no redirect is followed. TLS uses the default verifying
context with the URL's host as server name.

Responses come from strangers, so the parser is strict where lenient parsers
disagree (RFC 9112): ASCII digits only in the status and Content-Length, no
control characters in the head (bare CR/LF, NUL), token field names, at most
`MAX_HEADERS` fields, chunk sizes of hex digits only. Interim (1xx) responses
and trailers share the head's `MAX_HEAD` budget, so a peer cannot keep the
parser looping until the deadline.

Connections are kept alive per (scheme, host, port) when the response was
read to its end (Content-Length or chunked, HTTP/1.1, no `Connection: close`),
framed one way only (not both Transfer-Encoding and Content-Length), nothing
followed it, and the whole request had gone out (after an early answer the
peer may still read our body), for `IDLE_SECONDS` (aiohttp's keep-alive time),
at most `MAX_IDLE` of them (the least recently used go first; aiohttp kept
every one, which after a fan-out to thousands of hosts can run into the usual
limit of 1,024 open files). A connection given up is aborted, not closed: a
peer that stops reading cannot keep the socket open. A request
on a reused connection that the peer closed before answering is sent once
more on a new one (a receiver dedupes deliveries by activity id).
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass

from fedi.netguard import GuardedResolver

MAX_HEAD = 65_536  # status line + headers, with any interim responses and trailers
MAX_HEADERS = 100  # http.client's limit; more only costs us CPU
IDLE_SECONDS = 15.0
MAX_IDLE = 256
DNS_SECONDS = 10.0  # aiohttp's ttl_dns_cache
HAPPY_EYEBALLS_SECONDS = 0.25  # aiohttp's happy_eyeballs_delay
_NO_BODY = frozenset({204, 304})
_STATUS_LINE = re.compile(r"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: .*)?")
_FIELD_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):(.*)")  # token ":" value (no CTL: checked first)
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters other than HTAB, in a line without its CRLF
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\x00-\x08\x0a-\x1f\x7f]*)?")  # size [; extensions]


class BadResponse(Exception):
    """The peer's bytes are not an HTTP/1.1 response we accept."""


class ConnectFailed(Exception):
    """No connection could be made to any allowed address; `.os_error` says why."""

    def __init__(self, os_error: OSError) -> None:
        super().__init__(os_error.strerror or str(os_error) or type(os_error).__name__)
        self.os_error = os_error


class Disconnected(ConnectionError):
    """The connection closed before a complete response; `.fresh` if no byte of it had arrived."""

    def __init__(self, fresh: bool) -> None:
        super().__init__("server disconnected")
        self.fresh = fresh


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes  # at most read_limit bytes


def _parse_head(head: bytes) -> tuple[int, bool, dict[str, str]]:
    """Status, whether the peer speaks HTTP/1.1 (else 1.0), and the headers of a response head.

    obs-fold is refused (a line starting with whitespace is no field line): no
    peer we deliver to folds, and refusing is the safe reading of RFC 9112 §5.2.
    """
    lines = head.decode("latin-1").split("\r\n")  # every byte decodes; names are checked to be ASCII tokens
    if _CTL.search("".join(lines)):  # RFC 9110 §5.5: CR, LF, NUL in a value are invalid and dangerous
        raise BadResponse("control character in head")
    status = _STATUS_LINE.fullmatch(lines[0])
    if status is None:
        raise BadResponse("bad status line")
    if len(lines) > MAX_HEADERS + 1:
        raise BadResponse("too many headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        field = _FIELD_LINE.fullmatch(line)
        if field is None:
            raise BadResponse("bad header line")
        key = field[1].lower()
        value = field[2].strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(status[2]), status[1] == "1", headers


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; one request at a time."""

    def __init__(self, key: tuple[str, str, int]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[tuple[Response, bool]] | None = None
        self._reset(0)

    def _reset(self, limit: int) -> None:
        self._buf = bytearray()
        self._limit = limit
        self._state = "head"
        self._head_left = MAX_HEAD  # head bytes still allowed: interim responses and trailers count too
        self._got_bytes = False
        self._status = 0
        self._keep = False
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._remaining = 0  # body bytes left (length) or of the current chunk

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is not an asyncio.Transport subclass)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # nothing was asked: a peer that talks out of turn is not reused
            return
        self._got_bytes = True
        self._buf += data
        try:
            self._advance()
        except BadResponse as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        if self._state == "until_close":
            self._finish(keep=False)
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._state == "until_close":
            self._finish(keep=False)
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(Disconnected(fresh=not self._got_bytes))

    # -- parsing

    def _advance(self) -> None:
        while True:
            if self._state == "head":
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > self._head_left:
                        raise BadResponse("response head too large")
                    return
                if end + 4 > self._head_left:
                    raise BadResponse("response head too large")
                self._head_left -= end + 4
                status, http11, headers = _parse_head(bytes(self._buf[:end]))
                del self._buf[: end + 4]
                if 100 <= status < 200:
                    if status == 101:
                        raise BadResponse("unexpected protocol switch")
                    continue  # an interim response (100 Continue): the real one follows
                self._status, self._headers = status, headers
                self._keep = http11 and "close" not in headers.get("connection", "").lower()
                coding = headers.get("transfer-encoding")
                if status in _NO_BODY:
                    self._finish(keep=self._keep and not self._buf)
                    return
                if coding is not None:
                    # RFC 9112 §6.3: chunked last means chunked, else the body runs to the close; with a
                    # Content-Length too, Transfer-Encoding wins but the connection is not trusted again.
                    chunked = coding.lower().rsplit(",", 1)[-1].strip(" \t") == "chunked"
                    self._state = "chunk_size" if chunked else "until_close"
                    self._keep = self._keep and chunked and "content-length" not in headers
                elif "content-length" in headers:
                    length = headers["content-length"]  # repeated ones were joined: "5, 5" is refused too
                    if not (length.isascii() and length.isdigit()) or len(length) > 15:
                        raise BadResponse("bad Content-Length")
                    self._remaining = int(length)
                    self._state = "length"
                else:
                    self._state, self._keep = "until_close", False
                continue
            if self._state == "length":
                take = min(self._remaining, len(self._buf))
                self._keep_body(self._buf[:take])
                del self._buf[:take]
                self._remaining -= take
                if self._remaining == 0:
                    self._finish(keep=self._keep and not self._buf)
                elif len(self._body) >= self._limit:
                    self._finish(keep=False)  # enough for the excerpt; the rest is not read
                return
            if self._state == "chunk_size":
                end = self._buf.find(b"\r\n")
                if end < 0:
                    if len(self._buf) > 1024:
                        raise BadResponse("bad chunk size")
                    return
                line = _CHUNK_LINE.fullmatch(self._buf, 0, end)
                if line is None:
                    raise BadResponse("bad chunk size")
                self._remaining = int(line[1], 16)
                del self._buf[: end + 2]
                self._state = "chunk" if self._remaining else "trailers"
                continue
            if self._state == "chunk":
                take = min(self._remaining, len(self._buf))
                self._keep_body(self._buf[:take])
                del self._buf[:take]
                self._remaining -= take
                if self._remaining:
                    if len(self._body) >= self._limit:
                        self._finish(keep=False)
                    return
                self._state = "chunk_end"
                continue
            if self._state == "chunk_end":
                if len(self._buf) < 2:
                    return
                if self._buf[:2] != b"\r\n":
                    raise BadResponse("bad chunk end")
                del self._buf[:2]
                if len(self._body) >= self._limit:
                    self._finish(keep=False)
                    return
                self._state = "chunk_size"
                continue
            if self._state == "trailers":
                end = self._buf.find(b"\r\n")
                if end < 0:
                    if len(self._buf) > self._head_left:
                        raise BadResponse("trailers too large")
                    return
                if end == 0:  # the empty line after the (ignored) trailers
                    del self._buf[:2]
                    self._finish(keep=self._keep and not self._buf)
                    return
                self._head_left -= end + 2
                if self._head_left < 0:
                    raise BadResponse("trailers too large")
                trailer = bytes(self._buf[:end]).decode("latin-1")
                if _CTL.search(trailer) or _FIELD_LINE.fullmatch(trailer) is None:
                    raise BadResponse("bad trailer line")
                del self._buf[: end + 2]
                continue
            if self._state == "until_close":
                self._keep_body(self._buf)
                self._buf.clear()
                if len(self._body) >= self._limit:
                    self._finish(keep=False)
                return
            return  # "done": a response is complete; anything else is refused above

    def _keep_body(self, data: bytes | bytearray) -> None:
        room = self._limit - len(self._body)
        if room > 0:
            self._body += data[:room]

    def _finish(self, keep: bool) -> None:
        self._state = "done"
        if self._waiter is not None and not self._waiter.done():
            response = Response(self._status, self._headers, bytes(self._body))
            self._waiter.set_result((response, keep))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()

    # -- use

    async def exchange(self, request: bytes, read_limit: int) -> tuple[Response, bool]:
        """Send one request; the response and whether the connection may be reused."""
        assert self.transport is not None
        if not self.usable:  # the peer hung up before we wrote: a write now would wait for the deadline
            raise Disconnected(fresh=True)
        loop = asyncio.get_running_loop()
        self._reset(read_limit)
        self._waiter = loop.create_future()
        self.transport.write(request)
        try:
            response, keep = await self._waiter
        finally:
            self._waiter = None
        # Answered before all of the request went out: the peer may still be reading (or ignoring) the rest.
        return response, keep and not self.transport.get_write_buffer_size()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            # abort(), not close(): close() keeps the socket until unsent request bytes are written,
            # which is never for a peer that stopped reading.
            self.transport.abort()

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()


def _interleave(addresses: list[str]) -> list[str]:
    """Alternate address families, the first answer's first (RFC 8305 §4)."""
    first = [a for a in addresses if (":" in a) == (":" in addresses[0])]
    other = [a for a in addresses if (":" in a) != (":" in addresses[0])]
    out: list[str] = []
    for i in range(max(len(first), len(other))):
        out += first[i : i + 1] + other[i : i + 1]
    return out


class Poster:
    """Keep-alive HTTP/1.1 POSTs through the guarded resolver; one per HttpClient."""

    def __init__(self, resolver: GuardedResolver) -> None:
        self.resolver = resolver
        self._idle: OrderedDict[_Connection, None] = OrderedDict()  # oldest first
        self._by_key: dict[tuple[str, str, int], list[_Connection]] = {}
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def post(self, scheme: str, host: str, port: int, literal: bool, request: bytes,
                   read_limit: int) -> Response:
        """Send `request` (the whole HTTP/1.1 message) to host:port; the caller holds the deadline.

        `literal`: the host is an IP address (already checked by the caller's guard).
        """
        key = (scheme, host, port)
        conn = self._checkout(key)
        if conn is not None:
            try:
                return await self._exchange(conn, request, read_limit)
            except Disconnected as exc:
                if not exc.fresh:
                    raise  # the peer started answering: not safe to assume it never saw the request
            # the idle connection had been closed by the peer: once more on a new one
        conn = await self._connect(key, literal)
        return await self._exchange(conn, request, read_limit)

    async def _exchange(self, conn: _Connection, request: bytes, read_limit: int) -> Response:
        try:
            response, keep = await conn.exchange(request, read_limit)
        except BaseException:
            conn.close()  # cancelled (deadline) or failed: never reuse a connection in an unknown state
            raise
        if keep and conn.usable:
            self._checkin(conn)
        else:
            conn.close()
        return response

    def _checkout(self, key: tuple[str, str, int]) -> _Connection | None:
        conns = self._by_key.get(key)
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            self._idle.pop(conn, None)
            if conn.usable and now - conn.idle_since < IDLE_SECONDS:
                if not conns:
                    del self._by_key[key]
                return conn
            conn.close()
        self._by_key.pop(key, None)
        return None

    def _checkin(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self._by_key.setdefault(conn.key, []).append(conn)
        self._idle[conn] = None
        while len(self._idle) > MAX_IDLE:
            self._drop(next(iter(self._idle)))
        self._sweep_stale(conn.idle_since)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(IDLE_SECONDS, self._sweep)

    def _sweep_stale(self, now: float) -> None:
        """Close connections idle for IDLE_SECONDS (cheap: oldest first, stops at the first fresh one)."""
        limit = now - IDLE_SECONDS
        while self._idle:
            oldest = next(iter(self._idle))
            if oldest.idle_since > limit and oldest.usable:
                break
            self._drop(oldest)

    def _sweep(self) -> None:
        self._sweeper = None
        self._sweep_stale(time.monotonic())
        if self._idle:
            self._sweeper = asyncio.get_running_loop().call_later(IDLE_SECONDS / 2, self._sweep)

    def _drop(self, conn: _Connection) -> None:
        self._idle.pop(conn, None)
        conns = self._by_key.get(conn.key)
        if conns is not None:
            if conn in conns:
                conns.remove(conn)
            if not conns:
                del self._by_key[conn.key]
        conn.close()

    async def _addresses(self, host: str, port: int) -> list[str]:
        """Allowed addresses of a host name (the guard filters them), cached DNS_SECONDS."""
        now = time.monotonic()
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        results = await self.resolver.resolve(host, port, socket.AF_UNSPEC)
        addresses = list(dict.fromkeys(r["host"] for r in results))
        if len(self._dns) > 4096:
            self._dns.clear()
        self._dns[(host, port)] = (now + DNS_SECONDS, addresses)
        return addresses

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _connect(self, key: tuple[str, str, int], literal: bool) -> _Connection:
        """A new connection to the first allowed address that answers (happy eyeballs, as aiohttp)."""
        scheme, host, port = key
        addresses = [host] if literal else _interleave(await self._addresses(host, port))
        tls = self._ssl_context() if scheme == "https" else None
        if len(addresses) == 1:
            try:
                return await self._dial(key, addresses[0], tls)
            except OSError as exc:  # refused, unreachable, TLS handshake or certificate failure
                raise ConnectFailed(exc) from None
        return await self._race(key, addresses, tls)

    async def _dial(self, key: tuple[str, str, int], address: str, tls: ssl.SSLContext | None) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: _Connection(key), address, key[2], ssl=tls, server_hostname=key[1] if tls else None,
        )
        return conn

    async def _race(self, key: tuple[str, str, int], addresses: list[str], tls: ssl.SSLContext | None) -> _Connection:
        """RFC 8305: the next address starts when the previous failed or HAPPY_EYEBALLS_SECONDS passed."""
        pending: set[asyncio.Task[_Connection]] = set()
        errors: list[OSError] = []
        winner: _Connection | None = None
        try:
            for i, address in enumerate(addresses):
                pending.add(asyncio.create_task(self._dial(key, address, tls)))
                last = i == len(addresses) - 1
                while pending and winner is None:
                    done, pending = await asyncio.wait(
                        pending, timeout=None if last else HAPPY_EYEBALLS_SECONDS, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in done:
                        exc = task.exception()
                        if exc is None:
                            if winner is None:
                                winner = task.result()
                            else:
                                task.result().close()
                        elif isinstance(exc, OSError):
                            errors.append(exc)
                        else:
                            raise exc
                    if not last:
                        break  # the delay passed or an attempt failed: start the next address too
                if winner is not None:
                    return winner
        finally:
            for task in pending:
                task.cancel()
            if pending:
                for task in (await asyncio.wait(pending))[0]:
                    if not task.cancelled() and task.exception() is None:
                        task.result().close()  # connected just as we gave up on it
        raise ConnectFailed(errors[0] if errors else OSError("no address"))

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._idle):
            self._drop(conn)
        self._by_key.clear()
