"""The POST transport under `HttpClient.post` (fedi/http_post.py) against scripted raw-socket peers.

Each peer is an asyncio server on 127.0.0.1 that answers every complete request
with the next scripted byte string, so framing (Content-Length, chunked, read
until close), interim responses, keep-alive reuse and broken peers are all
exercised byte for byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import pytest

import fedi.http_post
from fedi.config import FederationConfig
from fedi.http_client import FetchError, HttpClient

LOCAL = FederationConfig(allow_private_networks=("127.0.0.0/8",), request_timeout_seconds=2.0)
CLOSE = b"<close>"  # script item: close the connection instead of answering


@dataclass
class Peer:
    script: list[bytes]
    close_after: bool = False  # close every connection after its answer
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def url(self, host: str = "127.0.0.1", path: str = "/inbox") -> str:
        return f"http://{host}:{self.port}{path}"


class _PeerProtocol(asyncio.Protocol):
    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.peer.requests.append(head + b"\r\n\r\n" + rest[:length])
            self.buf = rest[length:]
            answer = self.peer.script.pop(0) if self.peer.script else b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
            if answer == CLOSE:
                self.transport.close()
                return
            self.transport.write(answer)
            if self.peer.close_after:
                self.transport.close()


@pytest.fixture
async def peers() -> AsyncIterator[Callable[..., Awaitable[Peer]]]:
    started: list[Peer] = []

    async def start(*script: bytes, close_after: bool = False) -> Peer:
        peer = Peer(list(script), close_after)
        loop = asyncio.get_running_loop()
        peer.server = await loop.create_server(lambda: _PeerProtocol(peer), "127.0.0.1", 0)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        assert peer.server is not None
        peer.server.close()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    c = HttpClient(LOCAL, "fedi-test", host_map={"alpha.test": "127.0.0.1", "beta.test": "127.0.0.1"})
    await c.start()
    yield c
    await c.close()


def ok(body: bytes = b"", extra: str = "") -> bytes:
    return f"HTTP/1.1 202 Accepted\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_request_bytes_and_keep_alive(peers, client: HttpClient) -> None:
    peer = await peers(ok(b"first"), ok(b"second", "Retry-After: 7\r\n"))
    first = await client.post(peer.url("alpha.test", "/users/a/inbox?x=1"), b'{"a": 1}', None)
    second = await client.post(peer.url("alpha.test"), b"{}", None, content_type="application/json")
    assert (first.status, first.excerpt, second.excerpt) == (202, "first", "second")
    assert second.headers["retry-after"] == "7" and second.headers["content-length"] == "6"
    assert peer.connections == 1, "the second POST did not reuse the connection"
    head, _, body = peer.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /users/a/inbox?x=1 HTTP/1.1"
    assert f"Host: alpha.test:{peer.port}" in lines and "User-Agent: fedi-test" in lines
    assert "Content-Type: application/activity+json" in lines and "Content-Length: 8" in lines
    assert body == b'{"a": 1}'
    assert b"Content-Type: application/json\r\n" in peer.requests[1]


async def test_hosts_do_not_share_connections(peers, client: HttpClient) -> None:
    peer = await peers()
    for host in ("alpha.test", "beta.test", "alpha.test", "127.0.0.1"):
        assert (await client.post(peer.url(host), b"{}", None)).status == 202
    assert peer.connections == 3


async def test_chunked_with_extensions_and_trailers(peers, client: HttpClient) -> None:
    chunked = (b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n")
    peer = await peers(chunked, ok())
    result = await client.post(peer.url(), b"{}", None)
    assert (result.status, result.excerpt) == (400, "hello world")
    assert (await client.post(peer.url(), b"{}", None)).status == 202
    assert peer.connections == 1


@pytest.mark.parametrize("answer", [
    ok(b"bye", "Connection: close\r\n"),
    b"HTTP/1.0 202 Accepted\r\nContent-Length: 3\r\n\r\nbye",
])
async def test_connection_close_is_honoured(peers, client: HttpClient, answer: bytes) -> None:
    peer = await peers(answer, ok())
    assert (await client.post(peer.url(), b"{}", None)).excerpt == "bye"
    assert (await client.post(peer.url(), b"{}", None)).status == 202
    assert peer.connections == 2


async def test_body_until_close_and_interim_response(peers, client: HttpClient) -> None:
    peer = await peers(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n\r\nno length", close_after=True)
    result = await client.post(peer.url(), b"{}", None)
    assert (result.status, result.excerpt) == (201, "no length")


async def test_no_body_statuses(peers, client: HttpClient) -> None:
    peer = await peers(b"HTTP/1.1 204 No Content\r\n\r\n", ok())
    assert (await client.post(peer.url(), b"{}", None)).status == 204
    assert (await client.post(peer.url(), b"{}", None)).status == 202
    assert peer.connections == 1


async def test_big_body_is_cut_and_the_connection_dropped(peers, client: HttpClient) -> None:
    big = b"x" * 3_000_000  # more than one read: the rest is never read
    peer = await peers(ok(big), ok())
    result = await client.post(peer.url(), b"{}", None)
    assert result.status == 202 and result.excerpt == "x" * 500
    assert (await client.post(peer.url(), b"{}", None)).status == 202
    assert peer.connections == 2


async def test_excerpt_is_decoded_and_limited(peers, client: HttpClient) -> None:
    peer = await peers(ok("é".encode() * 1000))
    assert (await client.post(peer.url(), b"{}", None)).excerpt == "é" * 500


async def test_idle_connection_closed_by_the_peer_is_replaced(peers, client: HttpClient) -> None:
    peer = await peers(ok(), CLOSE, ok(b"again"))
    assert (await client.post(peer.url(), b"{}", None)).status == 202
    # The peer closes the kept-alive connection when the next request arrives, without answering:
    # the request goes once more on a new connection.
    assert (await client.post(peer.url(), b"{}", None)).excerpt == "again"
    assert peer.connections == 2 and len(peer.requests) == 3


@pytest.mark.parametrize("answer, reason", [
    (b"HTTP/1.1 2O2 Accepted\r\n\r\n", "bad status line"),
    (b"HTTP/2 202\r\n\r\n", "bad status line"),
    (b"HTTP/1.1 202 Accepted\r\nContent-Length: 1x\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 202 Accepted\r\nno colon\r\n\r\n", "bad header line"),
    (b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "unexpected protocol switch"),
    (b"HTTP/1.1 202 Accepted\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", "response head too large"),
    # Digits only in ASCII: int() would raise on these and kill the protocol callback.
    ("HTTP/1.1 2\u00b22 Accepted\r\nContent-Length: 0\r\n\r\n".encode("latin-1"), "bad status line"),
    ("HTTP/1.1 202 Accepted\r\nContent-Length: \u00b9\r\n\r\n".encode("latin-1"), "bad Content-Length"),
    (b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n", "bad status line"),  # invalid code, not "other 4xx"
    (b"HTTP/1.1 202 Accepted\r\nContent-Length: 5, 6\r\n\r\nabcde", "bad Content-Length"),
    # RFC 9110 §5.5: CR, LF or NUL in a field value; bare LF is a line end to some parsers.
    (b"HTTP/1.1 202 Accepted\r\nX: a\nContent-Length: 0\r\n\r\n", "control character in head"),
    (b"HTTP/1.1 202 Accepted\r\nX: a\rContent-Length: 0\r\n\r\n", "control character in head"),
    (b"HTTP/1.1 202 Accepted\r\nX: a\x00\r\nContent-Length: 0\r\n\r\n", "control character in head"),
    (b"HTTP/1.1 202 Accepted\r\nX: a\r\n folded\r\nContent-Length: 0\r\n\r\n", "bad header line"),  # obs-fold
    (b"HTTP/1.1 202 Accepted\r\nX(y): a\r\nContent-Length: 0\r\n\r\n", "bad header line"),
    (b"HTTP/1.1 202 Accepted\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"Content-Length: 0\r\n\r\n",
     "too many headers"),
    # Endless interim responses or trailers share the head's budget instead of looping until the deadline.
    (b"HTTP/1.1 100 Continue\r\n\r\n" * 3000 + ok(), "response head too large"),
    (b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + b"A: b\r\n" * 12_000 + b"\r\n",
     "trailers too large"),
    (b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nHTTP/1.1 200 OK\r\n\r\n", "bad trailer line"),
    # chunk-size is 1*HEXDIG (RFC 9112 §7.1), not whatever int(_, 16) takes.
    *[(b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nhello\r\n0\r\n\r\n", "bad chunk size")
      for size in (b"0x5", b"0_5", b"+5", b" 5", b"5;a\nb")],
])
async def test_bad_responses_are_errors(peers, client: HttpClient, answer: bytes, reason: str) -> None:
    peer = await peers(answer)
    with pytest.raises(FetchError) as info:
        await client.post(peer.url(), b"{}", None)
    assert info.value.status is None and info.value.reason == f"request failed: {reason}"


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 202 Acc",
    b"HTTP/1.1 202 Accepted\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",  # no final CRLF
])
async def test_peer_gone_mid_answer(peers, client: HttpClient, answer: bytes) -> None:
    peer = await peers(answer, close_after=True)
    with pytest.raises(FetchError, match="server disconnected"):
        await client.post(peer.url(), b"{}", None)
    assert len(peer.requests) == 1  # a half-answered request is not sent again


async def test_silent_peer_times_out(peers) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)  # accepts, never answers
    port = server.sockets[0].getsockname()[1]
    c = HttpClient(FederationConfig(allow_private_networks=("127.0.0.0/8",), request_timeout_seconds=0.3), "t")
    await c.start()
    try:
        with pytest.raises(FetchError, match="timed out"):
            await c.post(f"http://127.0.0.1:{port}/inbox", b"{}", None)
    finally:
        await c.close()
        server.close()


async def test_header_injection_is_refused(peers, client: HttpClient) -> None:
    peer = await peers()
    with pytest.raises(FetchError, match="invalid header value"):
        await client.post(peer.url(), b"{}", None, content_type="text/plain\r\nX-Injected: 1")
    assert peer.connections == 0


async def test_idle_connections_are_bounded(peers, client: HttpClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fedi.http_post, "MAX_IDLE", 2)
    peer = await peers()
    for host in ("alpha.test", "beta.test", "127.0.0.1"):
        await client.post(peer.url(host), b"{}", None)
    poster = client._poster  # noqa: SLF001 - the pool is what is under test
    assert poster is not None and len(poster._idle) == 2  # noqa: SLF001
    await client.post(peer.url("alpha.test"), b"{}", None)  # the oldest (alpha) was closed: a new one
    assert peer.connections == 4


def _self_signed(tmp_path) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """A certificate for alpha.test and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alpha.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("alpha.test"),
                                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


