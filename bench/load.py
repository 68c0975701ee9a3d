"""A bounded, concurrent HTTP/1.1 load generator that records every latency.

The client side has to be much cheaper than the server it measures, or the
baseline (a bare aiohttp endpoint) is capped by the client and every ratio looks
better than it is. aiohttp's client costs about twice a server request, so this
speaks HTTP/1.1 keep-alive directly on an `asyncio.Protocol`: requests are
pre-built bytes, a response is complete when its Content-Length (or the chunked
terminator) has arrived, and the latency is the time from `write()` to that.

Every run is bounded twice: by a request count and by a deadline; a stuck
request is cut by a per-request timeout. Nothing loops forever.

A minimal WebSocket client (`WsListener`) lives here as well: it stamps each
frame with the time its last bytes arrived, before any JSON is parsed, so 500
listeners in one process add little of their own time to the measurement.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.common import summary_ms


class _TcpClient(asyncio.Protocol):
    """A client connection that sends each small request at once (no Nagle delay)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class HttpConn(_TcpClient):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, bytes]] | None = None
        self.lost: Exception | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("connection closed by server")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            self._try_complete()

    def _try_complete(self) -> None:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end])
        lower = head.lower()
        start = end + 4
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            j = lower.find(b"\r\n", i + 2)
            length = int(lower[i + 17 : j if j >= 0 else len(lower)])
            if len(buf) < start + length:
                return
            body = bytes(buf[start : start + length])
            del buf[: start + length]
        elif b"\r\ntransfer-encoding: chunked" in lower:
            term = buf.find(b"\r\n0\r\n\r\n", start - 2)
            if term < 0:
                return
            raw = bytes(buf[start : term + 7])
            del buf[: term + 7]
            body = _dechunk(raw)
        else:  # no body (e.g. 204/304)
            body = b""
            del buf[:start]
        status = int(head[9:12])
        assert self.waiter is not None
        self.waiter.set_result((status, head, body))

    async def request(self, data: bytes) -> tuple[int, bytes, bytes]:
        if self.lost is not None or self.transport is None:
            raise self.lost or ConnectionError("not connected")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        if self.buf:
            self._try_complete()
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _dechunk(raw: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        nl = raw.find(b"\r\n", pos)
        size = int(raw[pos:nl].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += raw[nl + 2 : nl + 2 + size]
        pos = nl + 2 + size + 2


async def connect(port: int, host: str = "127.0.0.1") -> HttpConn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(HttpConn, host, port)
    return proto


def build_request(method: str, path: str, host: str, headers: dict[str, str] | None = None,
                  body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "User-Agent: fedi-bench"]
    for name, value in (headers or {}).items():
        if name.lower() != "host":
            lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, completed requests only
    statuses: dict[int, int] = field(default_factory=dict)  # request index -> HTTP status
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    stopped_by_deadline: bool = False

    @property
    def completed(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0

    def status_counts(self) -> dict[str, int]:
        return {str(k): v for k, v in sorted(Counter(self.statuses.values()).items())}

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.completed, "elapsed_s": round(self.elapsed, 3), "req_per_s": round(self.rps, 1),
            **summary_ms(self.latencies), "statuses": self.status_counts(),
            "errors": dict(self.errors), "stopped_by_deadline": self.stopped_by_deadline,
        }


async def run_closed(port: int, requests: Sequence[bytes], *, concurrency: int, time_limit: float,
                     request_timeout: float = 10.0, keep_bodies: bool = False,
                     bodies: dict[int, bytes] | None = None) -> LoadResult:
    """Send `requests` in order over `concurrency` keep-alive connections, each waiting for its answer.

    Stops when every request was sent or `time_limit` has passed, whichever is first.
    """
    result = LoadResult()
    total = len(requests)
    next_index = 0
    deadline = time.monotonic() + time_limit
    perf = time.perf_counter

    async def worker() -> None:
        nonlocal next_index
        conn: HttpConn | None = None
        reconnects = 0
        while True:
            if time.monotonic() >= deadline:
                result.stopped_by_deadline = next_index < total
                break
            if next_index >= total:
                break
            i = next_index
            next_index += 1
            if conn is None or conn.lost is not None:
                if reconnects > 20:
                    result.errors["gave up reconnecting"] += 1
                    break
                try:
                    conn = await asyncio.wait_for(connect(port), request_timeout)
                except (OSError, TimeoutError) as exc:
                    result.errors[f"connect: {type(exc).__name__}"] += 1
                    reconnects += 1
                    await asyncio.sleep(0.05)
                    continue
                reconnects += 1
            t0 = perf()
            try:
                async with asyncio.timeout(request_timeout):
                    status, _head, body = await conn.request(requests[i])
            except (OSError, TimeoutError, ConnectionError) as exc:
                result.errors[type(exc).__name__] += 1
                conn.close()
                conn = None
                continue
            result.latencies.append(perf() - t0)
            result.statuses[i] = status
            if keep_bodies and bodies is not None:
                bodies[i] = body
        if conn is not None:
            conn.close()

    t_start = perf()
    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, total or 1)))))
    result.elapsed = perf() - t_start
    return result


async def fetch(port: int, request: bytes, timeout: float = 30.0) -> tuple[int, bytes, bytes]:
    """One request on a fresh connection (for sanity checks)."""
    conn = await asyncio.wait_for(connect(port), timeout)
    try:
        async with asyncio.timeout(timeout):
            return await conn.request(request)
    finally:
        conn.close()


# ---------------------------------------------------------------- WebSocket listener


class WsListener(_TcpClient):
    """A client WebSocket that records (arrival time, text) of every message."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.handshake: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self.upgraded = False
        self.messages: list[tuple[float, bytes]] = []
        self._fragments = bytearray()
        self.closed = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.handshake.done():
            self.handshake.set_exception(exc or ConnectionResetError("closed during handshake"))

    def data_received(self, data: bytes) -> None:
        at = time.monotonic()
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end])
            status = int(head[9:12])
            del self.buf[: end + 4]
            if status != 101:
                if not self.handshake.done():
                    self.handshake.set_result((status, head))
                if self.transport is not None:
                    self.transport.close()
                return
            self.upgraded = True
            if not self.handshake.done():
                self.handshake.set_result((status, head))
        self._frames(at)

    def _frames(self, at: float) -> None:
        buf = self.buf
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            length = b1 & 0x7F
            pos = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = int.from_bytes(buf[2:10], "big")
                pos = 10
            if b1 & 0x80:  # servers never mask, but be tolerant
                pos += 4
            if len(buf) < pos + length:
                return
            payload = bytes(buf[pos : pos + length])
            del buf[: pos + length]
            opcode = b0 & 0x0F
            fin = bool(b0 & 0x80)
            if opcode in (0x1, 0x2, 0x0):
                self._fragments += payload
                if fin:
                    self.messages.append((at, bytes(self._fragments)))
                    self._fragments.clear()
            elif opcode == 0x9:
                self.send(0xA, payload)
            elif opcode == 0x8:
                self.closed = True
                if self.transport is not None:
                    self.transport.close()
                return

    def send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = bytes([0x80 | opcode, 0x80 | n])
        elif n < 65536:
            header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(header + mask + masked)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.send(0x8, b"\x03\xe8")
            self.transport.close()


async def ws_connect(port: int, path: str, host: str, headers: dict[str, str] | None = None,
                     timeout: float = 10.0) -> tuple[WsListener, int, bytes]:
    """Open a WebSocket; returns the listener and the handshake's HTTP status (101 on success)."""
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(loop.create_connection(WsListener, "127.0.0.1", port), timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    extra = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key,
             "Sec-WebSocket-Version": "13", **(headers or {})}
    assert proto.transport is not None
    proto.transport.write(build_request("GET", path, host, extra))
    status, head = await asyncio.wait_for(proto.handshake, timeout)
    return proto, status, head