async def test_tls_is_verified(tmp_path, client: HttpClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    peer = Peer([ok(b"over tls"), ok(b"again")])
    loop = asyncio.get_running_loop()
    peer.server = await loop.create_server(lambda: _PeerProtocol(peer), "127.0.0.1", 0, ssl=server_ctx)
    try:
        url = f"https://alpha.test:{peer.port}/inbox"
        with pytest.raises(FetchError, match="connection failed") as info:  # not signed by a trusted CA
            await client.post(url, b"{}", None)
        assert "CERTIFICATE_VERIFY_FAILED" in info.value.reason or "certificate" in info.value.reason.lower()
        trusting = ssl.create_default_context(cafile=cert)
        other = HttpClient(LOCAL, "t", host_map={"alpha.test": "127.0.0.1", "beta.test": "127.0.0.1"})
        await other.start()
        monkeypatch.setattr(fedi.http_post.ssl, "create_default_context", lambda: trusting)
        try:
            assert (await other.post(url, b"{}", None)).excerpt == "over tls"
            assert (await other.post(url, b"{}", None)).excerpt == "again"  # kept alive over TLS too
            with pytest.raises(FetchError, match="connection failed"):  # the name is checked too
                await other.post(f"https://beta.test:{peer.port}/inbox", b"{}", None)
        finally:
            await other.close()
        assert len(peer.requests) == 2
    finally:
        peer.server.close()


class _TwoAddresses:
    """A resolver answering with several addresses (the guard's job is tested in test_http_client)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, object]]:
        return [{"host": a, "port": port} for a in self.addresses]


async def test_next_address_after_a_refusal(peers) -> None:
    peer = await peers(ok(b"second address"))
    poster = fedi.http_post.Poster(_TwoAddresses("127.0.0.2", "127.0.0.1"))  # nothing listens on .2
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    try:
        response = await asyncio.wait_for(poster.post("http", "two.test", peer.port, False, request, 100), 2)
        assert response.body == b"second address"
    finally:
        await poster.close()


async def test_next_address_when_the_first_hangs(peers, monkeypatch: pytest.MonkeyPatch) -> None:
    peer = await peers(ok(b"fast one"))
    poster = fedi.http_post.Poster(_TwoAddresses("198.51.100.1", "127.0.0.1"))
    dial = poster._dial  # noqa: SLF001
    hung: list[asyncio.Future[None]] = []

    async def slow_first(key, address, tls):  # type: ignore[no-untyped-def]
        if address == "198.51.100.1":  # a black hole: never answers
            hung.append(asyncio.get_running_loop().create_future())
            await hung[-1]
        return await dial(key, address, tls)

    monkeypatch.setattr(poster, "_dial", slow_first)
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        response = await asyncio.wait_for(poster.post("http", "two.test", peer.port, False, request, 100), 2)
        assert response.body == b"fast one"
        assert 0.2 <= loop.time() - started < 1.0  # started after the happy-eyeballs delay, not the deadline
        assert hung and hung[0].cancelled()  # the hung attempt was given up
    finally:
        await poster.close()


def test_address_families_alternate() -> None:
    interleave = fedi.http_post._interleave  # noqa: SLF001
    assert interleave(["::1", "::2", "1.1.1.1", "2.2.2.2", "3.3.3.3"]) == ["::1", "1.1.1.1", "::2", "2.2.2.2", "3.3.3.3"]
    assert interleave(["1.1.1.1", "::1"]) == ["1.1.1.1", "::1"]


async def test_idle_connections_are_closed_after_a_while(peers, client: HttpClient,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fedi.http_post, "IDLE_SECONDS", 0.2)
    peer = await peers()
    await client.post(peer.url(), b"{}", None)
    poster = client._poster  # noqa: SLF001
    assert poster is not None and len(poster._idle) == 1  # noqa: SLF001
    await asyncio.sleep(0.5)
    assert len(poster._idle) == 0  # noqa: SLF001
    await client.post(peer.url(), b"{}", None)
    assert peer.connections == 2


@pytest.mark.parametrize("host", ["evil.test", "localhost", "127.0.0.1", "[::1]", "2130706433"])
async def test_private_destinations_refused_with_zero_connections(peers, host: str) -> None:
    """D1–D4 for POSTs: names resolving to loopback and loopback literals, with no allow-list."""
    peer = await peers()
    c = HttpClient(FederationConfig(), "t", host_map={"evil.test": "127.0.0.1"})
    await c.start()
    try:
        with pytest.raises(FetchError) as info:
            await c.post(f"http://{host}:{peer.port}/inbox", b"{}", None)
        assert info.value.status is None and info.value.reason.startswith("blocked address")
    finally:
        await c.close()
    assert peer.connections == 0


@pytest.mark.parametrize("first", [
    ok(b"one"),
    b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
])
async def test_bytes_after_a_response_are_never_the_next_answer(peers, client: HttpClient, first: bytes) -> None:
    """A second response sent with the first (a smuggled one) ends the connection: the next POST gets its own answer."""
    peer = await peers(first + ok(b"smuggled"), ok(b"real"))
    await client.post(peer.url(), b"{}", None)
    assert (await client.post(peer.url(), b"{}", None)).excerpt == "real"
    assert peer.connections == 2


async def test_transfer_encoding_with_content_length_is_not_reused(peers, client: HttpClient) -> None:
    """Both framings (RFC 9112 §6.3): chunked wins, and the connection is not trusted for another request."""
    both = b"HTTP/1.1 202 Accepted\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    peer = await peers(both, ok())
    assert (await client.post(peer.url(), b"{}", None)).excerpt == "hello"
    assert (await client.post(peer.url(), b"{}", None)).status == 202
    assert peer.connections == 2


async def test_only_exact_chunked_is_chunked(peers, client: HttpClient) -> None:
    """`chunked` followed by a non-breaking space is an unknown coding: the body runs to the close (RFC 9112 §6.3)."""
    raw = b"3\r\none\r\n0\r\n\r\n"
    peer = await peers(b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\xa0\r\n\r\n" + raw, close_after=True)
    assert (await client.post(peer.url(), b"{}", None)).excerpt == raw.decode()


class _Recording(fedi.http_post._Connection):  # noqa: SLF001
    """A connection that notes when its socket is really gone."""

    lost: list[fedi.http_post._Connection] = []  # noqa: SLF001

    def connection_lost(self, exc: Exception | None) -> None:
        _Recording.lost.append(self)
        super().connection_lost(exc)


class _AnswersEarly(_PeerProtocol):
    """The first connection answers 413 as soon as a request head arrives and never reads the rest."""

    answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.early = self.peer.connections == 1

    def data_received(self, data: bytes) -> None:
        if not self.early:
            super().data_received(data)
        elif not self.answered:
            self.answered = True
            self.transport.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
            self.transport.pause_reading()


async def test_answer_before_the_request_went_out_is_not_reused(client: HttpClient,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """An early 413 while our body is still queued: the peer may yet read it as a request, so the connection goes."""
    monkeypatch.setattr(fedi.http_post, "_Connection", _Recording)
    monkeypatch.setattr(_Recording, "lost", [])
    peer = Peer([])
    peer.server = await asyncio.get_running_loop().create_server(lambda: _AnswersEarly(peer), "127.0.0.1", 0)
    try:
        big = b"x" * 16_000_000  # more than the kernel buffers: part of it is still ours to send
        assert (await client.post(peer.url(), big, None)).status == 413
        await asyncio.sleep(0.05)
        assert len(_Recording.lost) == 1, "the socket with unsent bytes was kept (reused, or closed only once drained)"
        assert (await client.post(peer.url(), b"{}", None)).status == 202
        assert peer.connections == 2
    finally:
        peer.server.close()


async def test_a_peer_that_stops_reading_does_not_keep_the_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """At the deadline the socket goes at once, not when the peer has read our unsent bytes (never)."""
    monkeypatch.setattr(fedi.http_post, "_Connection", _Recording)
    monkeypatch.setattr(_Recording, "lost", [])
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Stalled(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    c = HttpClient(FederationConfig(allow_private_networks=("127.0.0.0/8",), request_timeout_seconds=0.3), "t")
    await c.start()
    try:
        with pytest.raises(FetchError, match="timed out"):
            await c.post(f"http://127.0.0.1:{port}/inbox", b"x" * 16_000_000, None)
        await asyncio.sleep(0.05)
        assert len(_Recording.lost) == 1
    finally:
        await c.close()
        server.close()


class _Stalled(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.pause_reading()  # type: ignore[attr-defined]


async def test_trickling_peer_is_ended_by_the_deadline() -> None:
    """A head, then one body byte every 20 ms of a megabyte: the deadline ends it (D7)."""
    loop = asyncio.get_running_loop()

    class Trickle(asyncio.Protocol):
        drip: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)

        def data_received(self, data: bytes) -> None:  # the request (or its first part): start answering
            if self.drip is None:
                self.transport.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 1000000\r\n\r\n")
                self.more()

        def more(self) -> None:
            if not self.transport.is_closing():
                self.transport.write(b"x")
                self.drip = loop.call_later(0.02, self.more)

    server = await loop.create_server(Trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    c = HttpClient(FederationConfig(allow_private_networks=("127.0.0.0/8",), request_timeout_seconds=0.3), "t")
    await c.start()
    started = loop.time()
    try:
        with pytest.raises(FetchError, match="timed out"):
            await c.post(f"http://127.0.0.1:{port}/inbox", b"{}", None)
        assert loop.time() - started < 1.0
    finally:
        await c.close()
        server.close()


async def test_connection_closed_before_the_request_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that hangs up right after accepting: an error now, not a wait for the whole deadline."""
    loop = asyncio.get_running_loop()

    class Hangup(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport.close()

    server = await loop.create_server(Hangup, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    poster = fedi.http_post.Poster(_TwoAddresses("127.0.0.1"))
    dial = poster._dial  # noqa: SLF001

    async def dial_then_wait(key, address, tls):  # type: ignore[no-untyped-def]
        conn = await dial(key, address, tls)
        await asyncio.sleep(0.1)  # the hang-up is seen before the request is written (as in a happy-eyeballs race)
        return conn

    monkeypatch.setattr(poster, "_dial", dial_then_wait)
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    try:
        with pytest.raises(fedi.http_post.Disconnected):
            await asyncio.wait_for(poster.post("http", "one.test", port, False, request, 100), 1)
    finally:
        await poster.close()
        server.close()
